"""Blob payloads on disk: a directory that mirrors the complete blobs of a :class:`~fl_async.blobs.store.BlobStore`,
so that a link restarting on its database still holds the arrays its queued messages name.

One file per blob, named by the hex BLAKE3 digest (content-addressed: an array sent to N nodes is one file). The
file is written when the blob completes (to a temporary name, then renamed: a crash never leaves a partial file
under a digest's name) and deleted when the store frees the blob (no message references it any more and no
download lease holds it), so the directory holds what the store holds. At start, :meth:`BlobDirectory.attach`
loads every file back into the store (verifying its digest; a file that does not match is deleted), before the
link state re-references them from the recovered messages; files nothing references are freed by the store's
sweep after its linger time, like any unreferenced upload.

Files are written and deleted in one worker thread, in order, so a large array never holds the link's event loop
(the blob stays pinned in the store while its file is written). The blob server answers an upload only once its
file is written (:meth:`BlobDirectory.written`), and senders push a message only after that answer, so every
accepted message's blobs are on disk.

Durability follows the database's: with ``sync=True`` each file and the directory are ``fsync``-ed (survives power
loss); without, a written file survives a crash of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from fl_async._digest import DIGEST_SIZE
from fl_async.blobs.store import BlobState, BlobStore
from fl_async.errors import FlAsyncError

__all__ = ["BlobDirectory"]

log = logging.getLogger("fl_async.superlink.blobs")


class BlobDirectory:
    """A directory of blob files kept in step with one :class:`BlobStore` (see the module docstring).

    Args:
        path: the directory (created if absent).
        sync: ``fsync`` each file and the directory when a blob is written.

    Attributes:
        worst_write: the longest time writing one blob file took, seconds (in the worker thread when an event
            loop runs: the loop is not held).
        loaded: how many blobs :meth:`attach` loaded.
    """

    def __init__(self, path: str | Path, *, sync: bool = False) -> None:
        self.path = Path(path)
        self.sync = sync
        self.worst_write = 0.0
        self.loaded = 0
        self._store: BlobStore | None = None
        self._worker: ThreadPoolExecutor | None = None
        self._pending: dict[bytes, Future[None]] = {}  # digest -> its file write, while pending
        self.path.mkdir(parents=True, exist_ok=True)

    def _file(self, digest: bytes) -> Path:
        return self.path / digest.hex()

    def attach(self, store: BlobStore, *, now: float = 0.0) -> int:
        """Load every blob file into ``store`` and mirror its changes from now on; return how many were loaded.

        Raises:
            OSError: the directory cannot be read.
        """
        for entry in sorted(self.path.iterdir()):
            name = entry.name
            if name.endswith(".tmp"):
                entry.unlink(missing_ok=True)  # a write cut by a crash
                continue
            try:
                digest = bytes.fromhex(name)
            except ValueError:
                continue
            if len(digest) != DIGEST_SIZE:
                continue
            try:
                store.put(digest, entry.read_bytes(), now=now)
            except FlAsyncError as exc:  # IntegrityError (a damaged file), store full, ...
                log.warning("blob file %s not loaded: %s", entry, exc)
                entry.unlink(missing_ok=True)
                continue
            self.loaded += 1
        self._store = store
        store.add_listener(self._changed)
        return self.loaded

    def _changed(self, digest: bytes, state: BlobState | None) -> None:
        """Mirror a change of the store. With a running event loop the file work runs in one worker thread, in
        order (a blob's write always precedes its deletion); the blob stays pinned in the store while it is
        written. Without one it runs here."""
        assert self._store is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if state is BlobState.COMPLETE:
            if loop is None:
                self._write(digest, self._store.get(digest))
                return
            view = self._store.open_read(digest)  # pinned until written
            future = self._executor().submit(self._write, digest, view)
            self._pending[digest] = future

            def done(_: object) -> None:
                loop.call_soon_threadsafe(self._unpin, digest, future)

            future.add_done_callback(done)
        elif state is None:
            if loop is None:
                self._unlink(digest)
            else:
                self._executor().submit(self._unlink, digest)

    def _executor(self) -> ThreadPoolExecutor:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fl-async-blob-files")
        return self._worker

    def _unpin(self, digest: bytes, future: Future[None]) -> None:
        if self._pending.get(digest) is future:
            del self._pending[digest]
        if self._store is not None:
            self._store.close_read(digest, now=time.monotonic())

    async def written(self, digest: bytes) -> None:
        """Return once the file of a complete blob is written (at once if it is, or if no write is pending)."""
        future = self._pending.get(digest)
        if future is not None:
            await asyncio.wrap_future(future)

    def _unlink(self, digest: bytes) -> None:
        with contextlib.suppress(OSError):
            self._file(digest).unlink(missing_ok=True)

    def close(self) -> None:
        """Finish the pending file work (writes and deletions) and stop the worker thread. Idempotent."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def _write(self, digest: bytes, data: memoryview) -> None:
        target = self._file(digest)
        if target.exists():
            return
        started = time.perf_counter()
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self.sync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, target)
            if self.sync:
                fd = os.open(self.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            log.error("blob %s could not be written to %s: %s (it will not survive a restart)", digest.hex(), tmp, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        self.worst_write = max(self.worst_write, time.perf_counter() - started)

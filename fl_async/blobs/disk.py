"""Blob payloads on disk: a directory that mirrors the complete blobs of a :class:`~fl_async.blobs.store.BlobStore`,
so that a link restarting on its database still holds the arrays its queued messages name.

One file per blob, named by the hex BLAKE3 digest (content-addressed: an array sent to N nodes is one file). The
file is written when the blob completes (to a temporary name, then renamed: a crash never leaves a partial file
under a digest's name) and deleted when the store frees the blob (no message references it any more and no
download lease holds it), so the directory holds what the store holds. At start, :meth:`BlobDirectory.attach`
loads every file back into the store (verifying its digest; a file that does not match is deleted), before the
link state re-references them from the recovered messages; files nothing references are freed by the store's
sweep after its linger time, like any unreferenced upload.

Durability follows the database's: with ``sync=True`` each file and the directory are ``fsync``-ed before the
blob counts as held (survives power loss); without, a written file survives a crash of the process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
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
        worst_write: the longest time writing one blob took, seconds (it runs on the event loop).
        loaded: how many blobs :meth:`attach` loaded.
    """

    def __init__(self, path: str | Path, *, sync: bool = False) -> None:
        self.path = Path(path)
        self.sync = sync
        self.worst_write = 0.0
        self.loaded = 0
        self._store: BlobStore | None = None
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
        if state is BlobState.COMPLETE:
            self._write(digest)
        elif state is None:
            with contextlib.suppress(OSError):
                self._file(digest).unlink(missing_ok=True)

    def _write(self, digest: bytes) -> None:
        assert self._store is not None
        target = self._file(digest)
        if target.exists():
            return
        started = time.perf_counter()
        tmp = target.with_name(target.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(self._store.get(digest))
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

"""Progress display of ``fl-async run``: nodes registered, rounds and per-round node work, drawn with rich on
stderr.

:class:`RoundProgress` is told what the nodes do (:meth:`~RoundProgress.message_started`,
:meth:`~RoundProgress.message_finished`) by a ClientApp mod that :func:`observe_client_app` wraps around
the user's app. A *round* is a message ``group_id`` (the guide sends round ``r`` with ``group_id=str(r)``):
the first message of a new group completes the previous round. The number of rounds comes from the
run config key ``num-server-rounds`` when set (Flower's convention), else the bar is open-ended.

The display only animates when stderr is a terminal; otherwise it stays silent (the app's own output on
stdout tells the story), so logs and CI output are not filled with redraws. stdout is never written to.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Self

__all__ = ["RoundProgress", "observe_client_app", "rounds_from_config"]


def rounds_from_config(run_config: Mapping[str, Any]) -> int | None:
    """The ``num-server-rounds`` run-config value if it is a positive int, else ``None``."""
    value = run_config.get("num-server-rounds")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


class RoundProgress:
    """Rich progress bars on stderr: rounds done (of ``total_rounds``) and the current round's node replies.

    Thread-safe; use as a context manager (starts and stops the live display). All methods are cheap
    no-ops when the display is disabled.

    Args:
        total_rounds: expected number of rounds, or ``None`` if unknown.
        num_nodes: how many nodes take part (shown in the header).
        enabled: ``None`` (default) = only when stderr is a terminal; ``True``/``False`` to force.
        console: a ``rich.console.Console`` to draw on (default: a new one on stderr).
    """

    def __init__(
        self,
        total_rounds: int | None,
        num_nodes: int,
        *,
        enabled: bool | None = None,
        console: Any = None,
    ) -> None:
        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self.total_rounds = total_rounds
        self.num_nodes = num_nodes
        self._lock = threading.Lock()
        self._groups: list[str] = []
        self._started: dict[str, int] = {}
        self._finished: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._round_began: float = 0.0
        self._progress: Any = None
        self._rounds_task: Any = None
        self._nodes_task: Any = None
        self._round_task: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        # Keep the app's stdout on stdout: only let rich route it above the bars when both streams are the
        # same terminal (rich would otherwise send redirected stdout to its stderr console).
        same_terminal = self.console.is_terminal and sys.stdout.isatty()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            redirect_stdout=same_terminal,
            redirect_stderr=same_terminal,
            transient=False,
        )
        self._nodes_task = self._progress.add_task("nodes registered", total=self.num_nodes)
        self._rounds_task = self._progress.add_task(f"rounds ({self.num_nodes} nodes)", total=self.total_rounds)
        self._round_task = self._progress.add_task("waiting for round 1", total=None)
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is None:
            return
        with self._lock:
            if self._groups:
                self._complete_current()
        self._progress.stop()
        self._progress = None

    # ------------------------------------------------------------------ events

    def nodes_registered(self, count: int) -> None:
        """``count`` of the nodes have registered with the link so far (progress while they start)."""
        with self._lock:
            if self._progress is not None:
                self._progress.update(self._nodes_task, completed=count)

    def message_started(self, group_id: str, message_type: str) -> None:
        """A node began handling a message of round ``group_id``."""
        with self._lock:
            if not self._groups or self._groups[-1] != group_id:
                if group_id in self._started:  # a late message of an older round: count it there
                    self._started[group_id] += 1
                    return
                if self._groups:
                    self._complete_current()
                self._groups.append(group_id)
                self._started[group_id] = self._finished[group_id] = self._failed[group_id] = 0
                self._round_began = time.monotonic()
            self._started[group_id] += 1
            self._draw(group_id, message_type)

    def message_finished(self, group_id: str, message_type: str, ok: bool) -> None:
        """A node finished a message of round ``group_id`` (``ok=False``: it raised)."""
        with self._lock:
            if group_id not in self._finished:
                return
            self._finished[group_id] += 1
            if not ok:
                self._failed[group_id] += 1
            if self._groups and self._groups[-1] == group_id:
                self._draw(group_id, message_type)

    @property
    def rounds_seen(self) -> list[str]:
        """Group ids seen so far, in order."""
        with self._lock:
            return list(self._groups)

    # ------------------------------------------------------------------ drawing (lock held)

    def _complete_current(self) -> None:
        if self._progress is None:
            return
        done = len(self._groups)
        total = self.total_rounds
        self._progress.update(self._rounds_task, completed=min(done, total) if total else done)

    def _draw(self, group_id: str, message_type: str) -> None:
        if self._progress is None:
            return
        failed = self._failed[group_id]
        label = f"round {group_id} {message_type}" + (f" ({failed} failed)" if failed else "")
        self._progress.update(
            self._round_task,
            description=label,
            total=max(self._started[group_id], 1),
            completed=self._finished[group_id],
        )


def observe_client_app(app: Any, progress: RoundProgress) -> Any:
    """A ClientApp that runs ``app`` unchanged and reports each message to ``progress``.

    The returned app registers async ``train``/``evaluate``/``query`` handlers that call
    ``app.acall(message, context)`` (so ``app``'s own mods, thread use and errors are kept, including
    "No `query` function registered"), wrapped in one async mod that reports start and end.
    """
    from fl_async.client import ClientApp

    async def report(message: Any, context: Any, call_next: Any) -> Any:
        md = message.metadata
        progress.message_started(md.group_id, md.message_type)
        ok = False
        try:
            result = await call_next(message, context)
            ok = True
            return result
        finally:
            progress.message_finished(md.group_id, md.message_type, ok)

    observed = ClientApp(mods=[report])

    async def delegate(message: Any, context: Any) -> Any:
        return await app.acall(message, context)

    observed.train()(delegate)
    observed.evaluate()(delegate)
    observed.query()(delegate)
    return observed

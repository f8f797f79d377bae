"""``Run``: what the SuperLink knows about a run (as Flower 1.10's ``Run``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fl_async.common.context import UserConfig

__all__ = ["Run"]


@dataclass(frozen=True)
class Run:
    """A run on the SuperLink.

    Attributes:
        run_id: unsigned 64-bit id in [1, 2**64 - 1] assigned by the link.
        fab_id: free-form app identifier given when the run was created (``""`` if none).
        fab_version: free-form app version (``""`` if none).
        run_config: the run's settings, passed to every node's ``Context.run_config``.
    """

    run_id: int
    fab_id: str = ""
    fab_version: str = ""
    run_config: UserConfig = field(default_factory=dict)

"""The node runtime: :class:`SuperNode` runs a :class:`~fl_async.client.ClientApp` for a SuperLink.

:func:`run_supernode` runs one in the foreground with SIGINT/SIGTERM handling (for programs embedding a node;
``fl-async supernode`` runs its node through :mod:`fl_async.cli.process`); :func:`check_reply` and
:func:`exception_reason` are the reply rules used.
"""

from fl_async.supernode._dispatch import run_client_app
from fl_async.supernode._runner import run_supernode
from fl_async.supernode.replies import check_reply, exception_reason
from fl_async.supernode.supernode import SuperNode

__all__ = ["SuperNode", "check_reply", "exception_reason", "run_client_app", "run_supernode"]

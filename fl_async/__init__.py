"""fl-async: an asyncio-native SuperLink, SuperNode and Driver SDK for server-driven federated learning.

Subpackages: :mod:`fl_async.common` (records, messages), :mod:`fl_async.server` (ServerApp, AsyncDriver,
Driver), :mod:`fl_async.client` (ClientApp), :mod:`fl_async.superlink`, :mod:`fl_async.supernode`.
"""

__version__ = "0.2.0"

__all__ = ["__version__"]

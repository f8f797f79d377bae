"""Client side of fl-async: :class:`ClientApp`, the code a SuperNode runs (as Flower 1.9's ``flwr.client``).

The node runtime that hosts a ClientApp is :mod:`fl_async.supernode`.
"""

from fl_async.client.client_app import ClientApp, ClientAppCallable, Mod

__all__ = ["ClientApp", "ClientAppCallable", "Mod"]

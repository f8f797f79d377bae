"""Newest Flower's ``flwr.serverapp``: ``Grid``, ``ServerApp`` and ``strategy``, for apps written for Flower 1.4x.

``Grid`` is :class:`fl_async.server.Driver` (the same class: newest Flower renamed ``Driver`` to ``Grid``),
``ServerApp`` is :class:`fl_async.server.ServerApp`; ``AsyncGrid`` (fl-async's addition) is
:class:`fl_async.server.AsyncDriver`. :mod:`fl_async.serverapp.strategy` holds FedAvg and friends with
newest Flower's ``start(grid=..., initial_arrays=..., num_rounds=...)`` API, aggregating replies as they
arrive.
"""

from __future__ import annotations

from fl_async.server.async_driver import AsyncDriver as AsyncGrid
from fl_async.server.driver import Driver as Grid
from fl_async.server.server_app import ServerApp
from fl_async.serverapp import strategy

__all__ = ["AsyncGrid", "Grid", "ServerApp", "strategy"]

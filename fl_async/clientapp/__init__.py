"""Newest Flower's ``flwr.clientapp``: :class:`ClientApp` (the same class as ``fl_async.client.ClientApp``) and ``mod``.

Replace ``flwr`` by ``fl_async`` in an app's imports. Handlers are registered with ``@app.train()``,
``@app.evaluate()``, ``@app.query()`` and named actions (``@app.train("finetune")`` handles message type
``"train.finetune"``); the legacy ``ClientApp(client_fn=...)`` / ``NumPyClient`` mode is refused with an
error that shows the handler style.
"""

from __future__ import annotations

from fl_async.client.client_app import ClientApp
from fl_async.clientapp import mod

__all__ = ["ClientApp", "mod"]

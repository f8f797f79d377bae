"""Newest Flower (1.42) ServerApp/ClientApp used by ``make bench-peer``; imported only inside its venv.

The harness copies this package, with :mod:`benchmarks.peer.appcfg`, into a Flower app project generated under
``build/`` (``pyproject.toml`` with the components and the run config), which ``flwr run`` bundles and the
SuperLink ships to the SuperNodes. Settings come from the run config (server) and the node config (client).
"""

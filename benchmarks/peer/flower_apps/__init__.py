"""Flower 1.10 ServerApp/ClientApp used by ``make bench-peer``; imported only inside Flower's venv.

Both apps are configured through ``BENCH_*`` environment variables set by the harness (see ``server.py``).
"""

"""Side-by-side benchmarks of fl-async and Flower 1.10.0: ``python -m benchmarks.peer``.

Kept import-free: :mod:`benchmarks.peer.appcfg` and ``flower_apps`` are imported inside Flower's own venv.
See docs/benchmarks.md.
"""

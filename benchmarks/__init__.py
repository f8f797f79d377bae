"""fl-async benchmarks (``make bench``) and the side-by-side comparison with Flower (``make bench-peer``).

Kept import-free on purpose: the Flower apps under ``benchmarks.peer.flower_apps`` are imported by Flower's own
processes, whose virtual environment has no fl-async installed.
"""

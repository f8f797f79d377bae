"""Runnable fl-async examples (``examples.quickstart``: FedAvg on handwritten digits)."""

"""Quickstart: FedAvg of a numpy softmax regression on scikit-learn's digits over 10 non-IID nodes.

Run it with ``make run`` (or ``fl-async run examples.quickstart.server:app examples.quickstart.client:app
--num-supernodes 10``). :mod:`.task` holds data, model and training; :mod:`.client` the ClientApp;
:mod:`.server` the ServerApp.
"""

"""The quickstart's machine-learning part: data, model and training, in plain numpy.

Data: scikit-learn's bundled handwritten digits (:func:`sklearn.datasets.load_digits`; 1,797 8x8
images, 10 classes, shipped inside scikit-learn, so nothing is downloaded). A seeded, stratified 25 %
of it is the held-out test set, evaluated by the server app after every round; the rest is split
non-IID over the nodes with a Dirichlet label skew (each class is divided among the partitions in
proportions drawn from ``Dirichlet(alpha)``; a small ``alpha`` gives each node few classes).

Model: multinomial logistic (softmax) regression, ``logits = x @ W + b`` with ``W`` of shape
``(64, 10)`` and ``b`` of shape ``(10,)``, trained with mini-batch SGD on the cross-entropy loss plus
L2 weight decay. Everything here is deterministic given its seeds and has no fl-async dependency, so
it can be tested (and simulated, see :func:`simulate_fedavg`) without a runtime.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

__all__ = [
    "DEFAULTS",
    "NUM_CLASSES",
    "NUM_FEATURES",
    "evaluate",
    "fedavg",
    "init_params",
    "load_dataset",
    "load_partition",
    "load_test_set",
    "plot_accuracy",
    "settings",
    "simulate_fedavg",
    "train",
]

NUM_FEATURES = 64
"""Pixels per digit image (8 x 8, values scaled to 0..1)."""
NUM_CLASSES = 10
"""Digits 0..9."""

Params = dict[str, np.ndarray]
"""Model parameters: ``{"W": float32 (64, 10), "b": float32 (10,)}``."""


@lru_cache(maxsize=4)
def load_dataset(seed: int = 0, test_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the digits and split them once into train and held-out test sets.

    Args:
        seed: seed of the stratified split.
        test_fraction: share of the samples held out for testing (0..1).

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 features in 0..1 of shape ``(n, 64)`` and
        int64 labels of shape ``(n,)``. The arrays are read-only (they are cached and shared).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in range(NUM_CLASSES):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        test_idx.append(idx[: int(round(len(idx) * test_fraction))])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(y)), test)
    out = (x[train], y[train], x[test], y[test])
    for arr in out:
        arr.setflags(write=False)
    return out


def load_test_set(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test set ``(x_test, y_test)`` of :func:`load_dataset`."""
    _, _, x_test, y_test = load_dataset(seed)
    return x_test, y_test


_SPLIT_LOCK = threading.Lock()


@lru_cache(maxsize=8)
def _partition_indices(num_partitions: int, alpha: float, seed: int) -> tuple[np.ndarray, ...]:
    _, y_train, _, _ = load_dataset(seed)
    rng = np.random.default_rng(seed + 1)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
    for label in range(NUM_CLASSES):
        idx = np.flatnonzero(y_train == label)
        rng.shuffle(idx)
        shares = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for p, chunk in enumerate(np.split(idx, cuts)):
            parts[p].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    # Every node gets at least a few samples while the data allows: top up small partitions from the largest one.
    # With more partitions than that (e.g. thousands of nodes for ~1,350 samples) the rest stay empty: such a node
    # trains on nothing and reports 0 examples, which weighs nothing in the average.
    sizes = np.array([len(q) for q in out])
    for p in range(num_partitions):
        if sizes[p] < 8:
            donor = int(np.argmax(sizes))
            if sizes[donor] < 16:
                break
            out[p], out[donor] = np.concatenate([out[p], out[donor][:8]]), out[donor][8:]
            sizes[p], sizes[donor] = len(out[p]), len(out[donor])
    return tuple(out)


def load_partition(
    partition_id: int, num_partitions: int, *, alpha: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One node's non-IID share of the training set.

    Args:
        partition_id: which partition, ``0 <= partition_id < num_partitions``.
        num_partitions: how many nodes share the training set.
        alpha: Dirichlet concentration of the label skew (smaller is more skewed; 0.5 leaves most
            nodes with 3-5 dominant classes).
        seed: seed of the split (the same on every node, so partitions are disjoint).

    Returns:
        ``(x, y)`` as in :func:`load_dataset`.

    Raises:
        ValueError: ``partition_id`` is out of range or ``num_partitions < 1``.
    """
    if num_partitions < 1 or not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition-id must be in 0..{num_partitions - 1}, got {partition_id}")
    with _SPLIT_LOCK:  # computed once: thousands of nodes' threads asking at once would each compute it
        x_train, y_train, _, _ = load_dataset(seed)
        idx = _partition_indices(num_partitions, float(alpha), seed)[partition_id]
    return x_train[idx], y_train[idx]


def init_params(seed: int = 0) -> Params:
    """Small random initial parameters (the server's starting model)."""
    rng = np.random.default_rng(seed)
    return {
        "W": (rng.standard_normal((NUM_FEATURES, NUM_CLASSES)) * 0.01).astype(np.float32),
        "b": np.zeros(NUM_CLASSES, dtype=np.float32),
    }


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 1,
    lr: float = 0.5,
    batch_size: int = 32,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[Params, float]:
    """Train a copy of ``params`` with mini-batch SGD; the input arrays are never changed.

    Args:
        params: current parameters (``W``, ``b``); any array-likes, read-only views are fine.
        x, y: local data as returned by :func:`load_partition`.
        epochs: passes over the local data.
        lr: learning rate.
        batch_size: samples per SGD step.
        weight_decay: L2 penalty on ``W``.
        seed: shuffling seed.

    Returns:
        ``(new_params, mean_train_loss_of_last_epoch)``; on no data, a copy of ``params`` and ``0.0``.
    """
    w = np.array(params["W"], dtype=np.float32)
    b = np.array(params["b"], dtype=np.float32)
    rng = np.random.default_rng(seed)
    onehot = np.eye(NUM_CLASSES, dtype=np.float32)[y]
    loss = 0.0
    for _ in range(max(1, int(epochs))):
        order = rng.permutation(len(y))
        losses = []
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            xb, tb = x[idx], onehot[idx]
            p = _softmax(xb @ w + b)
            losses.append(float(-np.mean(np.sum(tb * np.log(p + 1e-12), axis=1))))
            grad = (p - tb) / len(idx)
            w -= lr * (xb.T @ grad + weight_decay * w)
            b -= lr * grad.sum(axis=0)
        loss = float(np.mean(losses)) if losses else 0.0
    return {"W": w, "b": b}, loss


def evaluate(params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Cross-entropy loss and accuracy (0..1) of ``params`` on ``(x, y)``; ``(0.0, 0.0)`` on no data (an empty
    partition: its 0 examples weigh nothing in an average)."""
    if len(y) == 0:
        return 0.0, 0.0
    p = _softmax(x @ np.asarray(params["W"]) + np.asarray(params["b"]))
    loss = float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(p.argmax(axis=1) == y))


def fedavg(results: Sequence[tuple[Mapping[str, np.ndarray], int]]) -> Params:
    """Weighted average of parameter sets (FedAvg, McMahan et al. 2017).

    Args:
        results: ``(params, num_examples)`` per node; weights are the example counts.

    Raises:
        ValueError: ``results`` is empty or holds no examples.
    """
    total = sum(n for _, n in results)
    if not results or total <= 0:
        raise ValueError("fedavg needs at least one result with examples")
    keys = results[0][0].keys()
    return {
        k: (sum(np.asarray(p[k], dtype=np.float64) * n for p, n in results) / total).astype(np.float32) for k in keys
    }


def simulate_fedavg(
    num_rounds: int = 20,
    num_partitions: int = 10,
    *,
    local_epochs: int = 2,
    lr: float = 0.5,
    alpha: float = 0.5,
    seed: int = 0,
) -> list[float]:
    """Run FedAvg in one process without any runtime; returns the test accuracy after each round.

    This is the reference the federated run must match (same data, model and arithmetic).
    """
    params = init_params(seed)
    x_test, y_test = load_test_set(seed)
    parts = [load_partition(i, num_partitions, alpha=alpha, seed=seed) for i in range(num_partitions)]
    accs = []
    for rnd in range(1, num_rounds + 1):
        results = [
            (train(params, x, y, epochs=local_epochs, lr=lr, seed=seed * 1000 + rnd * 100 + i)[0], len(y))
            for i, (x, y) in enumerate(parts)
        ]
        params = fedavg(results)
        accs.append(evaluate(params, x_test, y_test)[1])
    return accs


DEFAULTS: dict[str, int | float | str] = {  # the server apps' run config (see server.py)
    "num-server-rounds": 20,
    "local-epochs": 5,
    "lr": 0.5,
    "alpha": 0.5,
    "seed": 0,
    "min-nodes": 2,
    "round-timeout": 60.0,
    "plot": "",
}


def settings(run_config: Mapping[str, object]) -> dict[str, int | float | str]:
    """The run config (``--run-config``) over :data:`DEFAULTS`.

    Raises:
        ValueError: a key is not one of :data:`DEFAULTS` (the message lists the known keys).
    """
    unknown = sorted(set(run_config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown run config key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **run_config}  # type: ignore[dict-item]


def plot_accuracy(history: list[float], path: str) -> str:
    """Write test accuracy per round as a PNG (matplotlib, headless) and return the path.

    Raises:
        ImportError: matplotlib is not installed (``pip install 'fl-async[plot]'``).
    """
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the plot option needs matplotlib: pip install 'fl-async[plot]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    rounds = list(range(1, len(history) + 1))
    ax.plot(rounds, [100 * a for a in history], marker="o")
    ax.axhline(90, color="grey", linestyle="--", linewidth=1, label="90 %")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("FedAvg on digits, 10 non-IID nodes")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover - manual check
    for r, a in enumerate(simulate_fedavg(), 1):
        print(f"round {r:2d}  accuracy {a:.4f}")

"""flower-numpy: a linear regression in plain numpy, on synthetic data split over the nodes."""

import numpy as np

NUM_FEATURES = 8


def get_model_params(seed: int = 0) -> list[np.ndarray]:
    """The model as a list of numpy arrays: weights (8,) and bias (1,)."""
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.01, size=NUM_FEATURES).astype(np.float32), np.zeros(1, dtype=np.float32)]


def load_data(partition_id: int, num_partitions: int) -> tuple[np.ndarray, np.ndarray]:
    """This partition's share of a fixed synthetic data set: ``y = x @ w_true + 0.5 + noise``."""
    rng = np.random.default_rng(1000 + partition_id)
    n = 64 + 16 * (partition_id % 4)
    x = rng.normal(size=(n, NUM_FEATURES)).astype(np.float32)
    w_true = np.linspace(-1.0, 1.0, NUM_FEATURES, dtype=np.float32)
    y = x @ w_true + 0.5 + rng.normal(scale=0.05, size=n).astype(np.float32)
    return x, y.astype(np.float32)


def train(
    params: list[np.ndarray], x: np.ndarray, y: np.ndarray, epochs: int, lr: float
) -> tuple[list[np.ndarray], float]:
    """Full-batch gradient descent on the mean squared error; returns the new params and the last loss."""
    w, b = params[0].copy(), params[1].copy()
    loss = 0.0
    for _ in range(epochs):
        err = x @ w + b[0] - y
        loss = float(np.mean(err**2))
        w -= lr * 2 * (x.T @ err) / len(y)
        b -= lr * 2 * np.mean(err)
    return [w, b], loss


def evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of ``params`` on ``(x, y)``."""
    return float(np.mean((x @ params[0] + params[1][0] - y) ** 2))

"""Model, local data and training for the Driver API example (shared by server.py and client.py).

``Net`` is the small CNN of Flower's PyTorch quickstart (CIFAR-10 shaped inputs: 3x32x32, 10 classes).
Each node trains on its own synthetic data set, generated from a seed derived from its node id, with
labels given by a fixed random "teacher" so that training makes visible progress.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fl_async.common import ParametersRecord, array_from_numpy


class Net(nn.Module):
    """Flower's PyTorch quickstart CNN (from 'PyTorch: A 60 Minute Blitz')."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def pytorch_to_parameter_record(pytorch_module: torch.nn.Module) -> ParametersRecord:
    """The guide's conversion of a model's state_dict to a ParametersRecord (one Array per tensor)."""
    state_dict = pytorch_module.state_dict()
    for k, v in state_dict.items():
        state_dict[k] = array_from_numpy(v.numpy())
    return ParametersRecord(state_dict)


def parameters_to_pytorch_state_dict(params_record: ParametersRecord) -> OrderedDict[str, torch.Tensor]:
    """Inverse of :func:`pytorch_to_parameter_record`: a state_dict of tensors viewing the Arrays' payloads."""
    state_dict: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, array in params_record.items():
        state_dict[k] = torch.from_numpy(array.numpy())
    return state_dict


def load_local_data(node_id: int, num_examples: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """A node's local data set: ``num_examples`` images (3x32x32, float32) and labels (0..9)."""
    rng = np.random.default_rng(abs(node_id) % (2**32))
    images = rng.standard_normal((num_examples, 3, 32, 32), dtype=np.float32)
    teacher = np.random.default_rng(0).standard_normal((3 * 32 * 32, 10), dtype=np.float32)
    labels = (images.reshape(num_examples, -1) @ teacher).argmax(axis=1)
    return torch.from_numpy(images), torch.from_numpy(labels)


def train(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], epochs: int, batch_size: int = 32) -> float:
    """Train ``model`` in place with SGD for ``epochs`` epochs; return the mean loss of the last epoch."""
    images, labels = data
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    model.train()
    mean_loss = 0.0
    for _ in range(epochs):
        total, batches = 0.0, 0
        for start in range(0, len(images), batch_size):
            optimizer.zero_grad()
            loss = criterion(model(images[start : start + batch_size]), labels[start : start + batch_size])
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        mean_loss = total / max(batches, 1)
    return mean_loss

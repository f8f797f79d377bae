"""fl_async.serverapp.strategy: streaming means, Flower's formulas, FedAvg over real nodes, the Flower app pair."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fl_async.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from fl_async.clientapp import ClientApp
from fl_async.server import Driver
from fl_async.serverapp.exception import AggregationError, InconsistentMessageReplies
from fl_async.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedProx, FedYogi
from fl_async.serverapp.strategy._streaming import WeightedArrayMean, bfloat16_to_float32, float32_to_bfloat16
from tests.driver_fixtures import GATES, cluster_in_thread

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the streaming mean


def test_streaming_mean_equals_the_direct_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    records, weights = [], []
    for i in range(40):
        records.append(
            {
                "w": (rng.normal(size=(37, 11)) * 10 + 1e3).astype(np.float32),
                "b": rng.normal(size=5),
                "n": rng.integers(0, 100, size=3),
            }
        )
        weights.append(0 if i == 3 else int(rng.integers(1, 500)))
    mean = WeightedArrayMean()
    for rec, w in zip(records, weights, strict=True):
        mean.add(ArrayRecord.from_numpy_dict(rec), w)
    out = mean.result().to_numpy_dict()
    total = sum(weights)
    for key in ("w", "b", "n"):
        direct = sum(np.asarray(r[key], dtype=np.float64) * w for r, w in zip(records, weights, strict=True)) / total
        np.testing.assert_allclose(out[key], direct, rtol=1e-6 if key == "w" else 1e-12)  # float32: a few ulps
    assert out["w"].dtype == np.float32 and out["b"].dtype == np.float64 and out["n"].dtype == np.float64
    assert mean.count == 40 and mean.total_weight == total


def test_streaming_mean_of_bfloat16_arrays() -> None:
    torch = pytest.importorskip("torch")
    a, b = torch.randn(300).to(torch.bfloat16), torch.randn(300).to(torch.bfloat16)
    mean = WeightedArrayMean()
    mean.add(ArrayRecord({"x": a}), 1)
    mean.add(ArrayRecord({"x": b}), 3)
    out = mean.result()
    assert out["x"].dtype == "bfloat16"
    expected = ((a.float() + 3 * b.float()) / 4).to(torch.bfloat16)  # torch rounds to nearest even too
    assert torch.equal(out.to_torch_state_dict()["x"], expected)
    bits = np.array([0x3F80, 0xC000, 0x7F80, 0x0001], dtype=np.uint16)  # 1, -2, inf, a subnormal
    assert np.array_equal(float32_to_bfloat16(bfloat16_to_float32(bits)), bits)


def test_streaming_mean_refuses_inconsistent_records() -> None:
    mean = WeightedArrayMean()
    mean.add({"w": Array(np.zeros(3, np.float32))}, 1)
    with pytest.raises(InconsistentMessageReplies, match="same keys"):
        mean.add({"v": Array(np.zeros(3, np.float32))}, 1)
    with pytest.raises(AggregationError, match="shape"):
        mean.add({"w": Array(np.zeros(4, np.float32))}, 1)
    with pytest.raises(InconsistentMessageReplies, match="weight"):
        mean.add({"w": Array(np.zeros(3, np.float32))}, -1)
    zero = WeightedArrayMean()
    zero.add({"w": Array(np.ones(2))}, 0)
    with pytest.raises(AggregationError, match="add up to 0"):
        zero.result()


# ------------------------------------------------------------------ Flower's formulas

CURRENT = {"w": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32), "b": np.array([0.5, -0.5], dtype=np.float32)}

# What flwr 1.42.0's strategies return for these replies (computed once with the real package).
FLOWER = {
    FedAdam: [
        [
            [0.9752513547921713, 1.9752509629622892, 2.9752509629622894, 3.975251749509404],
            [0.4752513547921713, -0.5247486452078287],
        ],
        [
            [0.9550826988304764, 1.9550829027524188, 2.955082902752418, 3.9550819906608874],
            [0.45508244986294916, -0.5449177991035203],
        ],
    ],
    FedYogi: [
        [
            [0.996666669845581, 1.996666669845581, 2.996666669845581, 3.996666669845581],
            [0.49666666984558105, -0.503333330154419],
        ],
        [
            [0.9885494709014893, 1.9885494709014893, 2.9885494709014893, 3.9885494709014893],
            [0.48854947090148926, -0.5114505290985107],
        ],
    ],
    FedAdagrad: [
        [
            [0.9166666865348816, 1.9166663885116577, 2.916666269302368, 3.9166669845581055],
            [0.4166666865348816, -0.5833333134651184],
        ],
        [
            [1.0146281719207764, 2.0146279335021973, 3.014627695083618, 4.0146284103393555],
            [0.5146281719207764, -0.485371857881546],
        ],
    ],
    FedAvgM: [
        [
            [0.9975000023841858, 1.997499942779541, 2.997499942779541, 3.997499942779541],
            [0.4975000023841858, -0.5024999976158142],
        ],
        [
            [0.984000027179718, 1.9839998483657837, 2.9839999675750732, 3.9840002059936523],
            [0.484000027179718, -0.5160000324249268],
        ],
    ],
}


def _replies(rnd: int) -> list[Message]:
    out = []
    for i, (n, shift) in enumerate([(10, 0.1), (30, -0.2), (60, 0.05)]):
        arrays = [(v + shift * rnd + 0.01 * i).astype(np.float32) for v in CURRENT.values()]
        instruction = Message(RecordDict({"x": ConfigRecord()}), i + 1, "train")
        content = RecordDict(
            {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": n, "loss": 0.5 * i})}
        )
        out.append(Message(content, reply_to=instruction))
    return out


@pytest.mark.parametrize("cls", [FedAdam, FedYogi, FedAdagrad, FedAvgM])
def test_server_optimizers_match_flower(cls: type) -> None:
    strategy = cls(server_learning_rate=0.5, server_momentum=0.9) if cls is FedAvgM else cls()
    arrays = ArrayRecord(list(CURRENT.values()))
    for rnd, expected in enumerate(FLOWER[cls], start=1):
        if cls is FedAvgM:
            strategy.current_arrays = strategy.current_arrays or arrays
        else:
            strategy.current_arrays = {k: a.numpy() for k, a in arrays.items()}
        arrays, metrics = strategy.aggregate_train(rnd, iter(_replies(rnd)))
        got = arrays.to_numpy_ndarrays()
        np.testing.assert_allclose(got[0].ravel(), expected[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-7)
        assert got[0].dtype == np.float32  # the model's dtype is kept (Flower's FedAdam returns float64)
        assert metrics == MetricRecord({"loss": (0.5 * 30 + 1.0 * 60) / 100})


def test_fedprox_sends_proximal_mu() -> None:
    assert FedProx(proximal_mu=0.3).proximal_mu == 0.3
    config = ConfigRecord()
    strategy = FedProx(proximal_mu=0.3, fraction_train=0.0)
    assert list(strategy.configure_train(1, ArrayRecord(), config, None)) == []  # type: ignore[arg-type]
    assert config["proximal-mu"] == 0.3


# ------------------------------------------------------------------ FedAvg over real nodes

ROLES: dict[int, str] = {}


def _weight(node_id: int) -> int:
    return node_id % 97 + 1


def _value(node_id: int) -> float:
    return (node_id % 1009) / 7.0


def _fedavg_app() -> ClientApp:
    app = ClientApp()

    @app.train()
    async def train(msg: Message, context: Context) -> Message:
        role = ROLES.get(context.node_id, "ok")
        if role == "error":
            raise RuntimeError("this node fails")
        if role == "hang":
            await GATES.wait("never")  # released when the cluster shuts down
        arrays = msg.content["arrays"].to_numpy_ndarrays()
        new = ArrayRecord([a + np.float32(_value(context.node_id)) for a in arrays])
        metrics = MetricRecord({"num-examples": _weight(context.node_id), "node": float(context.node_id % 1000)})
        return Message(RecordDict({"arrays": new, "metrics": metrics}), reply_to=msg)

    return app


def test_fedavg_over_real_nodes_equals_the_weighted_mean_without_failed_nodes() -> None:
    model = [np.linspace(-1, 1, 600_000, dtype=np.float32), np.arange(7, dtype=np.float32)]  # 2.4 MB: blob path
    with cluster_in_thread(_fedavg_app(), num_nodes=6) as (c, _portal):
        ids = c.node_ids
        ROLES.clear()
        ROLES.update({ids[0]: "error", ids[1]: "hang"})
        with Driver(c.link.driver_address, insecure=True) as grid:
            strategy = FedAvg(fraction_evaluate=0.0, min_available_nodes=6, min_train_nodes=6)
            result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model), num_rounds=1, timeout=5.0)
    ok = ids[2:]
    total = sum(_weight(n) for n in ok)
    shift = sum(_value(n) * _weight(n) for n in ok) / total
    got = result.arrays.to_numpy_ndarrays()
    np.testing.assert_allclose(got[0], model[0].astype(np.float64) + shift, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(got[1], model[1].astype(np.float64) + shift, rtol=1e-6, atol=1e-5)
    counts = result.train_replies[1]
    assert (counts.sent, counts.results, counts.errors, counts.timed_out, counts.not_queued) == (6, 4, 1, 1, 0)
    expected_node = sum((n % 1000) * _weight(n) for n in ok) / total
    assert result.train_metrics_clientapp[1]["node"] == pytest.approx(expected_node)
    assert "num-examples" not in result.train_metrics_clientapp[1]
    assert 5.0 <= counts.seconds < 30  # the round waited for the hanging node until its timeout, no longer


# ------------------------------------------------------------------ an app written for newest Flower


@pytest.mark.parametrize("where", ["folder", "root"])
def test_flower_app_pair_runs_under_fl_async_run(where: str, tmp_path: Path) -> None:
    example = ROOT / "examples" / "flower-numpy"
    for name in ("server_app.py", "client_app.py"):  # only the imports differ from a Flower 1.4x app
        text = (example / name).read_text()
        assert "flwr" not in text.replace("flwr` -> `fl_async", "")
        assert "from fl_async.app import" in text
    out = tmp_path / "model.npz"
    args = ["server_app:app", "client_app:app", "--num-supernodes", "3", "--run-config", f"output='{out}'"]
    cwd = example if where == "folder" else ROOT
    if where == "root":
        args += ["--dir", "examples/flower-numpy"]
    proc = subprocess.run(
        [sys.executable, "-m", "fl_async", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [float(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("round")]
    assert len(losses) == 3 and losses[-1] < losses[0], proc.stdout
    assert "aggregate_train: Received 3 results and 0 failures" in proc.stderr
    with np.load(out) as saved:
        assert [saved[k].shape for k in saved.files] == [(8,), (1,)]

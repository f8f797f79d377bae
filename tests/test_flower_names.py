"""Newest Flower's names (fl_async.app / serverapp / clientapp): the same objects, their constructors, conversions."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import fl_async.app as fapp
from fl_async import clientapp, common, serverapp
from fl_async.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from fl_async.client import ClientApp as OldClientApp
from fl_async.clientapp import ClientApp
from fl_async.common import ConfigsRecord, MetricsRecord, ParametersRecord, RecordSet, UnsupportedFeatureError
from fl_async.common.errors import TTLExpiredError
from fl_async.server import AsyncDriver, Driver
from fl_async.server import ServerApp as OldServerApp
from fl_async.serverapp import AsyncGrid, Grid, ServerApp


def test_new_names_are_the_same_objects_as_the_old_ones() -> None:
    assert RecordDict is RecordSet and ArrayRecord is ParametersRecord
    assert MetricRecord is MetricsRecord and ConfigRecord is ConfigsRecord
    assert Grid is Driver and AsyncGrid is AsyncDriver and ServerApp is OldServerApp and ClientApp is OldClientApp
    assert fapp.Message is common.Message and fapp.Context is common.Context and fapp.DEFAULT_TTL == common.DEFAULT_TTL
    assert set(fapp.__all__) >= {"Array", "ArrayRecord", "ConfigRecord", "Context", "Message", "MessageType",
                                 "Metadata", "MetricRecord", "RecordDict", "Error", "DEFAULT_TTL"}  # fmt: skip
    assert {"Grid", "ServerApp", "strategy"} <= set(serverapp.__all__) and {"ClientApp", "mod"} <= set(
        clientapp.__all__
    )


def test_array_record_from_numpy_list_is_zero_copy_and_round_trips() -> None:
    w, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, dtype=np.float64)
    rec = ArrayRecord([w, b])
    assert list(rec) == ["0", "1"]
    back = rec.to_numpy_ndarrays()
    assert [a.dtype for a in back] == [np.float32, np.float64] and np.array_equal(back[0], w)
    assert np.shares_memory(back[0], w)  # no copy either way for C-contiguous arrays
    assert ArrayRecord(numpy_ndarrays=[w]).to_numpy_ndarrays()[0].shape == (2, 3)
    assert np.array_equal(Array(w).numpy(), w) and Array(ndarray=b).dtype == "float64"
    assert Array("float32", (3,), "numpy.ndarray", bytes(12)).shape == [3]  # Flower's tuple shape is accepted
    with pytest.raises(TypeError, match="one source"):
        ArrayRecord([w], numpy_ndarrays=[b])
    with pytest.raises(TypeError, match="item 1"):
        ArrayRecord([w, "x"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="missing"):
        Array("float32", [3])  # type: ignore[call-arg]


def test_array_record_from_torch_state_dict_keeps_bfloat16_exactly() -> None:
    torch = pytest.importorskip("torch")
    sd = OrderedDict(w=torch.randn(4, 3).to(torch.bfloat16), b=torch.arange(3, dtype=torch.float32))
    rec = ArrayRecord(sd)
    assert rec["w"].dtype == "bfloat16" and rec["b"].dtype == "float32"
    back = rec.to_torch_state_dict()
    assert isinstance(back, OrderedDict) and list(back) == ["w", "b"]
    assert back["w"].dtype == torch.bfloat16 and torch.equal(back["w"], sd["w"]) and torch.equal(back["b"], sd["b"])
    assert Array(sd["b"]).dtype == "float32" and ArrayRecord(torch_state_dict=sd) == rec
    with pytest.raises(TypeError, match="bfloat16"):
        rec.to_numpy_ndarrays()


def test_record_dict_is_one_namespace_with_typed_live_views() -> None:
    arrays, config, metrics = ArrayRecord([np.zeros(2)]), ConfigRecord({"lr": 0.1}), MetricRecord({"acc": 1.0})
    rd = RecordDict({"arrays": arrays, "config": config})
    rd["metrics"] = metrics
    assert list(rd) == ["arrays", "config", "metrics"] and rd["config"] is config
    assert dict(rd.array_records) == {"arrays": arrays} and list(rd.parameters_records) == ["arrays"]
    assert "metrics" in rd.metric_records and "metrics" not in rd.config_records
    rd.configs_records["metrics"] = ConfigRecord({"x": 1})  # one name, one record (as newest Flower)
    assert "metrics" not in rd.metrics_records and rd["metrics"] == ConfigRecord({"x": 1})
    del rd.config_records["config"]
    assert "config" not in rd
    with pytest.raises(KeyError):
        del rd.metric_records["arrays"]
    with pytest.raises(TypeError, match=r"'bad'.*ParametersRecord, MetricsRecord or ConfigsRecord"):
        RecordDict({"bad": {"a": 1}})  # type: ignore[dict-item]
    old = RecordSet(parameters_records={"p": arrays}, metrics_records={"m": metrics})  # Flower 1.9's keywords
    assert list(old) == ["p", "m"] and old == RecordDict({"p": arrays, "m": metrics})
    assert MetricRecord(metric_dict={"a": 1}) == MetricsRecord(metrics_dict={"a": 1})
    assert ConfigRecord(config_dict={"a": 1}) == ConfigsRecord(configs_dict={"a": 1})


def test_message_built_directly_and_as_a_reply() -> None:
    content = RecordDict({"config": ConfigRecord({"lr": 0.1})})
    msg = Message(content, 7, MessageType.TRAIN, group_id="3", ttl=60)
    md = msg.metadata
    assert (md.dst_node_id, md.message_type, md.group_id, md.ttl, md.run_id, md.src_node_id) == (
        7,
        "train",
        "3",
        60,
        0,
        0,
    )
    assert Message(content, dst_node_id=2, message_type="query").metadata.ttl == fapp.DEFAULT_TTL
    md._message_id, md._run_id = "abc", 5  # as received by a node
    reply = Message(RecordDict(), reply_to=msg)
    rmd = reply.metadata
    assert (rmd.reply_to_message, rmd.reply_to_message_id, rmd.dst_node_id, rmd.src_node_id) == ("abc", "abc", 0, 7)
    assert (rmd.run_id, rmd.message_type, rmd.group_id) == (5, "train", "3") and 0 < rmd.ttl <= 60
    err = Message(fapp.Error(2, "boom"), reply_to=msg)
    assert err.has_error() and err.error.reason == "boom"
    with pytest.raises(TypeError, match="Message takes one of"):
        Message(content)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="reply"):
        Message(content, reply_to=msg, dst_node_id=3)
    md.created_at -= 120  # expired
    with pytest.raises(TTLExpiredError):
        Message(RecordDict(), reply_to=msg)


def test_client_app_named_actions_and_handler_mods() -> None:
    app = ClientApp()
    calls: list[str] = []

    def mod(msg: Message, ctx: Context, call_next):  # type: ignore[no-untyped-def]
        calls.append("mod")
        return call_next(msg, ctx)

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        return Message(RecordDict({"m": MetricRecord({"which": 0})}), reply_to=msg)

    @app.train("finetune", mods=[mod])
    def finetune(msg: Message, ctx: Context) -> Message:
        return Message(RecordDict({"m": MetricRecord({"which": 1})}), reply_to=msg)

    def run(message_type: str) -> int:
        msg = Message(RecordDict(), 1, message_type)
        return int(app(msg, Context()).content["m"]["which"])  # type: ignore[arg-type]

    assert run("train") == 0 and run("train.default") == 0 and calls == []
    assert run("train.finetune") == 1 and calls == ["mod"]
    with pytest.raises(ValueError, match="No train function registered with name 'other'"):
        run("train.other")
    with pytest.raises(ValueError, match="No `evaluate` function registered"):
        run("evaluate")
    with pytest.raises(ValueError, match="identifier"):
        app.query("not-valid")


def test_legacy_modes_are_refused_with_the_style_to_use() -> None:
    def client_fn(context: Context) -> None:
        return None

    with pytest.raises(UnsupportedFeatureError, match=r"@app.train\(\)") as info:
        ClientApp(client_fn=client_fn)
    assert isinstance(info.value, TypeError) and "NumPyClient" in str(info.value)
    with pytest.raises(UnsupportedFeatureError, match="Coming from Flower"):
        ClientApp(client_fn)
    with pytest.raises(UnsupportedFeatureError, match=r"strategy.start\(grid=grid"):
        ServerApp(strategy=object())
    assert ClientApp([lambda m, c, n: n(m, c)]).mods  # fl-async's ClientApp([mods]) still works

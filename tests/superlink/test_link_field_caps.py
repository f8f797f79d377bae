"""Per-field element caps: each repeated field is bounded on its own, counted from the wire before decoding."""

from __future__ import annotations

from fl_async._link_limits import LIMITS
from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import LinkConfig
from fl_async.superlink.admission import FIELD_CAPS, count_elements, element_problem
from fl_async.testing.wire import instruction

CAPS = {"max_messages_per_request": 3, "max_message_ids_per_request": 5, "max_record_entries": 4, "max_list_values": 6}


def _entries(n: int) -> list[pb.ValueEntry]:
    return [pb.ValueEntry(key=f"k{i}", value=pb.Value(sint64=i)) for i in range(n)]


def test_each_field_has_its_cap_and_the_refusal_names_the_flag() -> None:
    push = pb.PushMessagesRequest(run_id=1, messages=[instruction(1, 2) for _ in range(4)])
    assert element_problem(bytes(push), pb.PushMessagesRequest, 1000, CAPS) == (
        "PushMessagesRequest.messages has more than 3 values (max_messages_per_request, --max-messages-per-request)"
    )
    pull = pb.PullMessagesRequest(run_id=1, message_ids=["a"] * 6)
    assert "--max-message-ids-per-request" in element_problem(bytes(pull), pb.PullMessagesRequest, 1000, CAPS)
    run = pb.CreateRunRequest(run_config=_entries(5))
    assert "CreateRunRequest.run_config" in element_problem(bytes(run), pb.CreateRunRequest, 1000, CAPS)
    assert element_problem(bytes(pb.CreateRunRequest(run_config=_entries(4))), pb.CreateRunRequest, 1000, CAPS) == ""


def test_nested_caps_count_per_occurrence() -> None:
    # two records of 4 entries each: within the cap of 4 per record (8 in all)
    records = [pb.ConfigsRecord(name=str(i), entries=_entries(4)) for i in range(2)]
    ok = pb.Message(content=pb.RecordSet(configs=records))
    push = pb.PushRepliesRequest(messages=[ok])
    assert element_problem(bytes(push), pb.PushRepliesRequest, 1000, CAPS) == ""
    records[1] = pb.ConfigsRecord(name="big", entries=_entries(5))
    push = pb.PushRepliesRequest(messages=[pb.Message(content=pb.RecordSet(configs=records))])
    assert "ConfigsRecord.entries has more than 4" in element_problem(bytes(push), pb.PushRepliesRequest, 1000, CAPS)


def test_packed_lists_are_counted() -> None:
    shape = pb.Array(dtype="float32", shape=[1] * 7)
    rec = pb.ParametersRecord(keys=["w"], arrays=[shape])
    push = pb.PushRepliesRequest(messages=[pb.Message(content=pb.RecordSet(parameters=[rec]))])
    assert "Array.shape has more than 6 values (max_list_values" in element_problem(
        bytes(push), pb.PushRepliesRequest, 1000, CAPS
    )
    doubles = pb.Value(double_list=pb.DoubleList(vals=[0.5] * 7))
    rec2 = pb.MetricsRecord(entries=[pb.ValueEntry(key="d", value=doubles)])
    push = pb.PushRepliesRequest(messages=[pb.Message(content=pb.RecordSet(metrics=[rec2]))])
    assert "DoubleList.vals" in element_problem(bytes(push), pb.PushRepliesRequest, 1000, CAPS)
    # 1-byte varints are elements (a 28-byte Python int each when decoded); doubles are not
    ints = pb.Sint64List(vals=[1] * 100)
    assert count_elements(bytes(ints), pb.Sint64List, 1000) == 100
    assert count_elements(bytes(pb.DoubleList(vals=[1.0] * 100)), pb.DoubleList, 1000) == 0


def test_every_cap_is_a_link_config_field_and_a_flag() -> None:
    flags = {limit.field: limit.default for limit in LIMITS}
    for field in set(FIELD_CAPS.values()):
        assert flags[field] == getattr(LinkConfig(), field)

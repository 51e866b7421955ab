"""Wire protocol: frames, hello, the restricted unpickler and its per-frame budgets."""

from __future__ import annotations

import json
import pickle
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.graphite_paths import FlattenBudget, SampleError, sample_to_datapoints, short_hostname
from fructosa.wire import protocol
from fructosa.wire.blocks import Block


def test_samples_round_trip_through_a_frame() -> None:
    samples = [{"host": "n", "sensor": "S", "time": 1.5, "value": {"a": [1, 2.5, True, None, "x"]}}]
    session = bytes(range(16))
    frame = protocol.encode_samples(samples, session, 7)
    length = protocol.frame_length(frame[:4])
    kind, payload = protocol.split_frame(frame[4 : 4 + length])
    assert kind == protocol.SAMPLES
    batch_id, pickled = protocol.split_batch(payload)
    assert batch_id == protocol.batch_id(session, 7) == session + b"\0" * 7 + b"\7"
    assert protocol.decode_samples(pickled) == samples
    acks = protocol.encode_acks([batch_id, batch_id])
    assert protocol.decode_acks(acks[5:]) == [batch_id, batch_id]
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_acks(b"x" * 25)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps([pickle.Pickler], protocol=2),  # any global
        pickle.dumps([{1, 2}], protocol=2),  # set needs builtins.set in protocol 2
        b"cos\nsystem\n(S'true'\ntR.",  # protocol 0 reduce
        b"\x80\x02K\x01Q.",  # persistent id
        b"garbage",
    ],
)
def test_restricted_unpickler_refuses_anything_but_plain_data(payload: bytes) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_samples(payload)


def test_size_cap_and_unknown_kinds() -> None:
    with pytest.raises(protocol.ProtocolError, match="outside"):
        protocol.frame_length((protocol.MAX_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(protocol.ProtocolError, match="outside"):
        protocol.frame_length(b"\0\0\0\0")
    with pytest.raises(ValueError):
        protocol.encode_frame(protocol.SAMPLES, b"x" * protocol.MAX_FRAME)
    with pytest.raises(protocol.ProtocolError, match="unknown frame kind"):
        protocol.split_frame(b"Xabc")


def test_hello_checks() -> None:
    hello = b'{"protocol": "fructosa", "version": 1, "host": "node01", "nonce": "ab", "mac": "cd"}'
    assert protocol.check_hello(hello)["host"] == "node01"
    for bad in (
        b'{"protocol": "fructosa", "version": 99, "host": "n"}',
        b'{"protocol": "fructosa", "version": 1, "host": "n", "mac": 5}',
        b'{"protocol": "http"}',
        b"[1]",
        b"\xff",
    ):
        with pytest.raises(protocol.ProtocolError):
            protocol.check_hello(bad)


@given(st.binary(max_size=512))
def test_random_bytes_never_escape_as_anything_but_protocol_error(data: bytes) -> None:
    try:
        samples = protocol.decode_samples(data)
    except protocol.ProtocolError:
        return
    assert type(samples) is list


# -- per-frame budgets (hostile peers that hold the shared secret) ---------------------


def sample(value: object, sensor: str = "S") -> dict:
    return {"host": "n", "sensor": sensor, "time": 1.0, "value": value}


def test_memo_references_are_counted_expanded_against_the_frame_budget() -> None:
    one = sample(list(range(9_999)))
    assert protocol.count_values([one] * 19) <= protocol.MAX_VALUES_PER_FRAME
    protocol.decode_samples(pickle.dumps([one] * 19, protocol=2))
    bomb = pickle.dumps([one] * 200, protocol=2)  # ~30 KB asking for 2 million datapoints
    assert len(bomb) < 40_000
    with pytest.raises(protocol.ProtocolError, match=f"more than {protocol.MAX_VALUES_PER_FRAME} values"):
        protocol.decode_samples(bomb)


def test_distinct_large_samples_are_bounded_per_frame_too() -> None:
    batch = [sample([1] * 9_999, f"S{index}") for index in range(25)]
    with pytest.raises(protocol.ProtocolError, match="values in one frame"):
        protocol.decode_samples(pickle.dumps(batch, protocol=2))


shared_structures = st.recursive(
    st.integers(0, 3) | st.text(max_size=2),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=2), children, max_size=3),
    max_leaves=20,
)


def expanded_size(node: object) -> int:
    if isinstance(node, dict):
        return 1 + sum(expanded_size(child) for child in node.values())
    if isinstance(node, list):
        return 1 + sum(expanded_size(child) for child in node)
    return 1


@settings(deadline=None)
@given(shared_structures, st.integers(1, 4), st.integers(1, 4))
def test_count_values_is_the_size_with_every_reference_expanded(part: object, copies: int, nesting: int) -> None:
    structure: object = part
    for _ in range(nesting):
        structure = [structure] * copies  # shared references, as memo GETs build them
    decoded = protocol.loads_plain(pickle.dumps(structure, protocol=2))
    assert protocol.count_values(decoded, limit=10**9) == expanded_size(structure)


def test_containers_nesting_cycles_and_memo_indexes_are_bounded() -> None:
    many = b"\x80\x02(" + b"]" * (protocol.MAX_CONTAINERS_PER_FRAME + 1) + b"l."
    with pytest.raises(protocol.ProtocolError, match="containers in one frame"):
        protocol.decode_samples(many)
    marks = b"\x80\x02" + b"(" * (protocol.MAX_CONTAINERS_PER_FRAME + 1)
    with pytest.raises(protocol.ProtocolError, match="containers in one frame"):
        protocol.decode_samples(marks)
    deep: list = []
    for _ in range(protocol.MAX_NESTING + 1):
        deep = [deep]
    with pytest.raises(protocol.ProtocolError, match="nested deeper"):
        protocol.decode_samples(pickle.dumps(deep, protocol=2))
    with pytest.raises(protocol.ProtocolError, match="contains itself"):
        protocol.decode_samples(b"\x80\x02]q\x00h\x00a.")  # a list appended to itself
    for put in (b"p1048576\n", b"r\x00\x00\x10\x00", b"p-1\n", b"p" + str(2**61 - 1).encode() + b"\n"):
        with pytest.raises(protocol.ProtocolError, match="memo index|undecodable"):
            protocol.decode_samples(b"\x80\x02]" + put + b".")
    assert protocol.decode_samples(b"\x80\x02]r\xff\xff\x0f\x00.") == []  # the highest allowed index


hostile_keys = (
    st.integers().filter(lambda key: not 0 <= key < protocol.MAX_INT_KEY)
    | st.floats()
    | st.booleans()
    | st.binary(max_size=4)
    | st.none()
)


@given(hostile_keys, st.sampled_from(["setitem", "setitems", "dict"]))
def test_dict_keys_other_than_strings_or_small_ints_are_refused(key: object, opcode: str) -> None:
    pickled_key = pickle.dumps(key, protocol=3)[2:-1]  # without PROTO and STOP
    body = {
        "setitem": b"}" + pickled_key + b"K\x01s",
        "setitems": b"}(" + b"X\x01\x00\x00\x00aK\x01" + pickled_key + b"K\x01u",
        "dict": b"(" + pickled_key + b"K\x01d",
    }[opcode]
    with pytest.raises(protocol.ProtocolError, match="dict key is a"):
        protocol.decode_samples(b"\x80\x02]" + body + b"a.")


@given(st.dictionaries(st.text(max_size=5) | st.integers(0, protocol.MAX_INT_KEY - 1), st.floats(), max_size=8))
def test_string_and_small_integer_keys_decode(value: dict) -> None:
    batch = [sample(value)]
    decoded = protocol.decode_samples(pickle.dumps(batch, protocol=2))
    assert decoded[0]["value"].keys() == value.keys()


def test_colliding_integer_keys_are_refused_at_once() -> None:
    keys = b"".join(pickle.dumps(k * (2**61 - 1), protocol=2)[2:-1] + b"K\x01" for k in range(1, 70_001))
    started = time.process_time()
    with pytest.raises(protocol.ProtocolError, match="dict key is a int"):
        protocol.decode_samples(b"\x80\x02]}(" + keys + b"ua.")
    assert time.process_time() - started < 2.0


def test_a_batch_budget_bounds_flattening_across_samples() -> None:
    budget = FlattenBudget(25_000)
    out: list = []
    sample_to_datapoints(sample(list(range(9_999))), out=out, budget=budget)
    sample_to_datapoints(sample(list(range(9_999))), out=out, budget=budget)
    assert len(out) == 19_998
    with pytest.raises(SampleError, match="more than 25000 values in one batch"):
        sample_to_datapoints(sample(list(range(9_999))), out=out, budget=budget)
    assert len(out) == 19_998 and budget.left <= 0
    with pytest.raises(SampleError, match="in one batch"):
        sample_to_datapoints(sample(1.0), out=out, budget=budget)


def test_a_block_header_cannot_claim_more_samples_than_datapoints() -> None:
    block = Block.of([("n.s.a", (1.0, 2.0)), ("n.s.b", (1.0, 3.0))], samples=2**32 - 1)
    assert Block.decode(block.encode()).samples == 2
    assert Block.decode(Block.of([("n.s.a", (1.0, 2.0))], samples=1).encode()).samples == 1
    assert Block.decode(Block(samples=7).encode()).samples == 0


# -- hello --------------------------------------------------------------------------


def hello(host: object, **fields: object) -> bytes:
    return json.dumps({"protocol": "fructosa", "version": 1, "host": host, "nonce": "ab", **fields}).encode()


@pytest.mark.parametrize("host", ["node01", "gpu-node-3", "login_2", "N", "a" * 200])
def test_hello_accepts_clean_host_names(host: str) -> None:
    assert protocol.check_hello(hello(host, heartbeat=30.0, agent="lagent 1.0"))["host"] == host


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("good!", "not a Graphite path component"),
        ("good.evil.example", "not a Graphite path component"),
        ("_good", "not a Graphite path component"),
        ("good_", "not a Graphite path component"),
        ("_", "not a Graphite path component"),
        ("nöde", "not a Graphite path component"),
        ("a b", "not a Graphite path component"),
        ("a" * 201, "not a Graphite path component"),
        ("", "names no host"),
        (5, "names no host"),
        ("fructosa", "reserved"),
        ("FrUCToSA", "reserved"),
        ("carbon", "reserved"),
    ],
)
def test_hello_refuses_host_names_that_need_sanitizing_or_are_reserved(host: object, reason: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.check_hello(hello(host))


def test_hello_size_is_capped() -> None:
    padded = hello("node01", padding="x" * protocol.MAX_HELLO)
    with pytest.raises(protocol.ProtocolError, match=f"at most {protocol.MAX_HELLO}"):
        protocol.check_hello(padded)
    fitting = hello("node01", padding="x" * (protocol.MAX_HELLO - 200))
    assert len(fitting) <= protocol.MAX_HELLO
    assert protocol.check_hello(fitting)["host"] == "node01"


@given(st.text(min_size=1, max_size=30))
def test_every_accepted_host_is_its_own_sanitized_short_name(host: str) -> None:
    try:
        protocol.check_hello(hello(host))
    except protocol.ProtocolError:
        return
    assert short_hostname(host) == host and host.lower() not in protocol.RESERVED_HOSTS

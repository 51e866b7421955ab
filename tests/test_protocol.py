"""Wire protocol: frames, hello, and the restricted unpickler."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fructosa.wire import protocol


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

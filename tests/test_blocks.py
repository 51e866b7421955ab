"""Property tests of datapoint blocks (fructosa/wire/blocks.py).

lmaster trusts :func:`all_valid` (a handful of whole-block byte operations) to
let a block through unchecked, and :func:`filter_valid` to keep exactly the
valid datapoints of any other block. Both must agree with the plain
per-datapoint rule :func:`datapoint_problem` on anything a peer can send:
arbitrary paths (control characters, non-ASCII, empty components, huge),
times and values (NaN, infinities, out of whisper's range) and host prefixes.
:meth:`Block.decode` must refuse any byte string that is not a block with
:class:`BlockError` and nothing else.
"""

from __future__ import annotations

import math
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fructosa.graphite_paths import MAX_COMPONENT, MAX_TIMESTAMP
from fructosa.wire.blocks import (
    MAX_PATH_LENGTH,
    Block,
    BlockError,
    all_valid,
    check_block,
    concat,
    datapoint_problem,
    filter_valid,
)

PROPERTIES = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

COMPONENT_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
components = st.text(COMPONENT_CHARACTERS, min_size=1, max_size=12)
valid_paths = st.lists(components, min_size=1, max_size=5).map(".".join)
# Around both limits: a component whisper can make a file name of, a whole path.
long_paths = st.one_of(
    st.integers(MAX_COMPONENT - 1, MAX_COMPONENT + 2).map(lambda size: "x." + "c" * size),
    st.integers(MAX_PATH_LENGTH - 2, MAX_PATH_LENGTH + 2).map(
        lambda size: ("c" * 199 + ".") * 10 + "d" * (size - 2000)
    ),
)
valid_times = st.floats(min_value=0, max_value=MAX_TIMESTAMP, exclude_max=True)
valid_values = st.floats(allow_nan=False, allow_infinity=False)
valid_datapoints = st.tuples(valid_paths, st.tuples(valid_times, valid_values))

# Anything a hostile peer can put in one path (a newline separates paths, so it cannot be inside one).
ascii_paths = st.one_of(
    valid_paths,
    long_paths,
    st.text(st.characters(max_codepoint=127, blacklist_characters="\n"), max_size=20),
    st.lists(st.sampled_from(["", "a", "B-1", "x_y", " ", "\t", "\x00", "\x7f"]), max_size=4).map(".".join),
)
any_times = st.one_of(
    valid_times,
    st.floats(),
    st.sampled_from([-0.0, -1e-300, float(MAX_TIMESTAMP), MAX_TIMESTAMP - 1e-6, math.nan, math.inf, -math.inf]),
)
any_values = st.one_of(
    valid_values, st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1.7976931348623157e308])
)
host_prefixes = st.one_of(
    st.none(),
    components,
    st.sampled_from(["", "a.b", "node01", "fructosa", "carbon"]),
    st.text(st.characters(max_codepoint=127, blacklist_characters="\n"), max_size=6),
)
any_datapoints = st.tuples(ascii_paths, st.tuples(any_times, any_values))


def same_datapoints(got: list, expected: list) -> bool:
    """Equal datapoints, NaN equal to NaN (the same bits travel)."""
    if len(got) != len(expected):
        return False
    for (path, (when, value)), (path2, (when2, value2)) in zip(got, expected, strict=True):
        if path != path2 or struct.pack("<dd", when, value) != struct.pack("<dd", when2, value2):
            return False
    return True


def adds_up(datapoints: list) -> bool:
    """Whether the values' sum is finite: :func:`all_valid` leaves blocks whose
    values overflow when added (documented) to the datapoint-by-datapoint check."""
    return math.isfinite(2 * sum(abs(value) for _, (_, value) in datapoints))


def with_prefix(datapoints: list, prefix: str | None) -> list:
    """Half of the datapoints moved below ``prefix``: the host check must matter."""
    if prefix is None:
        return datapoints
    return [(f"{prefix}.{path}" if index % 2 else path, point) for index, (path, point) in enumerate(datapoints)]


@PROPERTIES
@given(st.lists(valid_datapoints, max_size=30), st.integers(0, 2**32 - 1))
def test_valid_datapoints_survive_encode_and_decode(datapoints: list, samples: int) -> None:
    block = Block.of(datapoints, samples)
    decoded = Block.decode(block.encode())
    assert decoded.samples == min(samples, len(datapoints))  # a header's count is capped by what it carries
    assert same_datapoints(decoded.datapoints(), datapoints)
    assert decoded.path_list() == [path for path, _ in datapoints]
    assert all_valid(decoded, None) or not adds_up(datapoints)
    assert check_block(decoded) == (decoded, [])


@PROPERTIES
@given(st.binary(max_size=600))
def test_decoding_arbitrary_bytes_raises_only_block_error(data: bytes) -> None:
    try:
        block = Block.decode(data)
    except BlockError:
        return
    assert len(block.times) == len(block.values)
    assert block.encode() == data


@PROPERTIES
@given(st.lists(any_datapoints, max_size=10), st.data())
def test_decoding_a_mutated_block_raises_only_block_error(datapoints: list, data: st.DataObject) -> None:
    encoded = bytearray(Block.of(datapoints, 1).encode())
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        action = data.draw(st.sampled_from(["flip", "truncate", "extend", "overwrite header"]))
        if action == "flip" and encoded:
            position = data.draw(st.integers(0, len(encoded) - 1))
            encoded[position] ^= data.draw(st.integers(1, 255))
        elif action == "truncate":
            del encoded[data.draw(st.integers(0, len(encoded))) :]
        elif action == "extend":
            encoded += data.draw(st.binary(min_size=1, max_size=40))
        elif len(encoded) >= 12:
            field = data.draw(st.integers(0, 2)) * 4
            encoded[field : field + 4] = struct.pack("<I", data.draw(st.integers(0, 2**32 - 1)))
    try:
        block = Block.decode(bytes(encoded))
    except BlockError:
        return
    assert block.encode()[4:] == bytes(encoded)[4:]  # all but the sample count, capped at the datapoints
    assert block.samples <= len(block)
    valid, _refusals = check_block(block)  # whatever decodes can be checked, and only valid datapoints pass
    assert all(datapoint_problem(path, when, value) is None for path, (when, value) in valid.datapoints())


def reference_check(datapoints: list, host_prefix: str | None) -> tuple[list, int]:
    """(the datapoints :func:`datapoint_problem` accepts, how many it refuses)."""
    keep = [
        (path, (when, value))
        for path, (when, value) in datapoints
        if datapoint_problem(path, when, value, host_prefix) is None
    ]
    return keep, len(datapoints) - len(keep)


def ascii_block(datapoints: list, samples: int = 3) -> Block:
    return Block.of(datapoints, samples)


@PROPERTIES
@given(st.lists(any_datapoints, max_size=12), host_prefixes)
def test_block_checks_agree_with_the_per_datapoint_rule(datapoints: list, host_prefix: str | None) -> None:
    datapoints = with_prefix(datapoints, host_prefix)
    block = Block.decode(ascii_block(datapoints).encode())  # as lmaster receives it
    expected, refused = reference_check(datapoints, host_prefix)
    for path, (when, value) in expected:  # what carbon can store, whisper can make files of
        assert all(0 < len(part) <= MAX_COMPONENT for part in path.split(".")) and len(path) <= MAX_PATH_LENGTH
        assert set(path) <= set(COMPONENT_CHARACTERS + ".") and 0 <= when < MAX_TIMESTAMP and math.isfinite(value)
        assert host_prefix is None or path.startswith(host_prefix + ".")

    if all_valid(block, host_prefix):  # the fast path never lets an invalid datapoint through...
        assert refused == 0
    else:  # ...and misses a valid block only when its values overflow when added up
        assert refused > 0 or not adds_up(datapoints)
    filtered, problems = filter_valid(block, host_prefix)
    assert same_datapoints(filtered.datapoints(), expected)
    assert len(problems) == refused
    assert filtered.samples == block.samples
    checked, check_problems = check_block(block, host_prefix)
    assert same_datapoints(checked.datapoints(), expected)
    assert len(check_problems) == refused
    assert checked.samples == block.samples
    # What passes is a block that passes the whole-block check as it is.
    if adds_up(expected):
        assert all_valid(checked, host_prefix)
        assert all_valid(Block.decode(checked.encode()), host_prefix)


@PROPERTIES
@given(st.lists(valid_datapoints, min_size=1, max_size=6), st.sampled_from([b"\xff", "é".encode(), b"\x80abc"]))
def test_a_non_ascii_path_gets_nothing_of_its_block_through(datapoints: list, junk: bytes) -> None:
    block = Block.of(datapoints, 2)
    block.paths = block.paths + junk
    assert not all_valid(block, None)
    for valid, problems in (filter_valid(block, None), check_block(block)):
        assert len(valid) == 0 and valid.samples == 2 and problems
        assert all_valid(valid, None)


@PROPERTIES
@given(st.lists(valid_datapoints, min_size=1, max_size=6), st.integers(-3, 3).filter(bool))
def test_more_or_fewer_paths_than_datapoints_get_nothing_through(datapoints: list, extra: int) -> None:
    """A path count that lies (newlines inside paths, paths missing) refuses the whole block."""
    block = Block.of(datapoints, 1)
    paths = block.path_list()
    paths = paths + ["x"] * extra if extra > 0 else paths[:extra]
    block.paths = "\n".join(paths).encode("ascii")
    assert not all_valid(block, None)
    valid, problems = check_block(block)
    assert len(valid) == 0 and problems
    assert all_valid(valid, None)


def test_paths_without_datapoints_are_dropped() -> None:
    """A block of no datapoints carrying path bytes anyway: those bytes must not travel on."""
    block = Block.decode(Block(b"fructosa.lmaster.spoofed", samples=1).encode())
    assert not all_valid(block, None)
    valid, _problems = check_block(block)
    assert len(valid) == 0 and valid.paths == b""
    assert all_valid(valid, None)


@PROPERTIES
@given(st.lists(any_datapoints, max_size=10), st.data())
def test_select_keeps_the_chosen_datapoints_in_order(datapoints: list, data: st.DataObject) -> None:
    block = ascii_block(datapoints)
    indices = data.draw(st.lists(st.integers(0, len(datapoints) - 1), max_size=12) if datapoints else st.just([]))
    selected = block.select(indices)
    assert same_datapoints(selected.datapoints(), [datapoints[index] for index in indices])


@PROPERTIES
@given(st.lists(st.tuples(st.lists(any_datapoints, max_size=6), st.integers(0, 1000)), max_size=6))
def test_concat_keeps_every_datapoint_in_order(parts: list) -> None:
    blocks = [ascii_block(datapoints, samples) for datapoints, samples in parts]
    joined = concat(blocks)
    assert same_datapoints(joined.datapoints(), [point for datapoints, _ in parts for point in datapoints])
    assert joined.samples == sum(samples for datapoints, samples in parts if datapoints)
    assert same_datapoints(Block.decode(joined.encode()).datapoints(), joined.datapoints())


@PROPERTIES
@given(
    st.lists(valid_datapoints, min_size=1, max_size=6),
    st.text(min_size=1, max_size=6).filter(lambda s: not s.isascii()),
)
def test_a_non_ascii_host_prefix_lets_nothing_through(datapoints: list, host_prefix: str) -> None:
    block = Block.of(datapoints, 1)
    assert not all_valid(block, host_prefix)
    valid, problems = check_block(block, host_prefix)
    assert len(valid) == 0 and len(problems) == len(datapoints)


@PROPERTIES
@given(st.lists(valid_datapoints, max_size=8), st.sampled_from(["", "graphite", "a.b"]))
def test_datapoints_with_a_prefix_are_the_paths_below_it(datapoints: list, prefix: str) -> None:
    block = Block.of(datapoints)
    expected = [(f"{prefix}.{path}" if prefix else path, point) for path, point in datapoints]
    assert same_datapoints(block.datapoints(prefix), expected)

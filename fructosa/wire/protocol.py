"""The agent → master wire protocol, version 1.

Everything on the connection is a *frame*::

    +----------------------+--------+-------------------------+
    | length: uint32, BE   | kind   | payload                 |
    | (kind + payload)     | 1 byte | length - 1 bytes        |
    +----------------------+--------+-------------------------+

``length`` counts the kind byte and the payload and must be between 1 and
:data:`MAX_FRAME` (1 MiB); a peer announcing more is disconnected before a
byte of the payload is read.

Frame kinds, in the order a session uses them:

``C`` challenge (master → agent, first frame, sent on accept)
    UTF-8 JSON: ``{"protocol": "fructosa", "version": 1, "nonce": HEX,
    "auth": true|false}``; ``nonce`` is 16 random bytes in hex, ``auth``
    says whether the master requires the shared secret.
``H`` hello (agent → master, mandatory first frame, at most :data:`MAX_HELLO` = 4 KiB)
    UTF-8 JSON: ``{"protocol": "fructosa", "version": 1, "host": "node01",
    "agent": "lagent 1.0.0", "heartbeat": 30.0, "nonce": HEX, "mac": HEX}``.
    ``host`` (required) is the agent's short host name and must already be a
    single Graphite path component: ``[A-Za-z0-9_-]``, 1 to 200 characters,
    no leading or trailing ``_``, no dots; ``fructosa`` and ``carbon`` (any
    case) are reserved. A name that would need sanitizing is refused, never
    rewritten, so two agents cannot end up writing the same series.
    ``agent`` (optional) names the software, at most 100 printable characters.
    ``heartbeat`` (optional) is the agent's heartbeat interval in seconds,
    ``0 < heartbeat < 86400``: the master counts the agent up while it hears
    from it within two intervals (other values are ignored). ``relay``
    (optional, ``true``) says the sender is an lmaster relaying other hosts'
    datapoints. ``facts`` (optional) is what the node is, sent once per
    connection: ``{"cpu": "x86_64", "cpus": 64, "memory_bytes": N,
    "boot_time": UNIX_TIME, "system": "Linux", "platform": "Linux-6.1.0-...",
    "gpus": 2, "gpu_models": ["NVIDIA H100 80GB HBM3", ...], "sensors":
    {"CPUPercent": 10.0, ...}}`` (``cpu`` is ``platform.machine()``,
    ``platform`` is ``platform.platform()``, ``gpus`` the number of GPU
    boards, ``gpu_models`` their names, one per board, ``sensors`` each
    sensor's current interval in seconds). The master keeps the fields of the right type and range
    (:func:`check_facts`), drops the others and ignores unknown ones, so a
    newer agent never fails an older master. ``nonce`` is the agent's random nonce in hex. With a shared
    secret, ``mac`` is HMAC-SHA256(secret, ``"fructosa-agent|" + master nonce
    + "|" + agent nonce + "|" + host``) in hex. The master checks it before it
    decodes anything else and closes the connection when it is wrong or missing.
``W`` welcome (master → agent, answer to the hello)
    UTF-8 JSON: ``{"protocol": "fructosa", "version": 1, "master": "lmaster
    1.0.0", "mac": HEX}`` where ``mac`` (only with a secret) is
    HMAC-SHA256(secret, ``"fructosa-master|" + agent nonce + "|" + master
    nonce``), so the agent knows the master holds the secret too; or
    ``{"error": "reason"}`` followed by close.
``D`` datapoints (agent → master; what lagent sends)
    24-byte batch id (as for ``S``), then a :class:`~fructosa.wire.blocks.Block`:
    the agent has flattened its samples into Graphite datapoints itself, all
    paths below its own short host name (below any host only for a relay,
    an lmaster that said ``"relay": true`` in its hello and is allowed to).
    The master checks the block as a whole (path syntax, host, finite
    values) and relays it; invalid datapoints are dropped and counted, the
    others go on. The block header's sample count only feeds statistics and
    is capped at the block's number of datapoints.
``S`` samples (agent → master; for simple third-party senders)
    16 bytes session id, 8 bytes sequence number (uint64 BE), then a pickle
    (protocol 2 to 5) of a list of samples ``{"host": str, "sensor": str,
    "time": float, "value": V}`` where ``V`` is built only from dict, list,
    tuple, str, int, float, bool and None (see :mod:`fructosa.graphite_paths`);
    dict keys are strings, or integers from 0 to 65,535 (CPU numbers).
    The session id is random per agent process; session and sequence name
    the batch for acknowledgement and duplicate detection, also when the
    batch is replayed from the agent's spool after a restart. The master
    decodes the pickle with :class:`~.plain_pickle.PlainDataUnpickler`, which
    knows only the opcodes of plain data (no globals, calls or object building)
    and builds tuples as lists, so a pickle can never run code or crash the decoder.
    Per frame it builds at most :data:`MAX_CONTAINERS_PER_FRAME` (100,000)
    lists, dicts and tuples and accepts memo indexes below 2**20; the decoded
    batch may hold at most :data:`MAX_VALUES_PER_FRAME` (200,000) values
    counting every shared (memo) reference each time it is reached, nested at
    most :data:`MAX_NESTING` (32) deep and never containing itself. A frame
    over any of these, or with any other dict key, is a protocol error.
``A`` acknowledgement (master → agent)
    One or more 24-byte batch ids (session + sequence). The master sends it
    once the batch is safe on its side: written to carbon or to its disk
    spool. Until then the agent keeps the batch and sends it again after a
    reconnect; the master drops a batch id it has already taken.
``B`` heartbeat (agent → master)
    UTF-8 JSON ``{"queued": N, "spooled": M}``: the agent's backlog (samples
    waiting in memory, batches in its disk spool), for lmaster's statistics;
    an empty or unreadable payload still counts as a sign of life. Sent when
    the agent has had nothing to send for its heartbeat interval, so the
    master can tell a quiet agent from a dead connection. When the sensors'
    intervals change (adaptive sampling, a reload), the agent sends one at
    once with ``"sensors": {NAME: SECONDS, ...}`` added, the hello's
    ``facts.sensors`` anew (and ``gpus`` and ``gpu_models`` when the GPUs
    became known after the hello); the master takes them from a heartbeat of at most
    :data:`MAX_HELLO` bytes, checked as in the hello (:func:`heartbeat_facts`).
    Riding on the heartbeat (not a frame kind of its own) keeps a newer agent
    working with an older master, which ignores fields it does not know.

A third party writing an agent needs only: connect over TCP (or TLS), read
``C``, send ``H``, read ``W``, then send ``S`` (or ``D``) frames and read ``A`` frames.
Unknown kinds are a protocol error.
"""

from __future__ import annotations

import json
import math
import struct

from ..graphite_paths import MAX_COMPONENT, MAX_VALUES_PER_BATCH, sanitize_component

PROTOCOL_NAME = "fructosa"
PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20
"""Largest frame (kind + payload) accepted, as carbon's own pickle receiver."""

MAX_HELLO = 4 << 10
"""Largest hello payload (bytes): its fields fit in a few hundred."""

MAX_CONTAINERS_PER_FRAME = 100_000
"""Lists, dicts, tuples and marks one ``S`` pickle may build. The most nested
honest sample, GPU on an 8-board node, has ~100 containers and ~190 leaves in
~3.5 KB of pickle, so a 1 MiB frame of them builds ~30,000 (lagent's batches
of ``MAX_SAMPLES_PER_BATCH`` = 1,000 samples are split to fit the frame);
TopProcesses has ~35, per-CPU CPUTimes one per CPU. 100,000 empty lists or
dicts cost under 7 MB, where a 1 MiB frame of them would cost 64 MB."""

MAX_VALUES_PER_FRAME = MAX_VALUES_PER_BATCH
"""Values (samples, containers and leaves, shared references counted each
time they are reached) in a decoded batch, so at most what flattening walks.
Honest frames stay well below: a 1 MiB frame of 8-GPU samples has ~90,000,
of per-CPU percentages (9-byte floats under memoized keys) ~95,000, and a
``D`` frame carries at most ~58,000 datapoints (18 bytes each at least).
A memo bomb (one 10,000-leaf sample referenced 200 times: 2 million values
from 30 KB) or a frame of many 10,000-leaf samples is refused before a
single datapoint is built; 200,000 datapoints would be ~70 MB in lmaster."""

MAX_NESTING = 32
"""Containers nested in a batch; flattening stops at 8 levels below a
sample's value (list → sample → value → 8 levels is 11)."""

MAX_MEMO_INDEX = MAX_FRAME
"""Memo slots a pickle may name: the pickler numbers the objects it stores
from 0, one per object, so a frame never needs more. Bounding them keeps the
memo a small dict (no hash collisions among its keys either)."""

MAX_INT_KEY = 1 << 16
"""Integer dict keys must lie in ``0 ≤ key < MAX_INT_KEY``: CPU numbers
(CPUPercent) and job slots (GPU) are small; a key that is any other type, or
an integer outside that range, is refused, so no chosen hash collision (ints
hash to themselves modulo 2**61 − 1) can make a dict quadratic. Strings hash
with a per-process random key."""

RESERVED_HOSTS = frozenset({"fructosa", "carbon"})
"""Host names an agent may not take: lmaster writes its own metrics (and
Slurm's) under ``fructosa.*``, carbon its own under ``carbon.*``."""

CHALLENGE = b"C"
HELLO = b"H"
WELCOME = b"W"
SAMPLES = b"S"
DATAPOINTS = b"D"
ACK = b"A"
HEARTBEAT = b"B"
KNOWN_KINDS = frozenset({CHALLENGE, HELLO, WELCOME, SAMPLES, DATAPOINTS, ACK, HEARTBEAT})
BATCH_ID_SIZE = 24
"""16-byte session id + 8-byte sequence number."""

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size
PAYLOAD_START = HEADER_SIZE + 1
"""Where a frame's payload starts (after its length and its kind): a ``D`` frame's batch id, then its block."""


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed."""


def loads_plain(data: bytes) -> object:
    """Plain data from a pickle; any other pickle raises (some Exception).

    The unpickler lives in :mod:`.plain_pickle`, imported on the first call:
    only ``S`` frames need :mod:`pickle`, and lagent sends ``D`` frames.
    """
    from .plain_pickle import loads_plain as load

    return load(data)


def count_values(root: object, limit: int = MAX_VALUES_PER_FRAME) -> int:
    """Values in ``root`` with every shared reference expanded, as a walk sees them.

    Raises ProtocolError past ``limit``, for a container that contains itself,
    or nesting deeper than :data:`MAX_NESTING`. Each container is counted
    once and its total remembered, so a memo bomb asking for billions of
    values costs as little to measure as it took to send.
    """
    totals: dict[int, int] = {}
    in_progress: set[int] = set()

    def total(node: object, depth: int) -> int:
        node_type = type(node)
        if node_type is not list and node_type is not dict:
            return 1
        key = id(node)
        known = totals.get(key)
        if known is not None:
            return known
        if key in in_progress:
            raise ProtocolError("a container that contains itself")
        if depth >= MAX_NESTING:
            raise ProtocolError(f"containers nested deeper than {MAX_NESTING} levels")
        in_progress.add(key)
        count = 1
        for child in node.values() if node_type is dict else node:  # type: ignore[union-attr]
            count += total(child, depth + 1)
            if count > limit:
                raise ProtocolError(f"more than {limit} values in one frame (shared references expanded)")
        in_progress.discard(key)
        totals[key] = count
        return count

    return total(root, 0)


def encode_frame(kind: bytes, payload: bytes) -> bytes:
    """A frame ready for the socket; raises ValueError when over the size cap."""
    if len(payload) + 1 > MAX_FRAME:
        raise ValueError(f"frame of {len(payload) + 1} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(payload) + 1) + kind + payload


def frame_head(kind: bytes, payload_size: int) -> bytes:
    """The first :data:`PAYLOAD_START` bytes of a frame whose payload has ``payload_size`` bytes
    (for a sender that joins the payload's pieces right behind it); ValueError when over the size cap."""
    if payload_size + 1 > MAX_FRAME:
        raise ValueError(f"frame of {payload_size + 1} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(payload_size + 1) + kind


def frame_length(header: bytes) -> int:
    """Length announced by a 4-byte header, checked against the cap."""
    (length,) = _HEADER.unpack(header)
    if length < 1 or length > MAX_FRAME:
        raise ProtocolError(f"frame length {length} outside 1..{MAX_FRAME}")
    return length


def split_frame(body: bytes) -> tuple[bytes, bytes]:
    """(kind, payload) of a frame body; raises ProtocolError for unknown kinds."""
    kind = body[:1]
    if kind not in KNOWN_KINDS:
        raise ProtocolError(f"unknown frame kind {kind!r}")
    return kind, body[1:]


def encode_json(kind: bytes, message: dict) -> bytes:
    return encode_frame(kind, json.dumps(message, separators=(",", ":")).encode())


def decode_json(payload: bytes) -> dict:
    try:
        message = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"malformed JSON message: {type(error).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("JSON message is not an object")
    return message


def check_version(message: dict, what: str) -> dict:
    """``message`` if it is a FrUCToSA message of our version, else ProtocolError."""
    if message.get("protocol") != PROTOCOL_NAME:
        raise ProtocolError(f"not a FrUCToSA {what}: protocol {message.get('protocol')!r}")
    if message.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('version')!r}")
    return message


def check_hello(payload: bytes) -> dict:
    """The hello's fields, or ProtocolError naming what is wrong with it."""
    if len(payload) > MAX_HELLO:
        raise ProtocolError(f"hello of {len(payload)} bytes (at most {MAX_HELLO})")
    message = check_version(decode_json(payload), "hello")
    host_problem = check_host_name(message.get("host"))
    if host_problem:
        raise ProtocolError(host_problem)
    agent = message.get("agent", "")
    if not isinstance(agent, str) or len(agent) > 100 or not agent.isprintable():
        raise ProtocolError("hello's agent field is not a short printable string")
    if not isinstance(message.get("nonce", ""), str) or not isinstance(message.get("mac", ""), str):
        raise ProtocolError("hello nonce and mac must be strings")
    message["facts"] = check_facts(message.get("facts"))
    return message


MAX_FACT_TEXT = 200
"""Characters of a text fact (``platform`` is the longest: distribution and kernel)."""
MAX_SENSORS = 256
"""Sensors a node may report intervals for; lagent has about thirty kinds."""
MAX_GPUS = 64
"""GPU model names a node may list (an 8-board node with MIG still names 8 boards)."""
MAX_INTERVAL = 7 * 86400.0
_FACT_TEXTS = ("cpu", "system", "platform")
_FACT_COUNTS = ("cpus", "memory_bytes", "gpus")


def check_facts(facts: object) -> dict:
    """The hello's ``facts`` (see the module docstring) as far as they make sense.

    Facts only inform: a field of the wrong type or out of range is dropped,
    never a reason to end the session, and unknown fields are ignored. What is
    kept is bounded: texts of printable characters up to :data:`MAX_FACT_TEXT`,
    non-negative integers below 2**63, a boot time that is a finite positive
    number, at most :data:`MAX_SENSORS` sensor intervals.
    """
    if not isinstance(facts, dict):
        return {}
    kept: dict = {}
    for name in _FACT_TEXTS:
        value = facts.get(name)
        if _is_text(value):
            kept[name] = value
    for name in _FACT_COUNTS:
        value = facts.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63:
            kept[name] = value
    boot_time = facts.get("boot_time")
    if _is_number(boot_time) and 0 < boot_time < 1e11:
        kept["boot_time"] = float(boot_time)
    models = facts.get("gpu_models")
    if isinstance(models, list) and len(models) <= MAX_GPUS and all(_is_text(model) for model in models):
        kept["gpu_models"] = list(models)
    sensors = check_sensor_intervals(facts.get("sensors"))
    if sensors is not None:
        kept["sensors"] = sensors
    return kept


def check_sensor_intervals(sensors: object) -> dict[str, float] | None:
    """``{sensor name: seconds}`` with valid names and intervals (others dropped), or None when not an object."""
    if not isinstance(sensors, dict) or len(sensors) > MAX_SENSORS:
        return None
    return {
        name: float(interval)
        for name, interval in sensors.items()
        if isinstance(name, str) and 0 < len(name) <= 64 and sanitize_component(name) == name
        and _is_number(interval) and 0 < interval <= MAX_INTERVAL
    }  # fmt: skip


HEARTBEAT_FACTS = ("sensors", "gpus", "gpu_models")
"""Facts that change while connected, which a heartbeat may bring anew."""


def heartbeat_facts(payload: bytes) -> dict:
    """The changed facts a heartbeat brings (:data:`HEARTBEAT_FACTS`), checked as in the hello; {} for none."""
    if len(payload) > MAX_HELLO or not any(f'"{name}"'.encode() in payload for name in HEARTBEAT_FACTS):
        return {}
    try:
        message = json.loads(payload)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(message, dict):
        return {}
    return check_facts({name: message[name] for name in HEARTBEAT_FACTS if name in message})


def _is_text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_FACT_TEXT and value.isprintable()


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_host_name(host: object) -> str | None:
    """Why ``host`` cannot name an agent, or None.

    It must already be one Graphite path component, exactly as flattening
    would write it (``[A-Za-z0-9_-]``, no leading or trailing ``_``, at most
    :data:`~fructosa.graphite_paths.MAX_COMPONENT` characters): a name that
    needs sanitizing (``good!``, ``good.evil.example``) could collide with
    another agent's, so it is refused, not rewritten. Names in
    :data:`RESERVED_HOSTS` (any case) belong to lmaster and carbon.
    """
    if not isinstance(host, str) or not host:
        return "hello names no host"
    shown = repr(host[:40]) + ("…" if len(host) > 40 else "")
    if len(host) > MAX_COMPONENT or not host.isascii() or sanitize_component(host) != host or host == "_":
        return (
            f"host {shown} is not a Graphite path component "
            f"(1-{MAX_COMPONENT} of A-Z a-z 0-9 _ -, no leading or trailing _, no dots: the short host name)"
        )
    if host.lower() in RESERVED_HOSTS:
        return f"host {shown} is reserved: lmaster and carbon write their own metrics under {host.lower()}.*"
    return None


def batch_id(session: bytes, sequence: int) -> bytes:
    return session + sequence.to_bytes(8, "big")


def encode_samples(samples: list[dict], session: bytes = bytes(16), sequence: int = 0) -> bytes:
    """One ``S`` frame; raises ValueError when the samples exceed the size cap."""
    import pickle  # only S frames need it (see loads_plain)

    pickled = pickle.dumps(samples, protocol=pickle.HIGHEST_PROTOCOL)
    return encode_frame(SAMPLES, batch_id(session, sequence) + pickled)


def split_batch(payload: bytes) -> tuple[bytes, bytes]:
    """(batch id, rest) of an ``S`` or ``D`` payload."""
    if len(payload) <= BATCH_ID_SIZE:
        raise ProtocolError("batch frame too short for a batch id")
    return payload[:BATCH_ID_SIZE], payload[BATCH_ID_SIZE:]


def decode_samples(pickled: bytes) -> list:
    """The list of samples in a pickle, refusing any non-plain pickle.

    ProtocolError also when the batch exceeds a per-frame budget
    (:data:`MAX_CONTAINERS_PER_FRAME` while unpickling,
    :data:`MAX_VALUES_PER_FRAME` once shared references are expanded), so
    flattening it afterwards can never build more than that many datapoints.
    """
    try:
        samples = loads_plain(pickled)
    except ProtocolError:
        raise
    except KeyError as error:  # the dispatch table does not know the opcode
        opcode = error.args[0] if error.args and isinstance(error.args[0], int) else -1
        raise ProtocolError(f"undecodable samples: pickle opcode 0x{opcode:02x} is not allowed") from None
    except Exception as error:  # any malformed pickle raises something different
        message = str(error)[:200]
        raise ProtocolError(f"undecodable samples: {type(error).__name__}: {message}") from None
    if type(samples) is not list:
        raise ProtocolError(f"samples payload is a {type(samples).__name__}, not a list")
    count_values(samples)
    return samples


def encode_acks(batch_ids: list[bytes]) -> bytes:
    return encode_frame(ACK, b"".join(batch_ids))


def decode_acks(payload: bytes) -> list[bytes]:
    if not payload or len(payload) % BATCH_ID_SIZE:
        raise ProtocolError(f"acknowledgement of {len(payload)} bytes is not a list of batch ids")
    return [payload[i : i + BATCH_ID_SIZE] for i in range(0, len(payload), BATCH_ID_SIZE)]

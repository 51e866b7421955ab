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
``H`` hello (agent → master, mandatory first frame)
    UTF-8 JSON: ``{"protocol": "fructosa", "version": 1, "host": "node01",
    "agent": "lagent 1.0.0", "nonce": HEX, "mac": HEX}``. With a shared
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
    others go on.
``S`` samples (agent → master; for simple third-party senders)
    16 bytes session id, 8 bytes sequence number (uint64 BE), then a pickle
    (protocol 2 to 5) of a list of samples ``{"host": str, "sensor": str,
    "time": float, "value": V}`` where ``V`` is built only from dict, list,
    tuple, str, int, float, bool and None (see :mod:`fructosa.graphite_paths`).
    The session id is random per agent process; session and sequence name
    the batch for acknowledgement and duplicate detection, also when the
    batch is replayed from the agent's spool after a restart. The master
    decodes the pickle with :class:`PlainDataUnpickler`, which knows only the
    opcodes of plain data (no globals, calls or object building) and builds
    tuples as lists, so a pickle can never run code or crash the decoder.
``A`` acknowledgement (master → agent)
    One or more 24-byte batch ids (session + sequence). The master sends it
    once the batch is safe on its side: written to carbon or to its disk
    spool. Until then the agent keeps the batch and sends it again after a
    reconnect; the master drops a batch id it has already taken.
``B`` heartbeat (agent → master)
    Empty; sent when the agent has had nothing to send for a while, so the
    master can tell a quiet agent from a dead connection.

A third party writing an agent needs only: connect over TCP (or TLS), read
``C``, send ``H``, read ``W``, then send ``S`` (or ``D``) frames and read ``A`` frames.
Unknown kinds are a protocol error.
"""

from __future__ import annotations

import io
import json
import pickle
import struct

PROTOCOL_NAME = "fructosa"
PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20
"""Largest frame (kind + payload) accepted, as carbon's own pickle receiver."""

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


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed."""


_PLAIN_OPCODES = (
    "PROTO FRAME STOP MARK POP POP_MARK NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4 "
    "FLOAT BINFLOAT UNICODE SHORT_BINUNICODE BINUNICODE BINUNICODE8 SHORT_BINBYTES BINBYTES BINBYTES8 "
    "EMPTY_DICT DICT SETITEM SETITEMS EMPTY_LIST LIST APPEND APPENDS "
    "PUT BINPUT LONG_BINPUT MEMOIZE GET BINGET LONG_BINGET"
).split()
_TUPLE_OPCODES = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}


def _opcode(name: str) -> int:
    return getattr(pickle, name)[0]


class PlainDataUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """Unpickles plain data only, with a fixed allow-list of opcodes.

    Built on the pure-Python unpickler, because the C one cannot be made safe
    for hostile input: it calls ``find_class`` only for globals, but it also
    hashes dict keys recursively (a tuple nested a million deep as a key
    crashes the process; a 150-byte tuple DAG hashes for ever) and sizes its
    memo by whatever index a PUT names (10 bytes can ask for gigabytes).
    Here every opcode that names a global, calls, builds objects or extends
    the copy registry is simply unknown, tuples are built as lists (so they
    can never be dict keys), and the memo is a dict.
    """

    dispatch = {_opcode(name): pickle._Unpickler.dispatch[_opcode(name)] for name in _PLAIN_OPCODES}

    def _load_tuple(self) -> None:
        items = self.pop_mark()  # switches self.append to the outer stack
        self.append(items)

    def _load_small_tuple(size: int):  # noqa: N805  (builds methods below)
        def load(self: PlainDataUnpickler) -> None:
            if size:
                items = self.stack[-size:]
                del self.stack[-size:]
            else:
                items = []
            self.append(items)

        return load

    dispatch[_opcode("TUPLE")] = _load_tuple
    for _name, _size in _TUPLE_OPCODES.items():
        dispatch[_opcode(_name)] = _load_small_tuple(_size)
    del _name, _size

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def loads_plain(data: bytes) -> object:
    """Plain data from a pickle; any other pickle raises (some Exception)."""
    unpickler = PlainDataUnpickler(io.BytesIO(data))
    return unpickler.load()


def encode_frame(kind: bytes, payload: bytes) -> bytes:
    """A frame ready for the socket; raises ValueError when over the size cap."""
    if len(payload) + 1 > MAX_FRAME:
        raise ValueError(f"frame of {len(payload) + 1} bytes exceeds {MAX_FRAME}")
    return _HEADER.pack(len(payload) + 1) + kind + payload


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
    message = check_version(decode_json(payload), "hello")
    host = message.get("host")
    if not isinstance(host, str) or not 0 < len(host) <= 255 or not host.isprintable() or " " in host:
        raise ProtocolError("hello names no usable host (1-255 printable characters, no spaces)")
    agent = message.get("agent", "")
    if not isinstance(agent, str) or len(agent) > 100 or not agent.isprintable():
        raise ProtocolError("hello's agent field is not a short printable string")
    if not isinstance(message.get("nonce", ""), str) or not isinstance(message.get("mac", ""), str):
        raise ProtocolError("hello nonce and mac must be strings")
    return message


def batch_id(session: bytes, sequence: int) -> bytes:
    return session + sequence.to_bytes(8, "big")


def encode_samples(samples: list[dict], session: bytes = bytes(16), sequence: int = 0) -> bytes:
    """One ``S`` frame; raises ValueError when the samples exceed the size cap."""
    pickled = pickle.dumps(samples, protocol=pickle.HIGHEST_PROTOCOL)
    return encode_frame(SAMPLES, batch_id(session, sequence) + pickled)


def split_batch(payload: bytes) -> tuple[bytes, bytes]:
    """(batch id, rest) of an ``S`` or ``D`` payload."""
    if len(payload) <= BATCH_ID_SIZE:
        raise ProtocolError("batch frame too short for a batch id")
    return payload[:BATCH_ID_SIZE], payload[BATCH_ID_SIZE:]


def decode_samples(pickled: bytes) -> list:
    """The list of samples in a pickle, refusing any non-plain pickle."""
    try:
        samples = loads_plain(pickled)
    except KeyError as error:  # the dispatch table does not know the opcode
        opcode = error.args[0] if error.args and isinstance(error.args[0], int) else -1
        raise ProtocolError(f"undecodable samples: pickle opcode 0x{opcode:02x} is not allowed") from None
    except Exception as error:  # any malformed pickle raises something different
        message = str(error)[:200]
        raise ProtocolError(f"undecodable samples: {type(error).__name__}: {message}") from None
    if type(samples) is not list:
        raise ProtocolError(f"samples payload is a {type(samples).__name__}, not a list")
    return samples


def encode_acks(batch_ids: list[bytes]) -> bytes:
    return encode_frame(ACK, b"".join(batch_ids))


def decode_acks(payload: bytes) -> list[bytes]:
    if not payload or len(payload) % BATCH_ID_SIZE:
        raise ProtocolError(f"acknowledgement of {len(payload)} bytes is not a list of batch ids")
    return [payload[i : i + BATCH_ID_SIZE] for i in range(0, len(payload), BATCH_ID_SIZE)]

"""The agent → master wire protocol, version 1.

Everything on the connection is a *frame*::

    +----------------------+--------+-------------------------+
    | length: uint32, BE   | kind   | payload                 |
    | (kind + payload)     | 1 byte | length - 1 bytes        |
    +----------------------+--------+-------------------------+

``length`` counts the kind byte and the payload and must be between 1 and
:data:`MAX_FRAME` (1 MiB); a peer announcing more is disconnected before a
byte of the payload is read.

Frame kinds:

``H`` hello (agent → master, first frame, mandatory)
    UTF-8 JSON object: ``{"protocol": "fructosa", "version": 1,
    "host": "node01", "agent": "lagent 1.0.0"}``. The master closes the
    connection if no hello arrives within a few seconds or if the version is
    not one it speaks.
``W`` welcome (master → agent, reply to a hello)
    UTF-8 JSON object: ``{"protocol": "fructosa", "version": 1,
    "master": "lmaster 1.0.0"}``, or ``{"error": "reason"}`` followed by close.
``S`` samples (agent → master)
    A pickle (protocol 2 to 5) of a list of samples, each
    ``{"host": str, "sensor": str, "time": float, "value": V}`` where ``V``
    is built only from dict, list, tuple, str, int, float, bool and None
    (see :mod:`fructosa.graphite_paths` for how ``V`` becomes paths). The
    master decodes it with :class:`PlainDataUnpickler`, which refuses every
    global, so a pickle can never name a class or call a function.

A third party writing an agent needs only: connect over TCP, send ``H``,
read ``W``, then send ``S`` frames. Unknown kinds are a protocol error.
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

HELLO = b"H"
WELCOME = b"W"
SAMPLES = b"S"
KNOWN_KINDS = frozenset({HELLO, WELCOME, SAMPLES})

_HEADER = struct.Struct("!I")
HEADER_SIZE = _HEADER.size


class ProtocolError(Exception):
    """The peer broke the protocol; the connection must be closed."""


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any global lookup is refused.

    Protocol 2+ pickles encode dict, list, tuple, str, bytes, int, float,
    bool and None with their own opcodes, so refusing ``find_class`` leaves
    exactly those; ``__reduce__`` payloads need a callable and cannot load.
    """

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not allowed")


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
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError(f"malformed JSON message: {error}") from None
    if not isinstance(message, dict):
        raise ProtocolError("JSON message is not an object")
    return message


def hello(host: str, agent: str) -> bytes:
    return encode_json(
        HELLO,
        {"protocol": PROTOCOL_NAME, "version": PROTOCOL_VERSION, "host": host, "agent": agent},
    )


def check_hello(payload: bytes) -> dict:
    """The hello's fields, or ProtocolError naming what is wrong with it."""
    message = decode_json(payload)
    if message.get("protocol") != PROTOCOL_NAME:
        raise ProtocolError(f"not a FrUCToSA hello: protocol {message.get('protocol')!r}")
    if message.get("version") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('version')!r}")
    if not isinstance(message.get("host"), str) or not message["host"]:
        raise ProtocolError("hello names no host")
    return message


def encode_samples(samples: list[dict]) -> bytes:
    """One ``S`` frame; raises ValueError when the samples exceed the size cap."""
    return encode_frame(SAMPLES, pickle.dumps(samples, protocol=pickle.HIGHEST_PROTOCOL))


def decode_samples(payload: bytes) -> list:
    """The list of samples in an ``S`` payload, refusing any non-plain pickle.

    The unpickler reads through a BufferedReader: with a bare BytesIO the C
    unpickler falls back to slow per-opcode reads (about 4x slower).
    """
    try:
        samples = PlainDataUnpickler(io.BufferedReader(io.BytesIO(payload))).load()
    except Exception as error:  # any malformed pickle raises something different
        raise ProtocolError(f"undecodable samples: {type(error).__name__}: {error}") from None
    if type(samples) is not list:
        raise ProtocolError(f"samples payload is a {type(samples).__name__}, not a list")
    return samples

"""The bounded unpickler of ``S`` frames: plain data only, within per-frame budgets.

Its own module because only ``S`` frames (simple senders' pickled samples,
decoded by lmaster) need :mod:`pickle`, which costs every process that
imports it ~0.4 MB; lagent sends ``D`` frames and never imports this.
:func:`fructosa.wire.protocol.loads_plain` loads it on the first ``S`` frame.
"""

from __future__ import annotations

import io
import pickle

from .protocol import MAX_CONTAINERS_PER_FRAME, MAX_INT_KEY, MAX_MEMO_INDEX, ProtocolError

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
    """Unpickles plain data only, with a fixed allow-list of opcodes and per-frame budgets.

    Built on the pure-Python unpickler, because the C one cannot be made safe
    for hostile input: it calls ``find_class`` only for globals, but it also
    hashes dict keys recursively (a tuple nested a million deep as a key
    crashes the process; a 150-byte tuple DAG hashes for ever) and sizes its
    memo by whatever index a PUT names (10 bytes can ask for gigabytes).
    Here every opcode that names a global, calls, builds objects or extends
    the copy registry is simply unknown, tuples are built as lists (so they
    can never be dict keys), dict keys must be strings or small integers
    (:data:`MAX_INT_KEY`: no chosen hash collisions), memo indexes stay below
    :data:`MAX_MEMO_INDEX`, and at most :data:`MAX_CONTAINERS_PER_FRAME`
    containers are built. Limits raise :class:`ProtocolError`.
    """

    dispatch = {_opcode(name): pickle._Unpickler.dispatch[_opcode(name)] for name in _PLAIN_OPCODES}

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.containers_left = MAX_CONTAINERS_PER_FRAME

    def _built(self) -> None:
        self.containers_left -= 1
        if self.containers_left < 0:
            raise ProtocolError(f"more than {MAX_CONTAINERS_PER_FRAME} containers in one frame")

    def _load_tuple(self) -> None:
        items = self.pop_mark()  # switches self.append to the outer stack
        self.append(items)

    def _load_small_tuple(size: int):  # noqa: N805  (builds methods below)
        def load(self: PlainDataUnpickler) -> None:
            self._built()
            if size:
                items = self.stack[-size:]
                del self.stack[-size:]
            else:
                items = []
            self.append(items)

        return load

    def _load_mark(self) -> None:
        self._built()  # a mark holds a list (the stack below it) until it is popped
        pickle._Unpickler.load_mark(self)

    def _load_empty_list(self) -> None:
        self._built()
        self.append([])

    def _load_empty_dict(self) -> None:
        self._built()
        self.append({})

    def _load_dict(self) -> None:
        items = self.pop_mark()
        keys = items[0::2]
        _check_keys(keys)
        self.append(dict(zip(keys, items[1::2], strict=True)))

    def _load_setitem(self) -> None:
        stack = self.stack
        value = stack.pop()
        key = stack.pop()
        _check_keys((key,))
        stack[-1][key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        keys = items[0::2]
        _check_keys(keys)
        target = self.stack[-1]
        for key, value in zip(keys, items[1::2], strict=True):
            target[key] = value

    def _load_put(self) -> None:
        self._memoize(int(self.readline()[:-1]))

    def _load_binput(self) -> None:
        self._memoize(self.read(1)[0])

    def _load_long_binput(self) -> None:
        self._memoize(int.from_bytes(self.read(4), "little"))

    def _memoize(self, index: int) -> None:
        if not 0 <= index < MAX_MEMO_INDEX:
            raise ProtocolError(f"memo index {str(index)[:20]} outside 0..{MAX_MEMO_INDEX - 1}")
        self.memo[index] = self.stack[-1]

    dispatch[_opcode("TUPLE")] = _load_tuple
    for _name, _size in _TUPLE_OPCODES.items():
        dispatch[_opcode(_name)] = _load_small_tuple(_size)
    del _name, _size
    dispatch[_opcode("MARK")] = _load_mark
    dispatch[_opcode("EMPTY_LIST")] = _load_empty_list
    dispatch[_opcode("EMPTY_DICT")] = _load_empty_dict
    dispatch[_opcode("DICT")] = _load_dict
    dispatch[_opcode("SETITEM")] = _load_setitem
    dispatch[_opcode("SETITEMS")] = _load_setitems
    dispatch[_opcode("PUT")] = _load_put
    dispatch[_opcode("BINPUT")] = _load_binput
    dispatch[_opcode("LONG_BINPUT")] = _load_long_binput

    def find_class(self, module: str, name: str) -> object:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _check_keys(keys: list) -> None:
    for key in keys:
        key_type = type(key)
        if key_type is str or (key_type is int and 0 <= key < MAX_INT_KEY):
            continue
        shown = f"int {str(key)[:20]}" if key_type is int else key_type.__name__
        raise ProtocolError(f"dict key is a {shown}: keys must be strings or integers 0..{MAX_INT_KEY - 1}")


def loads_plain(data: bytes) -> object:
    """Plain data from a pickle; any other pickle raises (some Exception)."""
    unpickler = PlainDataUnpickler(io.BytesIO(data))
    return unpickler.load()

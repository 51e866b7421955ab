"""A counting carbon sink: what relays deliver, counted on arrival.

One process (pinned to the load core) listens on two loopback ports: the
carbon pickle protocol (4-byte big-endian length + pickle of
``[(path, (timestamp, value)), …]``, as lmaster and carbon-relay write it)
and the plaintext protocol (``path value timestamp\\n``, as carbon-c-relay and
collectd write it). It counts datapoints, leaving out names that start with
``carbon.`` (the relays' own statistics) and lmaster's liveness paths
(``HOST.fructosa.…``) and lmaster's own series (``fructosa.…``: alarm levels,
Slurm's state), which are counted apart as "other".

For the fan-in benchmark it can also record, for every datapoint whose path
ends with a given suffix, the delay ``arrival time − datapoint timestamp``
(the simulated agents stamp each sample with its send time, and lmaster
passes the timestamp through unchanged).

The pickles come from relays this benchmark started on 127.0.0.1, so the
sink unpickles them with ``pickle.loads``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import pickle
import socket
import struct
import time
from array import array

from .measure import LOAD_CPU, pin_self, wait_until

_COUNTED, _OTHER, _FRAMES, _BYTES, _CONNECTIONS, _LAST = range(6)
_LENGTH = struct.Struct("!L")


def _excluded(path: str) -> bool:
    return path.startswith(("carbon.", "fructosa.")) or ".fructosa." in path


class _State:
    """Counters shared with the parent, and the recorded delays."""

    def __init__(self, counters: multiprocessing.sharedctypes.SynchronizedArray, delay_suffix: str | None) -> None:
        self.counters = counters
        self.delay_suffix = delay_suffix
        self.delays: array[float] = array("d")

    def take_pickle(self, frame: bytes) -> None:
        datapoints = pickle.loads(frame)
        counted = len(datapoints)
        if b"carbon." in frame or b"fructosa." in frame:
            counted = sum(1 for path, _ in datapoints if not _excluded(path))
        counters = self.counters
        counters[_COUNTED] += counted
        counters[_OTHER] += len(datapoints) - counted
        counters[_FRAMES] += 1
        counters[_BYTES] += len(frame) + 4
        now = time.time()
        counters[_LAST] = now
        suffix = self.delay_suffix
        if suffix is not None:
            append = self.delays.append
            for path, (timestamp, _) in datapoints:
                if path.endswith(suffix):
                    append(now)
                    append(now - timestamp)

    def take_lines(self, chunk: bytes) -> None:
        """``chunk`` holds whole lines only and starts at the start of one."""
        lines = chunk.count(b"\n")
        other = (
            chunk.count(b"\ncarbon.") + chunk.startswith(b"carbon.") + chunk.count(b".fructosa.")
            + chunk.count(b"\nfructosa.") + chunk.startswith(b"fructosa.")
        )  # fmt: skip
        counters = self.counters
        counters[_COUNTED] += lines - other
        counters[_OTHER] += other
        counters[_FRAMES] += 1
        counters[_BYTES] += len(chunk)
        counters[_LAST] = time.time()


class _PickleReceiver(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self.state = state
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.state.counters[_CONNECTIONS] += 1

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        position, end = 0, len(buffer)
        while end - position >= 4:
            (length,) = _LENGTH.unpack_from(buffer, position)
            if end - position - 4 < length:
                break
            self.state.take_pickle(bytes(buffer[position + 4 : position + 4 + length]))
            position += 4 + length
        del buffer[:position]


class _LineReceiver(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self.state = state
        self.rest = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.state.counters[_CONNECTIONS] += 1

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        cut = data.rfind(b"\n") + 1
        if cut:
            self.state.take_lines(data[:cut])
        self.rest = data[cut:]


def _serve(
    pickle_sock: socket.socket,
    line_sock: socket.socket,
    counters: multiprocessing.sharedctypes.SynchronizedArray,
    control: multiprocessing.connection.Connection,
    delay_suffix: str | None,
    cpus: set[int],
) -> None:
    pin_self(cpus)
    state = _State(counters, delay_suffix)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: _PickleReceiver(state), sock=pickle_sock)
        await loop.create_server(lambda: _LineReceiver(state), sock=line_sock)
        stop = asyncio.Event()

        def command() -> None:
            request = control.recv()
            if request == "delays":
                control.send(state.delays.tobytes())
            elif request == "reset":
                state.delays = array("d")
                control.send(None)
            else:
                stop.set()

        loop.add_reader(control.fileno(), command)
        await stop.wait()

    asyncio.run(main())


class CountingSink:
    """The sink in its own process; ``counted`` and friends read its live counters."""

    def __init__(self, delay_suffix: str | None = None, cpus: set[int] = LOAD_CPU) -> None:
        self.counters = multiprocessing.RawArray("d", 6)
        self._control, child_end = multiprocessing.Pipe()
        sockets = []
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(1024)
            sockets.append(sock)
        self.pickle_port, self.line_port = (sock.getsockname()[1] for sock in sockets)
        self.process = multiprocessing.Process(
            target=_serve, args=(*sockets, self.counters, child_end, delay_suffix, cpus), daemon=True, name="sink"
        )
        self.process.start()
        for sock in sockets:
            sock.close()

    @property
    def counted(self) -> int:
        return int(self.counters[_COUNTED])

    @property
    def other(self) -> int:
        return int(self.counters[_OTHER])

    @property
    def connections(self) -> int:
        return int(self.counters[_CONNECTIONS])

    @property
    def last_arrival(self) -> float:
        return self.counters[_LAST]

    def wait_drained(self, expected: int, quiet: float, timeout: float) -> float:
        """Wait until ``expected`` datapoints arrived, or nothing arrived for
        ``quiet`` seconds, or ``timeout``; returns the seconds waited."""
        started = time.monotonic()
        state = {"count": self.counted, "since": started}

        def done() -> bool:
            count, now = self.counted, time.monotonic()
            if count != state["count"]:
                state["count"], state["since"] = count, now
            return count >= expected or now - state["since"] >= quiet

        wait_until(done, timeout, poll=0.1)
        return time.monotonic() - started

    def reset_delays(self) -> None:
        self._control.send("reset")
        self._control.recv()

    def delays(self) -> list[tuple[float, float]]:
        """(arrival time, delay) of each recorded datapoint since the last reset."""
        self._control.send("delays")
        values = array("d")
        values.frombytes(self._control.recv())
        return list(zip(values[0::2], values[1::2], strict=True))

    def stop(self) -> None:
        if self.process.is_alive():
            self._control.send("stop")
            self.process.join(5)
        if self.process.is_alive() and self.process.pid is not None:
            self.process.terminate()  # our own child, by its PID
            self.process.join(5)

    def __enter__(self) -> CountingSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

"""A frame written straight to a plain TCP socket, as asyncio's transport would write it.

An agent sends one frame per tick into a connection whose transport holds nothing: the
transport's ``write`` would then call ``send`` on the socket itself and return. Doing that here
(one ``write`` on the descriptor) spares the transport's and the stream writer's Python on a path
that runs every second. Anything else is handed to the transport, as if it had been asked
first: the rest of a frame the kernel took in part, or none of it (the transport buffers it and
waits for the socket), or the whole frame after an error (the transport tries once more and
handles what it meets: a broken connection ends, with the same loss reported to its protocol).
"""

from __future__ import annotations

import asyncio
import os


def write_frame(transport: asyncio.WriteTransport, fd: int, frame: bytes) -> bool:
    """``transport.write(frame)`` into a transport whose buffer is empty (the caller checked),
    straight to its socket ``fd`` (``fd`` < 0: over TLS, where only the transport can write).
    Whether the socket took all of it here: the transport is as it was, still empty and open,
    so the caller may write the next frame the same way without asking it again."""
    if fd >= 0:
        try:
            sent = os.write(fd, frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            transport.write(frame)  # tried again, and an error handled as the transport handles it
            return False
        if sent == len(frame):
            return True
        frame = frame[sent:]
    transport.write(frame)
    return False

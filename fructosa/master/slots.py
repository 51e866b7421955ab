"""Who gets a connection slot in lmaster: two budgets, so strangers cannot lock agents out.

A connection is *opening* from its accept until its hello is verified, then
*authenticated*. The two are counted apart:

* authenticated connections count against ``[lmaster] max connections``; a
  new connection is closed at once while they are all taken, and a verified
  hello beyond them is refused with an error welcome;
* opening connections count against ``[lmaster] max unauthenticated``. Past
  it, a new connection is never refused: the oldest opening connection of
  the address holding the most opening connections is dropped instead (as
  sshd's MaxStartups drops the oldest). A peer that squats sockets from one
  address, reconnecting as soon as it is cut, only ever drops its own; even
  spread over many addresses it drops the oldest, so an agent that
  completes its hello within a round of new connections always gets in.

The budgets count tasks (one per connection); the server cancels the task
of a dropped connection.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Opening:
    """A connection that has not completed its hello yet."""

    task: asyncio.Task
    ip: str
    address: str
    order: int
    """Its rank in arrival order (older is smaller)."""


class ConnectionSlots:
    """The opening and authenticated connections of one server; see the module docstring."""

    def __init__(self) -> None:
        self._opening: dict[str, OrderedDict[asyncio.Task, Opening]] = {}
        """By address, each in arrival order."""
        self._opening_count = 0
        self._arrivals = 0
        self._authenticated: set[asyncio.Task] = set()

    @property
    def opening(self) -> int:
        return self._opening_count

    @property
    def authenticated(self) -> int:
        return len(self._authenticated)

    def arrive(self, task: asyncio.Task, ip: str, address: str, max_opening: int) -> list[Opening]:
        """Count a new connection as opening; the opening connections to drop to stay within ``max_opening``."""
        self._arrivals += 1
        self._opening.setdefault(ip, OrderedDict())[task] = Opening(task, ip, address, self._arrivals)
        self._opening_count += 1
        dropped: list[Opening] = []
        while self._opening_count > max_opening:
            dropped.append(self._drop_one())
        return dropped

    def _drop_one(self) -> Opening:
        """The oldest opening connection of the address holding the most (of those, the one waiting longest)."""
        most = max(len(connections) for connections in self._opening.values())
        candidates = [next(iter(connections.values())) for connections in self._opening.values()
                      if len(connections) == most]  # fmt: skip
        oldest = min(candidates, key=lambda opening: opening.order)
        self._forget_opening(oldest.task, oldest.ip)
        return oldest

    def authenticate(self, task: asyncio.Task, ip: str, max_authenticated: int) -> bool:
        """Move a connection whose hello is verified to the authenticated ones; False when they are all taken."""
        if len(self._authenticated) >= max_authenticated:
            return False
        self._forget_opening(task, ip)
        self._authenticated.add(task)
        return True

    def leave(self, task: asyncio.Task, ip: str) -> None:
        """The connection ended (at any stage)."""
        self._forget_opening(task, ip)
        self._authenticated.discard(task)

    def _forget_opening(self, task: asyncio.Task, ip: str) -> None:
        connections = self._opening.get(ip)
        if connections is None or connections.pop(task, None) is None:
            return
        self._opening_count -= 1
        if not connections:
            del self._opening[ip]

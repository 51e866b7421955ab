"""Telling the world about alarm transitions, without ever holding up the relay.

Per transition (from :class:`~.evaluator.AlarmEvaluator`):

* one log line (WARNING when firing, INFO otherwise), once;
* ``on_event(dict)``: the live stream (the HTTP server's push channel);
* a graphite-web event (``events url``) tagged ``fructosa alarm NAME HOST``
  for pending → firing and firing → resolved, which Grafana draws as
  annotations;
* a webhook POST (``webhook``) with Alertmanager-style fields ``status``,
  ``labels``, ``annotations``, ``startsAt``, ``endsAt`` for the same two.

And per tick, the datapoints ``fructosa.alarms.NAME.firing`` (how many keys
fire; 0 when none) through ``emit``, the master's own-datapoint path.

HTTP deliveries go through a bounded queue served by one asyncio task
(:meth:`Notifier.run`): 5 s timeout, three retries with backoff, failures
logged (rate-limited) and counted; when the queue is full the newest
delivery is dropped and counted, so a dead webhook costs memory of at most
``queue size`` deliveries and no time at all on the relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..graphite_paths import Datapoint
from ..ratelog import RateLimitedLog
from .evaluator import Transition
from .rules import CLUSTER_KEY, slug

log = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's "not ended" time."""


@dataclass(frozen=True)
class NotifySettings:
    webhook: str | None = None
    events_url: str | None = None
    timeout: float = 5.0
    retries: int = 3
    backoff: float = 1.0
    """Seconds before the first retry, doubled each time."""
    queue_size: int = 1000


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_of(transition: Transition) -> dict[str, Any]:
    """The transition as the live stream and the API show it."""
    rule = transition.rule
    return {
        "alarm": rule.name,
        "key": transition.key,
        "target": rule.target,
        "from": transition.old,
        "to": transition.new,
        "value": transition.value,
        "since": transition.since,
        "severity": rule.severity,
        "firing": transition.firing,
    }


def webhook_body(transition: Transition) -> dict[str, Any]:
    rule = transition.rule
    labels = {"alertname": rule.name, "severity": rule.severity, "target": rule.target, "source": "fructosa"}
    if rule.target == "node":
        labels["node"] = transition.key
    elif rule.target == "job":
        labels["job"] = transition.key
    firing = transition.new == "firing"
    value = "no data" if transition.value is None else f"{transition.value:g}"
    return {
        "status": "firing" if firing else "resolved",
        "labels": labels,
        "annotations": {"summary": f"{rule.pretty} ({transition.key}: {value})", "value": value},
        "startsAt": iso(transition.since) if firing else ZERO_TIME,
        "endsAt": ZERO_TIME if firing else iso(transition.since),
    }


def graphite_event(transition: Transition) -> dict[str, Any]:
    rule = transition.rule
    where = "the cluster" if transition.key == CLUSTER_KEY else transition.key
    verb = "firing" if transition.new == "firing" else "resolved"
    return {
        "what": f"alarm {rule.name} {verb} on {where}",
        "tags": ["fructosa", "alarm", rule.slug, slug(transition.key)],
        "when": int(transition.since),
        "data": rule.pretty + ("" if transition.value is None else f"; value {transition.value:g}"),
    }


class Notifier:
    """See the module docstring."""

    def __init__(
        self,
        settings: NotifySettings | None = None,
        emit: Callable[[list[Datapoint]], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.settings = settings or NotifySettings()
        self.emit = emit
        self.on_event = on_event
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(self.settings.queue_size)
        self.counters = {"delivered": 0, "failed": 0, "dropped": 0, "attempts": 0}
        self._errors = RateLimitedLog(log, period=300.0)

    def transition(self, transition: Transition) -> None:
        rule = transition.rule
        level = logging.WARNING if transition.new == "firing" else logging.INFO
        value = "no data" if transition.value is None else f"{transition.value:g}"
        log.log(level, "alarm %s on %s: %s → %s (value %s; %s)", rule.name, transition.key, transition.old,
                transition.new, value, rule.pretty)  # fmt: skip
        if self.on_event is not None:
            try:
                self.on_event(event_of(transition))
            except Exception:
                log.exception("alarm live stream callback failed")
        if (transition.old, transition.new) not in (("pending", "firing"), ("ok", "firing"), ("resolved", "firing"),
                                                    ("firing", "resolved")):  # fmt: skip
            return
        if self.settings.events_url:
            self._enqueue(self.settings.events_url, graphite_event(transition))
        if self.settings.webhook:
            self._enqueue(self.settings.webhook, webhook_body(transition))

    def levels(self, now: float, levels: dict[str, int]) -> None:
        """``fructosa.alarms.NAME.firing`` for each rule given.

        Emitted from the event loop's next turn when one runs: ``emit`` hands
        datapoints to every tap, the evaluator included, which must not be
        re-entered while it is evaluating a block.
        """
        if self.emit is None or not levels:
            return
        second = float(int(now))
        datapoints = [(f"fructosa.alarms.{name}.firing", (second, float(count))) for name, count in levels.items()]
        try:
            asyncio.get_running_loop().call_soon(self.emit, datapoints)
        except RuntimeError:  # no loop (tests driving the evaluator by hand): at once
            self.emit(datapoints)

    def _enqueue(self, url: str, body: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((url, body))
        except asyncio.QueueFull:
            self.counters["dropped"] += 1
            self._errors.log(logging.WARNING, "full", "alarm notification queue full: notification to %s dropped", url)

    async def run(self) -> None:
        """Deliver queued notifications until cancelled."""
        import aiohttp  # here, so that the evaluator and the configuration do not import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                url, body = await self.queue.get()
                try:
                    await self._deliver(session, url, body)
                finally:
                    self.queue.task_done()

    async def _deliver(self, session: Any, url: str, body: dict[str, Any]) -> None:
        import aiohttp

        delay = self.settings.backoff
        problem = ""
        for attempt in range(1 + self.settings.retries):
            if attempt:
                await asyncio.sleep(delay)
                delay *= 2
            self.counters["attempts"] += 1
            try:
                async with session.post(url, json=body) as response:
                    await response.read()
                    if response.status < 300:
                        self.counters["delivered"] += 1
                        return
                    problem = f"HTTP {response.status}"
                    if 400 <= response.status < 500 and response.status not in (408, 429):
                        break  # refused for good
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                problem = f"{type(error).__name__}: {error}"
        self.counters["failed"] += 1
        self._errors.log(logging.WARNING, ("failed", url), "alarm notification to %s failed: %s", url, problem)

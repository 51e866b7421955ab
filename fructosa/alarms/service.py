"""The alarms of one lmaster, assembled: evaluator, notifier, stored alarms, actions.

lmaster wiring (a few lines)::

    alarms = AlarmService.from_config(
        config,
        heartbeat_of=lambda host: ...,  # the agent's heartbeat interval from its hello; any float for any host
        job_cpus=lambda: {job_id: job.cpus for job_id, job in (poller.known or {}).items()},  # [slurm] poller
    )
    master = Master(config, taps=[..., alarms])       # alarms.observe sees every block
    alarms.bind(emit=master.emit, on_event=hub.push)  # fructosa.alarms.*.firing, live stream
    add_alarm_routes(app, alarms); add_action_routes(app, alarms.actions)

Its :meth:`run` (a tap's task) ticks the evaluator and delivers
notifications. Alarms from the configuration file cannot be changed at run
time (:class:`Protected`: HTTP 409); those added at run time are stored
(:mod:`.store`) and come back at the next start. ``max alarms`` bounds them
all, built-ins and configured ones included.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from ..graphite_paths import Datapoint
from ..taps import Tap
from ..wire.blocks import Block
from .actions import ActionError, ActionRunner
from .evaluator import AlarmEvaluator, EvaluatorSettings, Transition
from .notify import Notifier, NotifySettings
from .rules import Rule
from .store import AlarmStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_MAX_ALARMS = 1000
MAX_RUNNING_ACTIONS = 16


class Conflict(ValueError):
    """The name is taken (HTTP 409)."""


class Protected(ValueError):
    """A configured or built-in alarm, which only the configuration file changes (HTTP 409)."""


class LimitReached(ValueError):
    """``max alarms`` alarms exist already (HTTP 400, documented)."""


def state_dir_of(config: Any) -> str | None:
    """``[alarms] state dir``; left at its default, ``alarms`` in lmaster's spool directory when one is configured.

    One directory per lmaster, then: two lmasters on a host (or tests) with
    their own spool directories do not share their alarms.
    """
    from ..config.alarms import DEFAULT_ALARM_STATE_DIR

    directory = config.alarms.state_dir
    spool = getattr(config, "spool", None)
    if directory == DEFAULT_ALARM_STATE_DIR and spool is not None and spool.explicit:
        return os.path.join(spool.directory, "alarms")
    return directory


def usable_state_dir(directory: str | None, default: bool | None = None) -> str | None:
    """The state directory, created if need be; a default one, when unusable (not root), means memory only.

    A directory set in the configuration must be usable: StoreError (lmaster does not start).
    """
    from ..config.alarms import DEFAULT_ALARM_STATE_DIR

    if default is None:
        default = directory == DEFAULT_ALARM_STATE_DIR
    if directory is None:
        return None
    try:
        os.makedirs(directory, mode=0o750, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as error:
        reason = f"{directory}: unusable for alarms ({error.strerror or error})"
        if not default:
            raise StoreError(f"[alarms] state dir = {directory!r}: {reason}") from None
        log.warning("%s: alarms added at run time will last until lmaster stops", reason)
        return None
    return directory


def evaluator_settings(settings: Any) -> EvaluatorSettings:
    """The evaluator's settings from ``[alarms]``."""
    return EvaluatorSettings(settings.node_silent, settings.silent_after, settings.job_idle,
                             settings.job_idle_fraction, settings.job_idle_for)  # fmt: skip


class EventListeners(list):
    """Callbacks of each alarm transition's event (the live stream's publish registers here when it exists).

    lmaster holds one, so whatever pushes events to clients can subscribe
    after the alarms are built; a failing callback is logged, the others run.
    """

    def __call__(self, event: dict[str, Any]) -> None:
        for callback in list(self):
            try:
                callback(event)
            except Exception:
                log.exception("alarm event listener %r failed", callback)


class AlarmService(Tap):
    """See the module docstring."""

    name = "alarms"

    def __init__(
        self,
        evaluator: AlarmEvaluator,
        store: AlarmStore | None = None,
        notifier: Notifier | None = None,
        actions: ActionRunner | None = None,
        max_alarms: int = DEFAULT_MAX_ALARMS,
    ) -> None:
        self.evaluator = evaluator
        self.store = store or AlarmStore(None)
        self.notifier = notifier or Notifier()
        self.actions = actions or ActionRunner()
        self.max_alarms = max_alarms
        self._action_tasks: set[asyncio.Task] = set()
        self.state_dir_setting: str | None = store.directory if store is not None else None
        evaluator.listeners.append(self.notifier.transition)
        evaluator.listeners.append(self._run_action)
        evaluator.level_listeners.append(self.notifier.levels)
        self.load_stored()

    @classmethod
    def from_config(
        cls,
        config: Any,
        clock: Callable[[], float] = time.time,
        heartbeat_of: Callable[[str], float] | None = None,
        job_cpus: Callable[[], Mapping[str, int | None]] | None = None,
    ) -> AlarmService:
        """From lmaster's configuration: ``config.alarms`` ([alarms]), ``alarm_rules`` and ``actions``."""
        from ..config.alarms import DEFAULT_ALARM_STATE_DIR

        settings = config.alarms
        evaluator = AlarmEvaluator(config.alarm_rules, evaluator_settings(settings), clock, heartbeat_of, job_cpus)
        service = cls(
            evaluator,
            AlarmStore(usable_state_dir(state_dir_of(config), default=settings.state_dir == DEFAULT_ALARM_STATE_DIR)),
            Notifier(NotifySettings(settings.webhook, settings.events_url)),
            ActionRunner(config.actions),
            settings.max_alarms,
        )
        service.state_dir_setting = state_dir_of(config)
        return service

    def reconfigure(self, config: Any) -> None:
        """A reload: alarms and actions from the file, built-ins, webhook and events URL re-read.

        Alarms added at run time stay (a configured alarm of the same name
        wins: the run-time one is dropped and forgotten); an alarm unchanged
        keeps its state. A new ``state dir`` waits for a restart (logged).
        """
        settings = config.alarms
        shadowed = self.evaluator.replace_configured(evaluator_settings(settings), config.alarm_rules)
        for name in shadowed:
            log.warning("reload: alarm %r added at run time dropped: the configuration now declares it", name)
        if shadowed:
            self._save_stored()
        self.notifier.settings = replace(self.notifier.settings, webhook=settings.webhook,
                                         events_url=settings.events_url)  # fmt: skip
        self.actions.specs = {spec.name: spec for spec in config.actions}
        self.max_alarms = settings.max_alarms
        if state_dir_of(config) != self.state_dir_setting:
            log.warning("reload: a change of [alarms] state dir takes effect at the next restart")
        log.info("reload: %d alarms (%d added at run time), %d actions", len(self.evaluator.runtimes),
                 len(self.stored()), len(self.actions.specs))  # fmt: skip

    def _save_stored(self) -> None:
        try:
            self.store.save(self.stored())
        except StoreError as error:
            log.error("%s", error)

    def bind(
        self,
        emit: Callable[[list[Datapoint]], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Connect what exists only once lmaster does: its own-datapoint path and the live stream."""
        if emit is not None:
            self.notifier.emit = emit
        if on_event is not None:
            self.notifier.on_event = on_event

    def load_stored(self) -> None:
        try:
            stored = self.store.load()
        except StoreError as error:
            log.error("%s; starting without the alarms added at run time", error)
            return
        for rule in stored:
            if rule.name in self.evaluator.runtimes:
                log.warning("stored alarm %r ignored: the configuration declares an alarm of that name", rule.name)
            elif len(self.evaluator.runtimes) >= self.max_alarms:
                log.warning("stored alarm %r ignored: max alarms (%d) reached", rule.name, self.max_alarms)
            else:
                self.evaluator.add_rule(rule)

    # -- changes -------------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        """Add and store a run-time alarm; Conflict, LimitReached, or StoreError (nothing changed then)."""
        if rule.name in self.evaluator.runtimes:
            raise Conflict(f"an alarm named {rule.name!r} exists already")
        if len(self.evaluator.runtimes) >= self.max_alarms:  # first: a refused add costs no pass over the rules
            raise LimitReached(f"at most {self.max_alarms} alarms (max alarms in [alarms]); delete some first")
        taken = {existing.slug: existing.name for existing in self.evaluator.rules()}
        if rule.slug in taken:
            raise Conflict(f"alarm name {rule.name!r} is written {rule.slug} in paths, like {taken[rule.slug]!r}")
        if rule.action is not None and rule.action not in self.actions:
            raise KeyError(f"no action {rule.action!r} is declared")
        self.store.save([*self.stored(), rule])
        self.evaluator.add_rule(rule)
        log.info("alarm added: %s", rule.pretty)
        return rule

    def delete(self, name: str) -> Rule:
        """Remove and forget a run-time alarm; KeyError (unknown), Protected, or StoreError."""
        runtime = self.evaluator.runtimes.get(name)
        if runtime is None:
            raise KeyError(name)
        if runtime.rule.origin != "api":
            where = (
                "built in ([alarms] switches it)"
                if runtime.rule.origin == "builtin"
                else "declared in the configuration file"
            )
            raise Protected(f"alarm {name!r} is {where}; it cannot be deleted at run time")
        self.store.save([rule for rule in self.stored() if rule.name != name])
        self.evaluator.remove_rule(name)
        log.info("alarm deleted: %s", runtime.rule.pretty)
        return runtime.rule

    def stored(self) -> list[Rule]:
        return [rule for rule in self.evaluator.rules() if rule.origin == "api"]

    def rules(self) -> Iterable[Rule]:
        return self.evaluator.rules()

    # -- actions on firing ---------------------------------------------------------------------------

    def _run_action(self, transition: Transition) -> None:
        rule = transition.rule
        if rule.action is None or transition.new != "firing":
            return
        spec = self.actions.specs.get(rule.action)
        if spec is None:
            log.error("alarm %s: action %r is not declared", rule.name, rule.action)
            return
        if len(self._action_tasks) >= MAX_RUNNING_ACTIONS:
            log.error("alarm %s: action %s not run: %d actions running already", rule.name, spec.name,
                      len(self._action_tasks))  # fmt: skip
            return
        known = {"alarm": rule.slug, "severity": rule.severity, "key": transition.key,
                 "value": "" if transition.value is None else f"{transition.value:g}"}  # fmt: skip
        known[rule.target if rule.target in ("node", "job") else "cluster"] = transition.key
        arguments = {argument: known.get(argument, "") for argument in spec.arguments}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            log.error("alarm %s: action %s not run: no event loop", rule.name, spec.name)
            return
        task = loop.create_task(self._action(spec.name, arguments, rule.name))
        self._action_tasks.add(task)
        task.add_done_callback(self._action_tasks.discard)

    async def _action(self, name: str, arguments: dict[str, str], alarm: str) -> None:
        try:
            result = await self.actions.run(name, arguments, caller=f"alarm {alarm}")
            if result["result"] != "success":
                log.warning("alarm %s: action %s failed (exit status %s)", alarm, name, result["exit_status"])
        except ActionError as error:
            log.error("alarm %s: action %s refused: %s", alarm, name, error)

    # -- the tap -------------------------------------------------------------------------------------

    def observe(self, block: Block, host: str | None) -> None:
        self.evaluator.observe(block, host)

    def forget(self, node: str) -> None:
        self.evaluator.forget(node)

    async def run(self) -> None:
        await asyncio.gather(self.evaluator.run(), self.notifier.run())

    async def close(self) -> None:
        for task in list(self._action_tasks):
            task.cancel()
        await asyncio.gather(*self._action_tasks, return_exceptions=True)

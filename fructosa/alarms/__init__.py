"""Alarms and actions in lmaster.

* :mod:`.rules` — a rule (Graphite glob, operator, threshold, ``for``, target,
  severity, action) and its state machine, as pure functions;
* :mod:`.evaluator` — the tap that checks rules as datapoints arrive, plus the
  built-ins ``node-silent`` and ``job-idle``;
* :mod:`.matching` — which rules a block's datapoints feed: the rules' index
  and, per block layout, the positions grouped by rule and key;
* :mod:`.notify` — logs, ``fructosa.alarms.NAME.firing`` datapoints,
  graphite-web events, webhooks (never blocking the relay), the live stream;
* :mod:`.store` — alarms added at run time, persisted atomically;
* :mod:`.actions` — declared commands run with checked arguments, no shell;
* :mod:`.service` — all of it assembled for lmaster and the HTTP routes;
* :mod:`.cli` — ``fructosa-alarms``, the command-line client.

Importing this package imports nothing heavy: aiohttp only when notifying.
"""

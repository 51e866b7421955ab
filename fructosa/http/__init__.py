"""lmaster's HTTP face: an authenticated JSON API over the nodes and a web page without Grafana.

Parts (one module per concern):

* :mod:`.settings` — :class:`~.settings.HttpSettings`: listen addresses, bearer
  token, public read, connection limit, body limit, timeouts (the config
  file's ``[http]`` section maps onto it);
* :mod:`.state` — what the API reads: :class:`~.state.NodeSource` (a
  Protocol: ``nodes()`` and ``node(host)`` returning
  :class:`~.state.NodeRecord`, whose ``state()`` says up / late / down from
  ``last_seen`` and the heartbeat interval) and the
  :class:`fructosa.taps.latest.LatestValues` store, bundled in
  :class:`~.state.HttpState`;
* :mod:`.app` — ``make_app(settings, state)``, the aiohttp application;
* :mod:`.middlewares` — JSON errors, 413 before reading a body over the
  limit, bearer-token auth on ``/api`` (constant-time compare, tokens in the
  query string refused, rate-limited refusal log), security headers;
* :mod:`.nodes` — ``/api/nodes`` (``?group_by=``, ``?state=``),
  ``/api/nodes/HOST``, ``/api/nodes/HOST/latest``, ``/api/nodes/HOST/history``;
* :mod:`.jobs` — ``/api/jobs``, ``/api/jobs/JOBID`` (profile and flags),
  ``/api/jobs/JOBID/history``, over lmaster's job tracker
  (:mod:`fructosa.jobs.tracker`), added by ``add_job_routes``;
* :mod:`.openapi` — ``/api/openapi.json``, the contract the tests validate
  every response against;
* :mod:`.static` — ``/`` and ``/static/…``: the page (``static/index.html``,
  ``app.css``, ``app.js``, vendored uPlot) with no path traversal;
* :mod:`.server` — :func:`~.server.start`: a site that refuses connections
  over the limit at accept and cuts clients that do not send a request in
  time.

Wiring in lmaster (:mod:`fructosa.master.web`, with ``[http]`` in lmaster.conf):

1. one :class:`~fructosa.taps.latest.LatestValues` is registered as a *tap*
   of the flow, so ``observe(block, host)`` sees every checked block, and
   ``prune(time.time())`` runs once a minute;
2. :class:`fructosa.master.nodes.AgentNodes`, a ``NodeSource`` over lmaster's
   agent table, turns each agent entry (host, peer address, connected, last
   frame, heartbeat from the hello, agent version, connected since, and the
   facts the agent tells in its hello: sensor intervals, CPUs, memory, ...)
   into a :class:`~.state.NodeRecord`;
3. ``runner, sites = await fructosa.http.server.start(make_app(settings,
   HttpState(source, latest)))`` at start-up, ``await runner.cleanup()`` at
   shutdown; a reload hands new settings (token, public read) to
   :func:`.app.apply_settings`.
"""

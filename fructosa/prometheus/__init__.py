"""FrUCToSA in a Prometheus shop: lmaster's ``/metrics``, the agent's ``Prometheus`` sensor, lmaster-side scrapes.

* :mod:`.naming` — the one rule from Graphite paths to Prometheus series;
* :mod:`.exposition` — ``/metrics`` content from the latest-values store;
* :mod:`.parsing` — exporter text → Graphite-path samples (shared by the agent's
  sensor and lmaster's scrapes);
* :mod:`.scrapes` — lmaster scraping registered targets itself
  (``/api/scrapes``).
"""

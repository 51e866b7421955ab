"""Taps: observers of every checked datapoint block lmaster receives.

A tap has ``observe(block, host)``; lmaster calls it on its event loop for
each block after checking it, next to handing the block to its sinks. A tap
must be cheap and must not raise: it keeps in-memory views (the newest values
for the HTTP API and ``/metrics``, alarms, live streams) and never does I/O.
"""

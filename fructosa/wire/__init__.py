"""The agent → master wire: frames, datapoint blocks, the session, shared-secret and TLS.

Everything here depends only on the standard library and FrUCToSA's bricks
(:mod:`fructosa.graphite_paths`), so a relay-only head node needs no sensors.
"""

"""Where each daemon looks for its file by default.

Kept apart from :mod:`.agent` and :mod:`.master` so that naming lmaster's
default (``lagent`` and ``lmaster`` share one command line and one
``programs`` module) does not import lmaster's schema into the agent.
"""

DEFAULT_AGENT_CONFIG = "/etc/fructosa/lagent.conf"
DEFAULT_MASTER_CONFIG = "/etc/fructosa/lmaster.conf"

"""Dashboards as the text written to disk, node dashboards rendered once per shape.

grafanalib writes a dashboard with ``json.dump(..., indent=2)``, which runs
Python's pure-Python encoder (the C encoder does no indentation): about
11 ms per node dashboard, plus 3 ms to build its model. For an inventory of
1,000 hosts that is 14 s, nearly all of it spent producing the same text
1,000 times with a different host name in it.

A node dashboard depends on its host only through the short host name, and
that name (``[A-Za-z0-9_-]+``, already sanitized) appears in the text
verbatim: in paths, titles, the description and the uid. So
:class:`NodeDashboards` renders each shape (with or without the GPU row)
once for a placeholder name and writes every host's dashboard by
replacing the placeholder. It proves the shortcut for the settings in use
before relying on it: the text rendered for a second placeholder must be
exactly the first with the name replaced, which holds only when the name
appears nowhere but verbatim. A name that would change the text in any
other way (a uid too long for Grafana, which is then hashed) is rendered
in full, as before.
"""

from __future__ import annotations

import io
import re

from grafanalib._gen import write_dashboard
from grafanalib.core import Dashboard

from ..graphite_paths import short_hostname
from .node import node_dashboard
from .panels import uid
from .settings import Settings

PLACEHOLDERS = ("QzxHOSTqzx", "XqjNAMEjqX")
"""Two host names no dashboard text contains by itself (checked)."""

_VERBATIM_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")


def dashboard_text(dashboard: Dashboard) -> str:
    """Exactly what grafanalib's ``write_dashboard`` writes for ``dashboard``."""
    stream = io.StringIO()
    write_dashboard(dashboard, stream)
    return stream.getvalue()


class NodeDashboards:
    """The text of every node dashboard for one :class:`Settings`, each shape rendered once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._templates: dict[bool, str | None] = {}

    def text(self, host: str, gpus: bool = False) -> str:
        """Byte for byte what ``dashboard_text(node_dashboard(host, settings, gpus))`` gives."""
        name = short_hostname(host)
        template = self._template(gpus) if self._substitutable(name) else None
        if template is None:
            return dashboard_text(node_dashboard(host, self.settings, gpus=gpus))
        return template.replace(PLACEHOLDERS[0], name)

    @staticmethod
    def _substitutable(name: str) -> bool:
        """Whether ``name`` enters the text only verbatim (as the placeholders do)."""
        return bool(_VERBATIM_NAME.match(name)) and uid("node", name) == f"fructosa-node-{name}"

    def _template(self, gpus: bool) -> str | None:
        """The dashboard of the first placeholder host, or None when the
        host name is not a plain substitution for these settings."""
        if gpus not in self._templates:
            first, second = (dashboard_text(node_dashboard(name, self.settings, gpus=gpus)) for name in PLACEHOLDERS)
            plain = PLACEHOLDERS[1] not in first and first.replace(PLACEHOLDERS[0], PLACEHOLDERS[1]) == second
            self._templates[gpus] = first if plain and all(map(self._substitutable, PLACEHOLDERS)) else None
        return self._templates[gpus]

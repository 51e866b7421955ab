"""``python -m fructosa.dashboards``: the same as ``make-fructosa-dashboard``."""

import sys

from .cli import main

sys.exit(main())

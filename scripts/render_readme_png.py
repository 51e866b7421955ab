"""Render dashboards/node-example.png, the README's picture of a live node.

    .venv/bin/python scripts/render_readme_png.py [--seconds 60] [--output PATH]

Runs the dashboard tests' live pipeline (carbon-cache, graphite-web,
lmaster and this host's lagent with all sensors every second), lets it
collect, writes this host's dashboard with make-fructosa-dashboard and has
graphite-web draw four of its panels (``/render?format=png``) from their
own targets, composed 2 x 2 into one PNG with cairo (graphite-web's own
renderer). Needs graphite-web (pip install graphite-web==1.1.10).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cairocffi as cairo  # noqa: E402  (installed with graphite-web)

from fructosa.dashboards.cli import main as make_dashboards  # noqa: E402
from tests.dashboards.helpers import json_panels  # noqa: E402
from tests.dashboards.pipeline import HOST, Pipeline  # noqa: E402

PANELS = {
    "CPU time by mode": ("A", {"areaMode": "stacked", "vtitle": "percent"}),
    "Memory": ("A", {"yUnitSystem": "binary", "vtitle": "bytes"}),
    "Network traffic": ("AB", {"yUnitSystem": "binary", "vtitle": "bytes/s"}),
    "Disk throughput": ("A", {"yUnitSystem": "binary", "vtitle": "bytes/s"}),
}
"""Dashboard panels to draw: which of their targets (by refId; the per-disk
series of this VM's loop devices would only crowd the legend) and
graphite-web options standing in for the panel's unit."""
WIDTH, HEIGHT = 640, 320


def compose(pictures: list[bytes], columns: int = 2) -> bytes:
    """PNGs of equal size side by side, ``columns`` per line."""
    surfaces = [cairo.ImageSurface.create_from_png(io.BytesIO(picture)) for picture in pictures]
    width, height = surfaces[0].get_width(), surfaces[0].get_height()
    lines = -(-len(surfaces) // columns)
    canvas = cairo.ImageSurface(cairo.FORMAT_RGB24, width * columns, height * lines)
    context = cairo.Context(canvas)
    for index, surface in enumerate(surfaces):
        context.set_source_surface(surface, (index % columns) * width, (index // columns) * height)
        context.paint()
    output = io.BytesIO()
    canvas.write_to_png(output)
    return output.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long to collect first (default 60)")
    parser.add_argument("--output", type=Path, default=REPO / "dashboards" / "node-example.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fructosa-png-"))
    with Pipeline(work, gone=False) as live:
        print(f"collecting for {args.seconds:g} s in {work} ...")
        time.sleep(args.seconds)
        (work / "hosts.ini").write_text(f"[hosts]\n{HOST}\n")
        make_dashboards([str(work / "hosts.ini"), "-o", str(work)])
        board = json.loads((work / f"{HOST}.json").read_text())
        targets = {panel["title"]: panel.get("targets", []) for panel in json_panels(board)}
        since = f"-{int(args.seconds)}s"
        pictures = [
            live.render_png(
                [target["target"] for target in targets[title] if target["refId"] in ref_ids],
                f"{HOST}: {title}",
                WIDTH,
                HEIGHT,
                since,
                options,
            )
            for title, (ref_ids, options) in PANELS.items()
        ]
    args.output.write_bytes(compose(pictures))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Record a golden case for tests/sensors/test_golden.py from this machine.

    python tests/sensors/record.py SENSOR CASE [--option KEY=VALUE ...]
    python tests/sensors/record.py SENSOR CASE --replay

The first form runs the sensor's ``read()`` here twice, a short pause apart
(a rate's first reading only takes its reference), and writes
``testcases/SENSOR/CASE/{sensor.conf,psutil.json,expected.out}`` from the
second. The second form keeps a case's sensor.conf and (hand-edited)
psutil.json and rewrites only expected.out.

expected.out is what the *current* code sends: review it line by line
against the sensor's docstring (printed at the end) before committing it,
or the golden test only proves that the code agrees with itself.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

from golden import CASES_DIR, CONF_FILE, EXPECTED_FILE, INPUT_FILE, expected_lines, load_sensor

from fructosa.config import ConfigError
from fructosa.sensors import REGISTRY, Sensor, SensorUnsupported, as_plain


def conf_text(sensor_name: str, options: list[str]) -> str:
    """A ``[sensor:NAME]`` section with ``time_interval = 10`` and the given options."""
    lines = [f"[sensor:{sensor_name}]", "time_interval = 10"]
    for option in options:
        key, equals, value = option.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"--option {option!r} is not KEY=VALUE")
        lines.append(f"{key.strip()} = {value.strip()}")
    return "\n".join(lines) + "\n"


def configured_sensor(sensor_name: str, text: str) -> Sensor:
    """The sensor built from ``text``; unknown keys and bad values are errors."""
    with tempfile.TemporaryDirectory() as scratch:
        conf_path = Path(scratch) / CONF_FILE
        conf_path.write_text(text, encoding="utf-8")
        return load_sensor(conf_path, sensor_name)


def record_live(sensor: Sensor, settle: float) -> object:
    """The plain form of a live ``read()`` ``settle`` seconds after a first one, as ``shape()`` receives it."""
    sensor.start()
    sensor.read()
    if settle > 0:
        time.sleep(settle)
    return as_plain(sensor.read())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sensor", choices=sorted(REGISTRY), metavar="SENSOR")
    parser.add_argument("case", metavar="CASE", help="folder name, e.g. live_vm")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a sensor option")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between the two reads (default 1)")
    parser.add_argument("--replay", action="store_true", help="rewrite only expected.out from the case's psutil.json")
    parser.add_argument("--force", action="store_true", help="overwrite an existing case")
    args = parser.parse_args(argv)
    case_dir = CASES_DIR / args.sensor / args.case

    try:
        if args.replay:
            if args.option:
                parser.error("--replay uses the case's sensor.conf; edit it instead of passing --option")
            sensor = load_sensor(case_dir / CONF_FILE, args.sensor)
            raw = json.loads((case_dir / INPUT_FILE).read_text(encoding="utf-8"))
        else:
            if case_dir.exists() and not args.force:
                parser.error(f"{case_dir} exists (--force to overwrite, --replay to rewrite expected.out)")
            text = conf_text(args.sensor, args.option)
            sensor = configured_sensor(args.sensor, text)
            raw = record_live(sensor, args.settle)
            case_dir.mkdir(parents=True, exist_ok=True)
            (case_dir / CONF_FILE).write_text(text, encoding="utf-8")
            (case_dir / INPUT_FILE).write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    except (ValueError, ConfigError, OSError) as error:
        parser.error(str(error))
    except SensorUnsupported as reason:
        print(f"nothing to record: {reason}", file=sys.stderr)
        return 1

    lines = expected_lines(sensor, raw)
    (case_dir / EXPECTED_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {case_dir.relative_to(Path.cwd()) if case_dir.is_relative_to(Path.cwd()) else case_dir}")
    print(f"{len(lines)} line(s) in {EXPECTED_FILE}; review them against what {args.sensor} documents:\n")
    print(inspect.getdoc(type(sensor)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

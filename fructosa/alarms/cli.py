"""``fructosa-alarms``: list, add and delete lmaster's alarms over its HTTP API.

Standard library only (urllib): it runs on any admin host with Python.
The token is read from a file (``--token-file``), never from the command
line, where ``ps`` would show it.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = 10.0


class ApiError(Exception):
    """The server refused, or could not be reached; ``str()`` is one line."""


def request(url: str, token: str | None, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    call = urllib.request.Request(url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(call, timeout=TIMEOUT) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("error", "")
        except (ValueError, AttributeError):
            message = ""
        raise ApiError(f"HTTP {error.code}: {message or error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ApiError(f"cannot reach {url}: {reason}") from None


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read().strip() or None
    except OSError as error:
        raise ApiError(f"{path}: cannot read the token: {error.strerror}") from None


def format_alarm(alarm: dict[str, Any]) -> str:
    keys = [f"{key}={state['status']}" for key, state in alarm["states"].items() if state["status"] != "ok"]
    condition = f"{alarm['target']} {alarm['metric']} {alarm['operator']} {alarm['value']:g}"
    if alarm["for"]:
        condition += f" for {alarm['for']:g}s"
    return f"{alarm['name']:<24} {alarm['status']:<9} {alarm['severity']:<9} {alarm['origin']:<14} {condition}" + (
        f"  [{', '.join(keys[:10])}{' …' if len(keys) > 10 else ''}]" if keys else ""
    )


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="fructosa-alarms", description=__doc__.splitlines()[0])
    main.add_argument("--url", default=DEFAULT_URL, help="lmaster's HTTP address (default: %(default)s)")
    main.add_argument("--token-file", help="file holding the API token")
    main.add_argument("--json", action="store_true", help="print the server's JSON answer")
    commands = main.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every alarm and its state")
    add = commands.add_parser("add", help="add an alarm (kept across lmaster restarts)")
    add.add_argument("name")
    add.add_argument("--metric", required=True, help="Graphite glob, the node first, e.g. '*.CPUPercent.total'")
    add.add_argument("--operator", required=True, choices=[">", ">=", "<", "<=", "==", "!="])
    add.add_argument("--value", required=True, type=float, help="the threshold")
    add.add_argument("--for", dest="for_seconds", type=float, default=0.0, help="seconds it must hold (default 0)")
    add.add_argument("--target", default="node", choices=["node", "cluster-mean", "cluster-max", "cluster-sum", "job"])
    add.add_argument("--severity", default="warning", choices=["info", "warning", "critical"])
    add.add_argument("--action", help="an [action:NAME] to run when it fires")
    add.add_argument("--job", help="a job target narrowed to one job id")
    delete = commands.add_parser("del", help="delete an alarm added at run time")
    delete.add_argument("name")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        token = read_token(args.token_file)
        if args.command == "list":
            answer = request(args.url, token, "GET", "/api/alarms")
            lines = [format_alarm(alarm) for alarm in answer["alarms"]]
            text = "\n".join(lines) + f"\n{len(lines)} alarms (at most {answer['max_alarms']})"
        elif args.command == "add":
            body = {"name": args.name, "metric": args.metric, "operator": args.operator, "value": args.value,
                    "for": args.for_seconds, "target": args.target, "severity": args.severity}  # fmt: skip
            if args.action:
                body["action"] = args.action
            if args.job:
                body["job"] = args.job
            answer = request(args.url, token, "POST", "/api/alarms", body)
            text = f"added: {format_alarm(answer)}"
        else:
            answer = request(args.url, token, "DELETE", "/api/alarms/" + urllib.parse.quote(args.name, safe=""))
            text = f"deleted: {answer['deleted']}"
    except ApiError as error:
        print(f"fructosa-alarms: {error}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=1) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cli.plain_start`` reads a plain ``start`` exactly as argparse does, and leaves everything else to argparse.

lagent and lmaster parse ``start`` without argparse (which would stay in the
running daemon's memory with gettext). Every command line of up to four words
from a mix of valid, odd and wrong words is given to both: wherever
``plain_start`` answers, argparse accepts the line and gives the same values.
"""

from __future__ import annotations

import contextlib
import io
import itertools

import pytest

from fructosa import cli, programs

WORDS = (
    "start", "stop", "check", "sensors", "-c", "--config", "-p", "--pidfile", "-f", "--foreground",
    "a.conf", "b.pid", "--config=x.conf", "--pidfile=y.pid", "-cz.conf", "-c=z", "--conf", "-h", "--", "-x", "",
)  # fmt: skip


def argparse_reading(spec: cli.DaemonSpec, argv: list[str]) -> dict | None:
    """argparse's values for ``argv``, None when it refuses or exits (help, version)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(cli.build_parser(spec).parse_args(argv))
        except SystemExit:
            return None


@pytest.mark.parametrize("spec", [programs.AGENT, programs.MASTER], ids=["lagent", "lmaster"])
def test_plain_start_agrees_with_argparse_wherever_it_answers(spec: cli.DaemonSpec) -> None:
    answered = 0
    for length in range(1, 5):
        for words in itertools.product(WORDS, repeat=length):
            argv = list(words)
            plain = cli.plain_start(spec, argv)
            if plain is None:
                continue
            answered += 1
            assert vars(plain) == argparse_reading(spec, argv), argv
    assert answered > 500  # the plain path does take the usual forms


@pytest.mark.parametrize(
    "argv",
    [["start"], ["start", "-f"], ["-c", "a.conf", "start", "--foreground"], ["start", "-p", "b.pid", "-c", "a.conf"],
     ["--config=a.conf", "-p", "b.pid", "start", "-f", "-c", "c.conf"]],
)  # fmt: skip
def test_the_usual_start_lines_take_the_plain_path(argv: list[str]) -> None:
    plain = cli.plain_start(programs.AGENT, argv)
    assert plain is not None and vars(plain) == argparse_reading(programs.AGENT, argv)


@pytest.mark.parametrize(
    "argv",
    [[], ["-h"], ["start", "-h"], ["restart"], ["-f", "start"], ["start", "start"], ["-c", "start"],
     ["--conf", "a", "start"], ["-c=a", "start"], ["start", "--config="], ["start", "-c", "-x"], ["--version"]],
)  # fmt: skip
def test_anything_else_is_left_to_argparse(argv: list[str]) -> None:
    assert cli.plain_start(programs.AGENT, argv) is None

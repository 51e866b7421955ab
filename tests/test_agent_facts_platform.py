"""The hello's ``platform`` fact is what ``platform.platform()`` says, without the :mod:`platform` module."""

from __future__ import annotations

import os
import platform

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fructosa.agent.facts import filename_safe, platform_name, static_facts

GLIBC_LINUX = os.uname().sysname == "Linux" and (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc ")


@pytest.mark.skipif(not GLIBC_LINUX, reason="the shortcut is for Linux with glibc; elsewhere platform answers itself")
def test_platform_name_is_platform_platform_on_glibc_linux() -> None:
    assert platform_name() == platform.platform()
    assert static_facts()["platform"] == platform.platform()
    assert static_facts()["cpu"] == platform.machine() and static_facts()["system"] == platform.system()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list('ab -_/\\:;"()unkow.5')), max_size=12), min_size=1, max_size=5))
def test_filename_safe_cleans_as_platform_does(parts: list[str]) -> None:
    """``platform_name`` joins uname's parts as ``platform._platform`` does, then cleans them with ``filename_safe``."""
    try:
        expected = platform._platform(*parts)  # type: ignore[attr-defined]
    except IndexError:
        return  # platform's own cleanup fails on an empty result; uname never gives one
    assert filename_safe("-".join(part.strip() for part in parts if part)) == expected

"""The command line: help with examples, version, one-line errors."""

from __future__ import annotations

import pytest

from nmt import __version__
from tests.conftest import invoke


@pytest.mark.parametrize("command", ["prepare", "train", "translate", "eval"])
def test_every_command_has_help_with_an_example(command):
    r = invoke(command, "--help")
    assert r.exit_code == 0 and "Example" in r.stdout and "nmt " + command in r.stdout


def test_version_and_group_help():
    assert invoke("--version").stdout.strip() == f"nmt, version {__version__}"
    assert "nmt prepare --config" in invoke("--help").stdout


def test_usage_errors_exit_2():
    r = invoke("train")
    assert r.exit_code == 2 and "Missing option '--config'" in r.output
    r = invoke("prepare", "--src", "a.txt")
    assert r.exit_code == 2 and r.stderr.startswith("error: ")

"""The multi-machine recipe's commands are commands this version accepts.

(deploy/systemd's units, deploy/anomaly.env.example's settings.)
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from anomaly.cli.main import build_parser
from service.config import DEFAULTS

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def _commands(unit: Path) -> list[list[str]]:
    out = []
    for line in unit.read_text().splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ExecStartPre"):
            words = shlex.split(re.sub(r"\$\{(\w+)\}", "value-of-\\1", value))
            assert words[0] == "/opt/anomaly/bin/anomaly", line
            out.append(words[1:])
    return out


@pytest.mark.parametrize("unit", sorted((DEPLOY / "systemd").glob("*.service")), ids=lambda p: p.name)
def test_every_unit_runs_a_valid_anomaly_command(unit):
    commands = _commands(unit)
    assert commands
    parser = build_parser()
    for words in commands:
        args = parser.parse_args(words)  # exits (fails the test) on an unknown verb or option
        assert callable(args.func)


def test_the_environment_example_sets_known_settings_only():
    for line in (DEPLOY / "anomaly.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key = line.split("=", 1)[0]
            # SECRET_KEY is never defaulted (service.config), so it is not among the defaults.
            assert key.startswith("ANOMALY_") and key[len("ANOMALY_"):] in {*DEFAULTS, "SECRET_KEY"}, key

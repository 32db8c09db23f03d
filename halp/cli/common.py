"""Helpers the commands share: loading a scenario with overrides, printing JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from halp.scenario import Scenario, load_scenario, parse_override


def add_scenario(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", help="scenario YAML file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field, e.g. network.bandwidth=10Mbps or method.name=modnn")


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario)
    overrides = dict(parse_override(t) for t in getattr(args, "overrides", []) or [])
    if overrides:
        scenario = scenario.with_values(_as_units(overrides))
    return scenario


def _as_units(overrides: dict[str, Any]) -> dict[str, Any]:
    """Values given on the command line keep their units; with_values re-parses them."""
    return overrides


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def warn_if_emulated_differently(scenario: Scenario, backend: str) -> list[str]:
    """On the emulator, print (stderr) and return one line per device that the planner and
    the simulator see as another device than the emulator runs (`emulation_mismatches`)."""
    if backend != "emu":
        return []
    from halp.validate import emulation_mismatches

    lines = emulation_mismatches(scenario.cluster(), {d.name: d.threads for d in scenario.devices})
    for line in lines:
        print(line, file=sys.stderr)
    return lines

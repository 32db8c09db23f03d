"""The `halp` command: one subcommand per module in this package.

Each command module has `add_parser(subparsers)` and `run(args) -> int`. Expected failures
(`HalpError`, and a file that cannot be read or written) print one line and exit 2; a missing
optional engine says how to install it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from halp.errors import HalpError

COMMANDS = [
    "model_cmd", "plan_cmd", "verify_cmd", "run_cmd", "compare_cmd", "sweep_cmd",
    "figures_cmd", "profile_cmd", "probe_cmd", "validate_cmd", "worker_cmd", "host_cmd", "train_cmd", "hw_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="halp", description="Collaborative CNN inference testbed")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"halp.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"halp.cli.{name}":
                continue  # not built yet
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HalpError as exc:
        print(f"halp {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `halp ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:
        if exc.filename is None:  # not a file the user named or we write: a bug, keep the trace
            raise
        print(f"halp {args.command}: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"halp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

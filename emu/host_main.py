"""The host executor as the emulator starts it inside the host device's Mininet node.

    python -m emu.host_main SCENARIO --endpoints FILE.json --token FILE --out DIR
                            [--warmup N] [--dead-after S]

It is `halp host` (`halp.runtime.executor.run_host`, the same records in DIR) with two lines
more on stdout for the backend that follows it:

    serving t0=<CLOCK_MONOTONIC seconds>   when serving begins: the run's time zero, which
                                           bandwidth traces are played against
    request <r> <latency_ms>               as each request finishes

CLOCK_MONOTONIC is one clock for the whole machine (Mininet makes no time namespaces), so the
backend outside the node can use t0 as it is.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from halp.errors import HalpError
from halp.trace import RequestRecord, TraceWriter

SERVING = "serving t0="


class Reporting(TraceWriter):
    """A TraceWriter that prints one line per finished request."""

    def request(self, record: RequestRecord) -> None:
        super().request(record)
        print(f"request {record.request} {record.latency * 1e3:.1f}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="emu.host_main", description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--endpoints", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--dead-after", type=float, default=10.0)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so that `finally` says goodbye to the workers
    try:
        from halp.runtime import load_endpoints, load_token, run_host
        from halp.scenario import load_scenario
        from halp.serving import policy_for

        scenario = load_scenario(args.scenario)
        path = Path(args.endpoints)
        endpoints = load_endpoints(json.loads(path.read_text()), str(path))
        token = load_token(args.token)
        config = scenario.backends.emu
        warmup = config.warmup_requests if args.warmup is None else args.warmup
        log = logging.getLogger("halp.host")
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        log.propagate = False
        out = Path(args.out)
        policy = policy_for(scenario)
        print(f"connecting to {len(endpoints)} workers, {warmup} warm-up request(s) per plan",
              flush=True)
        with Reporting(out, backend="emu", method=scenario.method.name) as writer:
            try:
                run_host(scenario, policy, writer, endpoints, token, config.timeout,
                         warmup_requests=warmup, dead_after_s=args.dead_after, log=log,
                         on_start=lambda t0: print(f"{SERVING}{t0:.6f}", flush=True))
            finally:
                (out / "runtime.json").write_text(json.dumps(writer.trace.meta, indent=2,
                                                             default=str))
    except HalpError as exc:
        text = str(exc)
        if "\n" in text:  # details first; the backend reports the last line, keep it whole
            print(text, flush=True)
        print(f"halp host: {text.splitlines()[0] if text else type(exc).__name__}", flush=True)
        return 2
    except KeyboardInterrupt:
        print("halp host: interrupted", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`halp host SCENARIO --endpoints FILE.json --token FILE --out DIR`: serve a workload on workers.

Runs on the host device (inside its Mininet node for the emulator, on the host Pi for the
hardware backend). The endpoints file maps each secondary to its worker:
`{"pi1": "tcp://10.0.0.2:5555", "pi2": "10.0.0.3:5555"}`. Writes `ops.jsonl` and
`requests.jsonl` into DIR as requests finish, and `runtime.json` (clock offsets, model digests,
mismatches) at the end. With `--plans` it serves exactly the plans in that file
(`halp.serving.policy_from_plans`): the emulator and the hardware backend ship the plans their
caller's policy serves. On stdout: `serving t0=...` when serving begins, and a line per request.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path

from halp.cli.common import add_scenario, scenario_from_args
from halp.errors import BackendError, HalpError
from halp.runtime.lines import HOST_SERVING
from halp.trace import RequestRecord


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("host", help="serve a scenario's workload on running workers")
    add_scenario(p)
    p.add_argument("--endpoints", required=True, metavar="FILE.json",
                   help='JSON object of device name to worker address, e.g. {"pi1": "tcp://10.0.0.2:5555"}')
    p.add_argument("--token", required=True, metavar="FILE", help="the workers' shared token file")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for ops.jsonl and requests.jsonl")
    p.add_argument("--plans", metavar="FILE.json",
                   help="the plans to serve (a JSON list of plans, as the caller's policy answers "
                        "them): the scenario's own policy if it serves these plans, else the one "
                        "plan given is served for every request")
    p.add_argument("--backend", choices=("emu", "hw"), default="emu",
                   help="whose timeout and warm-up settings to use, and the trace's backend name")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="bound on connecting and on each request (default: the scenario's)")
    p.add_argument("--warmup", type=int, metavar="N",
                   help="untimed requests per plan first (default: backends.<backend>.warmup_requests "
                        "for emu, 0 for hw)")
    p.add_argument("--dead-after", type=float, default=10.0, metavar="S",
                   help="a worker silent this long is dead (default 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _serve(args)
    except HalpError as exc:
        text = str(exc)
        if "\n" not in text:
            raise
        # Details first; the backend following this process reports its last line: the summary.
        print(text, file=sys.stderr, flush=True)
        raise type(exc)(text.splitlines()[0]) from None


def _serve(args: argparse.Namespace) -> int:
    from halp.runtime.auth import load_token
    from halp.runtime.executor import load_endpoints, run_host
    from halp.serving import policy_for, policy_from_plans, read_plans
    from halp.trace import TraceWriter

    scenario = scenario_from_args(args)
    path = Path(args.endpoints)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise BackendError(f"cannot read endpoints file {path}: {exc.strerror}") from None
    except ValueError:
        raise BackendError(f"endpoints file {path} is not JSON") from None
    endpoints = load_endpoints(data, str(path))
    token = load_token(args.token)
    config = getattr(scenario.backends, args.backend)
    timeout = args.timeout if args.timeout is not None else config.timeout
    warmup = args.warmup if args.warmup is not None else getattr(config, "warmup_requests", 0)
    log = logging.getLogger("halp.host")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s halp host %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if args.plans:
        plans_path = Path(args.plans)
        try:
            text = plans_path.read_text()
        except OSError as exc:
            raise BackendError(f"cannot read plans file {plans_path}: {exc.strerror}") from None
        policy = policy_from_plans(scenario, read_plans(text, str(plans_path)), str(plans_path))
        print(f"host: serving {len(policy.served())} plan(s) of {scenario.method.name} for "
              f"{scenario.name}", flush=True)
    else:
        print(f"host: planning {scenario.method.name} for {scenario.name}", flush=True)
        policy = policy_for(scenario)
    out = Path(args.out)

    def stop(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        raise BackendError("halp host stopped by SIGTERM; finished requests are in " + str(out))

    signal.signal(signal.SIGTERM, stop)  # so that the workers hear BYE and sockets close
    with TraceWriter(out, backend=args.backend, method=scenario.method.name) as writer:
        try:
            trace = run_host(scenario, policy, writer, endpoints, token, timeout,
                             warmup_requests=warmup, dead_after_s=args.dead_after, log=log,
                             on_request=_progress, on_start=_serving)
        finally:
            (out / "runtime.json").write_text(json.dumps(writer.trace.meta, indent=2, default=str))
    latencies = trace.latencies()
    mean = sum(latencies) / len(latencies) if latencies else float("nan")
    print(f"host: {len(latencies)} requests, mean latency {mean * 1e3:.1f} ms, outputs exact")
    return 0


def _serving(t0: float) -> None:
    """The run's time zero on CLOCK_MONOTONIC, which is one clock for the whole machine
    (Mininet makes no time namespaces): the emulator plays bandwidth traces from it."""
    print(f"{HOST_SERVING}{t0:.6f}", flush=True)


def _progress(record: RequestRecord) -> None:
    """One line per finished request on stdout (the backends relay them; silence means stuck)."""
    print(f"request {record.request} done in {record.latency * 1e3:.1f} ms ({record.model}, "
          f"max abs error {record.max_abs_error:.2g})", flush=True)

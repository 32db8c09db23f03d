"""The runtime: the worker every secondary runs and the executor on the host, over ZeroMQ.

Shared by the emulator (`emu/`) and the hardware backend (`hw/`): they differ only in how they
start workers and shape links. The interfaces below are stable; backends use nothing else.

Worker (one per secondary device; starts once, serves run after run)::

    halp worker --listen ADDR --token FILE [--name NAME] [--threads N] [--quiet]
    halp worker --new-token FILE          # write a fresh random token (mode 0600) and exit

    ADDR: tcp://HOST:PORT, HOST:PORT or :PORT; port 0 lets the system choose. When listening,
    it prints one line to stdout: `halp worker NAME listening on tcp://HOST:PORT (pid N)`.
    With --name, a host that calls it by another device name is refused. SIGTERM stops it.
    In Python: `halp.runtime.worker.serve_forever(listen, token, name, threads, stop, ready)`.

Host (on the host device; for the emulator, inside the host's Mininet node)::

    halp host SCENARIO --endpoints FILE.json --token FILE --out DIR [--plans FILE.json]
              [--backend emu|hw] [--timeout S] [--warmup N] [--dead-after S] [--set KEY=VALUE]

    --endpoints: {"pi1": "tcp://10.0.0.2:5555", "pi2": "10.0.0.3:5555"}. Every secondary a
    plan uses needs an entry; the host connects to every scenario secondary listed (a policy
    may use it later); unknown names are ignored. --plans: a JSON list of plans (Plan.to_dict,
    `halp.serving.plans_json`), served by `halp.serving.policy_from_plans`: the scenario's own
    policy when it serves exactly these plans (model selection keeps choosing per request),
    else the one plan given, for every request; without it the host plans with
    `policy_for(scenario)`. --timeout defaults to
    backends.<backend>.timeout, --warmup to backends.emu.warmup_requests (emu) or 0 (hw).
    DIR gets ops.jsonl and requests.jsonl as requests finish (`halp.trace.TraceWriter`) and
    runtime.json (the trace meta: per-worker clock offset and uncertainty, model digests,
    mismatches, each device's resident memory after the last request). stdout: `serving t0=SECONDS` when serving begins (`halp.runtime.lines`), a
    line per request (`request 3 done in 41.2 ms (...)`) and a summary;
    stderr: progress log. Exit 0; 2 with one line (`BackendError`) on any failure, including
    outputs that differ from the monolithic model; SIGTERM ends it cleanly (exit 2).

    In Python:
        run_host(scenario, policy, writer, endpoints, token, timeout_s, *,
                 warmup_requests=0, heartbeat_s=0.5, dead_after_s=10.0, sync_rounds=8,
                 distinct_inputs=4, log=None, on_request=None, on_start=None) -> Trace

    Records: one OpRecord per plan op (ids, kinds, resources as the simulator writes them, the
    input op included with zero length), times in seconds on the host clock from the run
    start; one RequestRecord per request with max_abs_error and extra = {relative_error,
    queue_s, policy_s, install_s, ...the policy's extra}. A request enters at its
    arrival even if earlier ones are not done; each device serves its ops in plan order,
    request after request (the simulator's semantics).

Token: `load_token(path) -> bytes` reads a token file (>= 16 bytes, whitespace stripped);
`write_token(path)` makes one. Host and workers must hold the same token.

Modules: `wire` (message framing, socket options, `WireError`), `auth` (token, handshake keys,
replay guard), `clock` (ping/pong offsets), `device` (what a device does with its ops: shared
by both sides), `worker` (the worker's sockets and message dispatch) and its parts: `session`
(the HELLO and the host's keys), `installed` (models, holding only the weights their plans
use, and plans), `request_state` (when a request is done), `peers` (links to other workers),
`compute` (compute and sender threads); `hub` (the host's I/O thread), `executor`
(`run_host`); `resident` (a process's resident memory, read and checked).
"""

from halp.runtime.auth import load_token, write_token
from halp.runtime.executor import TOLERANCE, load_endpoints, run_host
from halp.runtime.wire import WireError

__all__ = ["run_host", "load_endpoints", "load_token", "write_token", "WireError", "TOLERANCE"]

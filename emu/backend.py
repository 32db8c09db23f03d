"""The emulator as a backend: `BACKEND.run(scenario, policy, writer) -> Trace`.

One run:

1. describe the topology (`emu.topology`) and build it (`emu.network.EmulatedNetwork`);
2. write the run directory: the scenario as run, the plans the policy serves
   (`host.plans.json`), the endpoints, the topology, the workers' and the host's logs; the
   shared token goes to a private temporary directory, removed at the end;
3. start `halp worker` in every secondary's host, with this interpreter, and wait until each
   listens (its TCP socket is in LISTEN state in its namespace): a worker imports PyTorch once,
   in its quarter of a core, and stays up, so the import never lands in a request's latency;
4. run `halp host --plans host.plans.json` in the host device's node: it serves exactly the plans it
   was given, as the hardware backend's host does. Relay its lines, and play bandwidth traces
   from the moment it says serving began (`halp.runtime.lines.HOST_SERVING`);
5. read back the records the host wrote (`halp.trace.read_trace_dir`), copy them into `writer`
   and return the trace.

Teardown is total on every exit path (an exception, Ctrl-C, SIGTERM): the processes this run
started are stopped by their process group id (`emu.processes`), then the network removes its
links, bridge, IFB device, shells and cgroups. Nothing is killed by name. A worker that dies
mid-run ends the run within `HOST_GRACE_S` with one line naming its device; the requests that
finished before are on disk and in `writer`.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from emu import profile
from emu.devices import DevicePlan, ops_of, plan_devices, timed_work
from emu.network import CGROUP_ROOT, EmulatedNetwork, LiveRates, require_emulator, require_netem
from emu.processes import (
    Processes,
    Started,
    Terminated,
    child_env,
    listening,
    new_tag,
    python_command,
    sigterm_raises,
)
from emu.topology import NodeSpec, Topology, describe
from halp.errors import BackendError
from halp.policy import Policy
from halp.runtime.dilation import DILATION_ENV, Dilation
from halp.runtime.lines import HOST_SERVING, WORKER_READY
from halp.scenario import Scenario
from halp.serving import plans_json
from halp.trace import Trace, TraceWriter, read_trace_dir, replay_records

NAME = "emu"
HOST_GRACE_S = 3.0  # after a worker dies: how long the host may take to notice and stop
POLL_S = 0.1


# ---- one run ------------------------------------------------------------------------------
class EmulatedRun:
    """Everything one run needs, and its teardown. `run()` is the whole lifecycle."""

    def __init__(self, scenario: Scenario, run_dir: Path, log: Callable[[str], None],
                 tag: str | None = None, devices: DevicePlan | None = None):
        from mininet.util import numCores

        self.scenario = scenario
        self.run_dir = run_dir.absolute()  # the device processes run in another directory
        self.log = log
        self.devices = devices or devices_of(scenario, log)
        self.topology: Topology = describe(scenario, tag or new_tag(), numCores(), self.devices)
        self.processes = Processes()
        self.cpus_awake = False
        self.secret_dir = Path(tempfile.mkdtemp(prefix="halp-emu-"))
        self.token_file = self.secret_dir / "token"
        self.timeout_s = scenario.backends.emu.timeout
        self.files: dict[str, Path] = {}
        self.rate_changes: list[tuple[float, str, float]] = []  # applied (run time, link, bps)
        self.io_tasks_fd: int | None = None

    def popen_args(self, spec: NodeSpec) -> dict[str, Any]:
        """Popen arguments for a device's process: its environment, with its dilation (the
        dilate model) or the descriptor its I/O threads leave the CPU quota by (the quota
        model, unless `backends.emu.io_in_quota`)."""
        if spec.core is not None:
            env = child_env(spec.threads)
            env[DILATION_ENV] = Dilation(spec.slowdown, spec.core).to_env()
            return {"env": env}
        if self.scenario.backends.emu.io_in_quota:
            return {"env": child_env(spec.threads)}
        if self.io_tasks_fd is None:
            self.io_tasks_fd = os.open(CGROUP_ROOT / "cpu" / "tasks", os.O_WRONLY | os.O_CLOEXEC)
        return {"env": child_env(spec.threads, self.io_tasks_fd),
                "pass_fds": (self.io_tasks_fd,)}

    def release_files(self) -> None:
        shutil.rmtree(self.secret_dir, ignore_errors=True)
        if self.io_tasks_fd is not None:
            os.close(self.io_tasks_fd)
            self.io_tasks_fd = None

    # files
    def write_inputs(self) -> dict[str, Path]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secret_dir, 0o700)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        files = {"scenario": self.run_dir / "scenario.yaml",
                 "endpoints": self.run_dir / "endpoints.json",
                 "topology": self.run_dir / "topology.txt"}
        files["scenario"].write_text(self.scenario.to_yaml())
        files["endpoints"].write_text(json.dumps(self.topology.endpoints(), indent=2) + "\n")
        files["topology"].write_text(self.topology.describe() + "\n")
        self.files = files
        return files

    def start_workers(self, net: EmulatedNetwork) -> None:
        for spec in self.topology.secondaries:
            log_path = self.run_dir / f"worker-{spec.device}.log"
            with log_path.open("w") as log_file:
                popen = net.node(spec.device).popen(
                    python_command("worker", "--listen", spec.endpoint, "--token",
                                   str(self.token_file), "--name", spec.device,
                                   "--threads", str(spec.threads)),
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                    **self.popen_args(spec), cwd=str(self.secret_dir))
            self.processes.add(Started(spec.device, "worker", popen, log_path))

    def wait_workers(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        waiting = {p.device: p for p in self.processes.workers()}
        began = time.monotonic()
        while waiting:
            for device, p in list(waiting.items()):
                spec = self.topology.node(device)
                if not p.alive():
                    raise BackendError(f"worker on {device} exited while starting (code "
                                       f"{p.popen.returncode}): {p.last_line() or 'no output'}")
                if WORKER_READY in p.log_text() and listening(p.pid, spec.ip, spec.port):
                    del waiting[device]
            if waiting and time.monotonic() > deadline:
                raise BackendError(f"worker on {', '.join(sorted(waiting))} did not listen within "
                                   f"{self.timeout_s:g} s (backends.emu.timeout)")
            time.sleep(POLL_S)
        self.log(f"{len(self.processes.workers())} workers up in {time.monotonic() - began:.1f} s")

    def start_host(self, net: EmulatedNetwork, files: dict[str, Path], policy: Policy,
                   out: Path) -> Started:
        """`halp host` in the host device's node, serving the plans `policy` serves (written
        beside its records, `OUT.plans.json`), records into `out`."""
        spec = self.topology.host
        files = {**files, "plans": out.parent / f"{out.name}.plans.json"}
        files["plans"].write_text(plans_json(policy))
        argv = python_command("host", str(files["scenario"]), "--plans", str(files["plans"]),
                              "--endpoints", str(files["endpoints"]),
                              "--token", str(self.token_file), "--out", str(out),
                              "--backend", NAME)
        popen = net.node(spec.device).popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, **self.popen_args(spec), cwd=str(self.secret_dir),
            text=True, bufsize=1)
        return self.processes.add(Started(spec.device, "host", popen,
                                          out.parent / f"{out.name}.log"))

    def serve(self, net: EmulatedNetwork, scenario: Scenario, policy: Policy, name: str) -> Trace:
        """One more host run, of `policy`'s plans, on the same network and workers (they stay up
        between runs): `scenario` must have the same devices and network; records go to
        `run_dir/name`."""
        if describe(scenario, self.topology.tag, self.topology.cores,
                    self.devices) != self.topology:
            raise BackendError(f"{scenario.name}: not the devices and network of this run")
        files = dict(self.files)
        files["scenario"] = self.run_dir / f"{name}.yaml"
        files["scenario"].write_text(scenario.to_yaml())
        live = LiveRates(net, self.log)
        try:
            self.follow_host(self.start_host(net, files, policy, self.run_dir / name), live)
        finally:
            live.stop()
        return read_trace_dir(self.run_dir / name, backend=NAME, method=scenario.method.name)

    def follow_host(self, host: Started, live: LiveRates) -> None:
        """Relay the host's lines until it exits; end the run if a worker dies."""
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(host.popen.stdout, lines, host.log_path),
                                  name="emu-host-output", daemon=True)
        reader.start()
        dead: Started | None = None
        dead_at = 0.0
        # A whole run may take long (many requests); only silence is bounded by the timeout.
        last_output = time.monotonic()
        while True:
            try:
                line = lines.get(timeout=POLL_S)
            except queue.Empty:
                line = ""
            if line is None:  # the host closed its output: it is exiting
                try:
                    host.popen.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    host.stop()
                break
            if line:
                last_output = time.monotonic()
                if line.startswith(HOST_SERVING):
                    live.start(float(line[len(HOST_SERVING):]))
                self.log(f"{self.topology.host.device}: {line}")
            if dead is None:
                dead = next((w for w in self.processes.workers() if not w.alive()), None)
                dead_at = time.monotonic()
            if dead is not None and time.monotonic() - dead_at > HOST_GRACE_S:
                break
            silence_s = max(self.timeout_s, 30.0)
            if time.monotonic() - last_output > silence_s:
                host.stop()
                raise BackendError(f"host on {self.topology.host.device} said nothing for "
                                   f"{silence_s:g} s (backends.emu.timeout); stopped it")
        reader.join(timeout=1.0)
        dead = dead or next((w for w in self.processes.workers() if not w.alive()), None)
        if dead is not None:
            host.stop()
            raise BackendError(f"worker on {dead.device} died mid-run (exit code "
                               f"{dead.popen.returncode}); finished requests are in "
                               f"{self.run_dir / 'host'}")
        if host.popen.returncode != 0:
            raise BackendError(f"host on {self.topology.host.device} failed (exit code "
                               f"{host.popen.returncode}): {host.last_line() or 'no output'}")

    @contextlib.contextmanager
    def serving(self) -> Iterator[EmulatedNetwork]:
        """The network with its workers up, for several `serve` calls in a row (benchmarks and
        figures measure several methods on one network); torn down on the way out."""
        try:
            self.write_inputs()
            with sigterm_raises(), EmulatedNetwork(self.topology, self.log) as net:
                try:
                    self.start_workers(net)
                    self.wait_workers()
                    yield net
                finally:
                    self.processes.stop_all()
        except Terminated:
            raise BackendError("emulator run stopped by SIGTERM") from None
        finally:
            self.release_files()

    def run(self, policy: Policy, writer: TraceWriter | None,
            before_host: Callable[[EmulatedNetwork], None] | None = None) -> Trace:
        """The whole lifecycle, serving the plans `policy` serves. `before_host(net)` runs once
        the workers are up and before the host starts (benchmarks measure the bare link there,
        in the same run)."""
        host_out = self.run_dir / "host"
        failure: BaseException | None = None
        try:
            files = self.write_inputs()
            with sigterm_raises(), EmulatedNetwork(self.topology, self.log) as net:
                self.cpus_awake = net.awake is not None and net.awake.held
                live = LiveRates(net, self.log)
                try:
                    self.start_workers(net)
                    self.wait_workers()
                    if before_host is not None:
                        before_host(net)
                    host = self.start_host(net, files, policy, host_out)
                    self.follow_host(host, live)
                finally:
                    try:
                        live.stop()
                    finally:
                        self.processes.stop_all()
                        self.rate_changes = list(live.applied)
        except Terminated:
            failure = BackendError("emulator run stopped by SIGTERM")
        except BaseException as exc:
            failure = exc
        finally:
            self.release_files()
            trace = read_trace_dir(host_out, backend=NAME, method=self.scenario.method.name)
            if writer is not None:
                replay_records(trace, writer)
        if failure is not None:
            raise failure
        runtime = host_out / "runtime.json"
        if runtime.is_file():
            trace.meta.update(json.loads(runtime.read_text()))
        trace.meta.update({"scenario": self.scenario.name, "run_dir": str(self.run_dir),
                           "tag": self.topology.tag, "network": self.topology.kind,
                           "cpu": self.devices.to_meta(),
                           "cpus_awake": self.cpus_awake,
                           "rate_changes": [{"time_s": round(t, 4), "link": d, "bps": bps}
                                            for t, d, bps in self.rate_changes]})
        if writer is not None:
            writer.trace.meta.update(trace.meta)
        return trace


def devices_of(scenario: Scenario, log: Callable[[str], None],
               policy: Policy | None = None) -> DevicePlan:
    """How each device of `scenario` is held to its speed on this machine now, said in the log
    before anything runs: with `policy`, each device's own ops in its plans are timed here
    (a second or two); without, four probe layers (half a second) stand in."""
    from halp.latency.probe import probe_machine, probe_ops

    profiles = {d.name: d.profile for d in scenario.cluster().devices}
    work = None
    if policy is not None:
        threads = {d.name: d.threads for d in scenario.devices}
        ops = ops_of(((s.plan, s.prepared.graph) for s in policy.served()), profiles)
        work = {device: timed_work(mine, probe_ops(
                    [(op.graph, op.start, op.stop, op.out) for op in mine], threads[device]))
                for device, mine in ops.items() if mine}
    devices = plan_devices(scenario, profiles, sorted(os.sched_getaffinity(0)),
                           lambda threads: probe_machine(threads=threads), work)
    for line in devices.notes:
        log(line)
    log(devices.summary())
    return devices


def _pump(stream: Any, lines: queue.Queue, log_path: Path | None) -> None:
    log = log_path.open("w") if log_path is not None else None
    try:
        for raw in stream:
            if log is not None:
                log.write(raw)
                log.flush()
            lines.put(raw.rstrip("\n"))
    except (OSError, ValueError):
        pass
    finally:
        if log is not None:
            log.close()
        lines.put(None)


class EmulatorBackend:
    """The emulator backend (`halp.backends.Backend`), which can also hold a process to a share
    of a core (`halp.backends.QuotaRunner`): profiles of emulated devices are measured there."""

    name = NAME

    def __init__(self, log: Callable[[str], None] | None = None):
        self.log = log or (lambda msg: print(f"emu: {msg}", file=sys.stderr, flush=True))

    def check(self, scenario: Scenario) -> None:
        """Refuse, in one line and before anything is written, what this machine cannot
        emulate; say how each device will be held to its speed."""
        require_emulator()
        from mininet.util import numCores

        require_netem(describe(scenario, new_tag(), numCores()).needs_netem)
        devices_of(scenario, lambda _line: None)  # refusals now; said when it runs

    def run(self, scenario: Scenario, policy: Policy, writer: TraceWriter) -> Trace:
        """Serve the scenario's workload on emulated devices with the plans `policy` serves;
        see the module docstring."""
        require_emulator()
        devices = devices_of(scenario, self.log, policy)
        if writer.out_dir is not None:
            return EmulatedRun(scenario, writer.out_dir / NAME, self.log,
                               devices=devices).run(policy, writer)
        with tempfile.TemporaryDirectory(prefix="halp-emu-run-") as tmp:
            return EmulatedRun(scenario, Path(tmp), self.log, devices=devices).run(policy, writer)

    def run_limited(self, args: list[str], cpu_share: float, threads: int = 1) -> int:
        """Run `halp ARGS...` inside one host limited to `cpu_share` of a core (what
        `halp profile --emu-cpu-share` uses); its exit code. See `emu.profile`."""
        return profile.run_limited(args, cpu_share, threads=threads)

    def probe_limited(self, cpu_share: float, threads: int = 1) -> dict[str, float]:
        """The machine probe (`halp.latency.probe`) taken inside one host limited to
        `cpu_share` of a core, as a profile measured there holds it (`quota_probe`)."""
        return profile.probe_limited(cpu_share, threads=threads)


BACKEND = EmulatorBackend()

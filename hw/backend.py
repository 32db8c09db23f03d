"""The hardware backend: `BACKEND.run(scenario, policy, writer) -> Trace` on devices over SSH.

This machine is the controller: it starts, watches and collects, and computes nothing of a
request. One run:

1. read the inventory (`hw.inventory`: every device's address and SSH settings) and connect to
   every device at once (`hw.ssh`); an unreachable device or a refused key is one line;
2. on each device make a run folder `<remote_dir>/runs/<tag>-<device>` with the guard; a fresh
   token (mode 0600) when this run starts the workers; on the host device also the scenario as
   it will load it (profiles, weights and bandwidth traces copied beside it), the endpoints and
   the plans this policy serves (`halp host --plans`, so the host runs exactly these plans);
3. start `halp worker` on every secondary (`backends.hw.start_workers: true`; otherwise the
   permanent workers of `hw/halp-worker.service` are used, with the token `halp hw setup`
   installed) and wait until each listens;
4. start `halp host` on the host device: the executor walks the plans there, talks to the
   workers directly, and maps every worker's op times onto the host's clock with its ping-pong
   offsets (`halp.runtime.clock`; `OpRecord.uncertainty_s` carries half the best round trip);
5. follow it: copy the host's `ops.jsonl` and `requests.jsonl` back as they grow (so the
   requests that finished are on this disk even if the host dies), and watch every worker and
   every SSH connection;
6. on every exit path stop exactly what it started, host first (the guard stops the command's
   process group when its stdin closes; `kill` by pid is the fallback), copy the logs back,
   remove the run folders, and put the records into `writer`.

Local layout: `<out>/hw/` holds `host/` (the host's records, `runtime.json`), one log per device
(`<device>.log`) and the files the host was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halp.errors import BackendError
from halp.policy import Policy
from halp.runtime.files import FILE_STORE, file_digest, model_files, stored_as
from halp.runtime.lines import WORKER_READY
from halp.scenario import Scenario
from halp.serving import plans_json
from halp.trace import OPS_FILE, REQUESTS_FILE, Trace, TraceWriter, read_trace_dir, replay_records
from hw.inventory import Inventory, Target, device_scenario, inventory
from hw.ssh import (
    CONNECT_TIMEOUT_S,
    GUARD,
    Device,
    Remote,
    connect_all,
    describe_exit,
    gather_or_cancel,
    require_asyncssh,
)

NAME = "hw"
DEAD_AFTER_S = 10.0  # the host calls a silent worker dead after this long
HOST_GRACE_S = 3.0  # after a worker or a device is lost: how long the host may take to stop
POLL_S = 0.5
MIRROR_S = 2.0  # how often the host's records are copied back


class HardwareRun:
    """Everything one run needs, and its teardown. `main()` is the whole lifecycle."""

    def __init__(self, scenario: Scenario, policy: Policy, run_dir: Path,
                 log: Callable[[str], None]):
        self.scenario = scenario
        self.policy = policy
        self.inv: Inventory = inventory(scenario)
        self.run_dir = run_dir
        self.log = log
        self.tag = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        self.devices: dict[str, Device] = {}
        self.dirs: dict[str, str] = {}  # device -> its run folder there
        self.python: dict[str, str] = {}
        self.home: dict[str, str] = {}  # device -> its remote_dir, resolved there
        self.token: dict[str, str] = {}
        self.remotes: list[Remote] = []
        self.mirror = run_dir / "host"
        self.offsets = {OPS_FILE: 0, REQUESTS_FILE: 0}
        self.finished = 0
        self.problems: list[str] = []
        self.signalled = False
        self.secret = secrets.token_hex(32) + "\n"  # this run's token, when it starts the workers

    # ---- lifecycle ------------------------------------------------------------------------
    async def main(self) -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        watching = threading.current_thread() is threading.main_thread()
        if watching and task is not None:
            def on_sigterm() -> None:
                self.signalled = True
                task.cancel()
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            try:
                await self.connect()
                await self.prepare()
                if self.inv.start_workers:
                    await self.start_workers()
                host = await self.start_host()
                await self.follow(host)
            finally:
                await self.teardown()
        except asyncio.CancelledError:
            if not self.signalled:
                raise
            if task is not None:
                task.uncancel()
            raise BackendError("hardware run stopped by SIGTERM") from None
        finally:
            if watching:
                loop.remove_signal_handler(signal.SIGTERM)

    async def connect(self) -> None:
        began = time.monotonic()
        timeout = min(CONNECT_TIMEOUT_S, self.inv.timeout_s)
        devices = await connect_all(list(self.inv.targets), timeout)
        self.devices = {d.name: d for d in devices}
        self.log(f"connected to {len(devices)} devices in {time.monotonic() - began:.1f} s")

    async def prepare(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.mirror.mkdir(parents=True, exist_ok=True)
        await gather_or_cancel(*(self._prepare(t) for t in self.inv.targets))

    async def _prepare(self, t: Target) -> None:
        device = self.devices[t.device]
        home = await device.resolve_home(self.inv.remote_dir)
        python = f"{home}/venv/bin/python"
        status, _, _ = await device.run(f"test -x {shlex.quote(python)}", check=False)
        if status != 0:
            raise BackendError(f"{t.device}: halp is not installed in {self.inv.remote_dir}/venv "
                               "there; run `halp hw setup SCENARIO` first")
        folder = f"{home}/runs/{self.tag}-{t.device}"
        await device.run(f"mkdir -p -m 700 {shlex.quote(folder)}/out",
                         what="creating the run folder")
        self.dirs[t.device], self.python[t.device] = folder, python
        self.home[t.device] = home
        await device.put(GUARD, f"{folder}/guard.py")
        if self.inv.start_workers:
            self.token[t.device] = f"{folder}/token"
            await device.write(f"{folder}/token", self.secret, mode=0o600)
        elif t.role == "host":
            self.token[t.device] = f"{home}/token"
            status, _, _ = await device.run(f"test -r {shlex.quote(home)}/token", check=False)
            if status != 0:
                raise BackendError(f"{t.device}: no token at {self.inv.remote_dir}/token for the "
                                   "running workers; run `halp hw setup SCENARIO` first")
        if t.role == "host":
            await self._host_files(device, folder)
        else:
            await self._model_files(device, f"{home}/{FILE_STORE}")

    async def _model_files(self, device: Device, store: str) -> None:
        """Put the model's files into a secondary's file store, where its worker looks for
        them by digest (`halp.runtime.files`); a file already there is not sent again."""
        for path in model_files(self.scenario.model_spec()).values():
            remote = str(stored_as(store, file_digest(path), path.name))
            status, _, _ = await device.run(f"test -f {shlex.quote(remote)}", check=False)
            if status == 0:
                continue
            folder = shlex.quote(str(Path(remote).parent))
            await device.run(f"mkdir -p -m 700 {folder}", what="creating the file store")
            part = f"{remote}.{self.tag}-{device.name}.part"  # stores may be shared (NFS)
            try:
                await device.put(path, part)
                await device.run(f"mv -f {shlex.quote(part)} {shlex.quote(remote)}",
                                 what="storing a model file")
            finally:  # no half-copied file stays behind (after the mv there is none)
                if not device.lost:
                    await device.run(f"rm -f {shlex.quote(part)}", check=False)

    async def _host_files(self, device: Device, folder: str) -> None:
        text, files = device_scenario(self.scenario)
        endpoints = {t.device: t.endpoint for t in self.inv.secondaries}
        local = {"scenario.yaml": text, "endpoints.json": json.dumps(endpoints, indent=2) + "\n",
                 "plans.json": plans_json(self.policy)}
        for name, content in local.items():
            (self.run_dir / name).write_text(content)
            await device.write(f"{folder}/{name}", content)
        dirs = sorted({str(Path(rel).parent) for rel in files})
        if dirs:
            await device.run(f"cd {shlex.quote(folder)} && mkdir -p "
                             + " ".join(shlex.quote(d) for d in dirs))
        for rel, path in files.items():
            await device.put(path, f"{folder}/{rel}")

    def _env(self, t: Target) -> dict[str, str]:
        return {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(t.threads),
                "MKL_NUM_THREADS": str(t.threads)}

    async def _start(self, t: Target, role: str, argv: list[str],
                     on_line: Callable[[str], None] | None = None) -> Remote:
        device, folder = self.devices[t.device], self.dirs[t.device]
        return await device.start(
            [self.python[t.device], "-m", "halp.cli", *argv], python=self.python[t.device],
            guard=f"{folder}/guard.py", log=f"{folder}/{role}.log", cwd=folder,
            env=self._env(t), role=role, on_line=on_line, into=self.remotes)

    async def start_workers(self) -> None:
        began = time.monotonic()
        workers = await gather_or_cancel(*(self._start(t, "worker", [
            "worker", "--listen", t.listen, "--token", self.token[t.device],
            "--name", t.device, "--threads", str(t.threads),
            "--files", f"{self.home[t.device]}/{FILE_STORE}"]) for t in self.inv.secondaries))
        timeout = self.inv.timeout_s

        async def ready(worker: Remote) -> None:
            await worker.wait_for(
                lambda: worker.said(WORKER_READY) or worker.done, timeout,
                lambda: f"worker on {worker.device.name} did not listen within {timeout:g} s "
                        f"(backends.hw.timeout): {worker.last_line() or 'no output'}")
            if worker.device.lost:
                raise BackendError(worker.device.lost_message("while its worker started"))
            if worker.done:
                raise BackendError(f"worker on {worker.device.name} exited while starting "
                                   f"({describe_exit(worker.status)}): "
                                   f"{worker.last_line() or 'no output'}")

        await gather_or_cancel(*(ready(w) for w in workers))
        if workers:
            self.log(f"{len(workers)} workers up in {time.monotonic() - began:.1f} s")

    async def start_host(self) -> Remote:
        t = self.inv.host
        folder = self.dirs[t.device]
        argv = ["host", f"{folder}/scenario.yaml", "--endpoints", f"{folder}/endpoints.json",
                "--token", self.token[t.device], "--out", f"{folder}/out", "--backend", "hw",
                "--plans", f"{folder}/plans.json", "--warmup", str(self.scenario.backends.hw.warmup_requests),
                "--dead-after", f"{DEAD_AFTER_S:g}"]

        def relay(line: str) -> None:
            if line.strip():
                self.log(f"{t.device}: {line}")

        return await self._start(t, "host", argv, on_line=relay)

    # ---- following the host ---------------------------------------------------------------
    async def follow(self, host: Remote) -> None:
        loop = asyncio.get_running_loop()
        workers = [r for r in self.remotes if r.role == "worker"]
        total = self.scenario.workload.requests
        silence = 2 * self.inv.timeout_s + 30.0 + (self.scenario.workload.interval or 0.0)
        last_progress = last_mirror = loop.time()
        failure: str | None = None
        failed_at = 0.0
        while True:
            waits = [f for f in (host.exited, *(w.exited for w in workers),
                                 *(d.closed for d in self.devices.values())) if not f.done()]
            if waits:
                await asyncio.wait(waits, timeout=POLL_S, return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(POLL_S)
            now = loop.time()
            if failure is None and (failure := self._lost(workers)) is not None:
                failed_at = now
            host_device = self.devices[self.inv.host.device]
            if now - last_mirror >= MIRROR_S and not host_device.lost:
                last_mirror = now
                with contextlib.suppress(BackendError):
                    if await self.copy_records():
                        last_progress = now
                        self.log(f"{self.finished} of {total} requests done")
            if host.done or (failure is not None and now - failed_at > HOST_GRACE_S):
                break
            if now - last_progress > silence:
                raise BackendError(f"host on {host.device.name}: no request finished for "
                                   f"{silence:.0f} s (backends.hw.timeout {self.inv.timeout_s:g} s); "
                                   "stopped the run")
        failure = failure or self._lost(workers)
        if failure is not None:
            raise BackendError(f"{failure}; finished requests are in {self.mirror}")
        if host.status != 0:
            last = host.last_line().removeprefix("halp host: ") or "no output"
            raise BackendError(f"host on {host.device.name} failed ({describe_exit(host.status)}): "
                               f"{last}")

    def _lost(self, workers: list[Remote]) -> str | None:
        """The first device or worker lost, as one line (None: all well)."""
        for t in self.inv.targets:
            device = self.devices[t.device]
            if device.lost:
                what = " (the host)" if t.role == "host" else ""
                return device.lost_message("mid-run").replace(f"to {t.device} ", f"to {t.device}{what} ")
        for w in workers:
            if w.done:
                said = "" if w.status is None or w.status > 128 else f": {w.last_line() or 'no output'}"
                return f"worker on {w.device.name} died mid-run ({describe_exit(w.status)}){said}"
        return None

    async def copy_records(self) -> bool:
        """Append what the host wrote since the last copy; True if a request finished."""
        device = self.devices[self.inv.host.device]
        out = f"{self.dirs[self.inv.host.device]}/out"
        grew = False
        for name in (OPS_FILE, REQUESTS_FILE):
            try:
                data = await device.read_from(f"{out}/{name}", self.offsets[name])
            except Exception as exc:  # the connection dropped between two polls
                raise BackendError(f"cannot copy {name} back: {exc}") from None
            if data:
                with (self.mirror / name).open("ab") as handle:
                    handle.write(data)
                self.offsets[name] += len(data)
                if name == REQUESTS_FILE:
                    self.finished += data.count(b"\n")
                    grew = True
        return grew

    # ---- teardown -------------------------------------------------------------------------
    async def teardown(self) -> None:
        """Stop what this run started (host first), bring back the records and the logs,
        remove the run folders. Never raises: problems are logged."""
        try:
            for group in (["host"], ["worker"]):
                stops = [r.stop() for r in self.remotes if r.role in group]
                for problem in await asyncio.gather(*stops, return_exceptions=True):
                    if problem:
                        self.problems.append(str(problem))
            host = self.devices.get(self.inv.host.device)
            if host is not None and not host.lost and self.inv.host.device in self.dirs:
                try:
                    await self.copy_records()
                    await host.get(f"{self.dirs[self.inv.host.device]}/out/runtime.json",
                                   self.mirror / "runtime.json")
                except BackendError as exc:
                    self.problems.append(str(exc))
            await asyncio.gather(*(self._collect(name) for name in self.dirs),
                                 return_exceptions=True)
        finally:
            await asyncio.gather(*(d.close() for d in self.devices.values()),
                                 return_exceptions=True)
        for problem in self.problems:
            self.log(f"warning: {problem}")

    async def _collect(self, name: str) -> None:
        device, folder = self.devices[name], self.dirs[name]
        if device.lost:
            return
        try:
            for role in ("worker", "host"):
                await device.get(f"{folder}/{role}.log", self.run_dir / f"{name}.log")
            assert "/runs/" in folder
            await device.run(f"rm -rf -- {shlex.quote(folder)}", timeout_s=30.0,
                             what="removing the run folder")
        except BackendError as exc:
            self.problems.append(str(exc))

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"scenario": self.scenario.name, "run_dir": str(self.run_dir),
                                "tag": self.tag, "start_workers": self.inv.start_workers,
                                "devices": {t.device: {"role": t.role, "ssh": t.where,
                                                       "endpoint": t.endpoint}
                                            for t in self.inv.targets}}
        runtime = self.mirror / "runtime.json"
        if runtime.is_file():
            with contextlib.suppress(ValueError):
                meta["runtime"] = json.loads(runtime.read_text())
        if isinstance(meta.get("runtime"), dict) and "resident_bytes" in meta["runtime"]:
            meta["resident_bytes"] = meta["runtime"]["resident_bytes"]  # where reports read it
        return meta


def _execute(scenario: Scenario, policy: Policy, writer: TraceWriter, run_dir: Path,
             log: Callable[[str], None]) -> Trace:
    hw_run = HardwareRun(scenario, policy, run_dir, log)
    failure: BaseException | None = None
    try:
        asyncio.run(hw_run.main())
    except BaseException as exc:
        failure = exc
    trace = read_trace_dir(hw_run.mirror, backend=NAME, method=scenario.method.name)
    replay_records(trace, writer)
    if failure is not None:
        raise failure
    trace.meta.update(hw_run.meta())
    writer.trace.meta.update(trace.meta)
    return trace


class HardwareBackend:
    """The hardware backend (`halp.backends.Backend`): devices over SSH."""

    name = NAME

    def __init__(self, log: Callable[[str], None] | None = None):
        self.log = log or (lambda msg: print(f"hw: {msg}", file=sys.stderr, flush=True))

    def check(self, scenario: Scenario) -> None:
        """Refuse, before anything is written, a scenario this controller cannot drive: no SSH
        client library, or a device without an address."""
        require_asyncssh()
        inventory(scenario)

    def run(self, scenario: Scenario, policy: Policy, writer: TraceWriter) -> Trace:
        """Serve the scenario's workload on the devices it names, with the plans `policy`
        serves (sent to the host, which serves exactly these); see the module docstring."""
        self.check(scenario)
        if writer.out_dir is not None:
            return _execute(scenario, policy, writer, writer.out_dir / NAME, self.log)
        with tempfile.TemporaryDirectory(prefix="halp-hw-run-") as tmp:
            return _execute(scenario, policy, writer, Path(tmp), self.log)


BACKEND = HardwareBackend()

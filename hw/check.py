"""`halp hw check`: is every device ready for a run, and what are its clock and links like?

Per device: reachable over SSH; Python and torch versions (of the venv `halp hw setup` made, or
of `devices[].python` before setup); the digest of the scenario's model as the device builds it
(`halp.model.zoo.model_digest`), against this machine's; and, for each secondary, measured from
the host device with `hw/probe.py`: the wall-clock offset to the host (ping-pong, best of
`rounds`, with its uncertainty) and a short bandwidth sample in each direction.

It starts a probe server on each secondary (under the guard, stopped by its pid at the end) and
runs the probe client on the host; the probe files go to `<remote_dir>/check-<tag>` and are
removed. Nothing runs on a device afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shlex
import sys
import time
from collections.abc import Callable
from typing import Any

from halp.errors import BackendError
from halp.network import line_rate_bps
from halp.runtime.files import model_files
from halp.scenario import Scenario
from hw.inventory import Inventory, Target, inventory, model_json
from hw.ssh import CONNECT_TIMEOUT_S, GUARD, Device, Remote, connect

PROBE = GUARD.with_name("probe.py")
PROBE_READY = "halp-probe listening on"
ROUNDS = 16
PROBE_BYTES = 2_000_000


def local_digest(scenario: Scenario) -> str:
    from halp.model.zoo import build_model, model_digest

    return model_digest(build_model(scenario.model_spec()))


class Checker:
    def __init__(self, scenario: Scenario, rounds: int, probe_bytes: int,
                 log: Callable[[str], None]):
        self.scenario = scenario
        self.inv: Inventory = inventory(scenario)
        self.rounds, self.probe_bytes, self.log = rounds, probe_bytes, log
        self.tag = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
        self.devices: dict[str, Device] = {}
        self.folders: dict[str, str] = {}
        self.pythons: dict[str, str] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.servers: list[Remote] = []

    async def main(self) -> list[dict[str, Any]]:
        want = local_digest(self.scenario)
        try:
            await asyncio.gather(*(self._device(t, want) for t in self.inv.targets))
            await self._links()
        finally:
            for server in self.servers:
                with contextlib.suppress(Exception):
                    await server.stop()
            for name, device in self.devices.items():
                if name in self.folders and not device.lost:
                    with contextlib.suppress(Exception):
                        assert "/check-" in self.folders[name]
                        await device.run(f"rm -rf -- {shlex.quote(self.folders[name])}")
                await device.close()
        return [self.results[t.device] for t in self.inv.targets]

    async def _device(self, t: Target, want: str) -> None:
        result: dict[str, Any] = {
            "device": t.device, "role": t.role, "ssh": t.where, "reachable": False,
            "connect_s": None, "machine": None, "python": None, "torch": None, "installed": None,
            "model_digest": None, "digest_matches": None, "expected_digest": want,
            "clock_offset_s": 0.0 if t.role == "host" else None,
            "clock_uncertainty_s": 0.0 if t.role == "host" else None,
            "to_bps": None, "from_bps": None, "problems": []}
        self.results[t.device] = result
        began = time.monotonic()
        try:
            device = await connect(t, min(CONNECT_TIMEOUT_S, self.inv.timeout_s))
        except BackendError as exc:
            result["problems"].append(str(exc))
            return
        self.devices[t.device] = device
        result["reachable"] = True
        result["connect_s"] = time.monotonic() - began
        try:
            home = await device.resolve_home(self.inv.remote_dir)
            venv = f"{home}/venv/bin/python"
            has_venv = (await device.run(f"test -x {shlex.quote(venv)}", check=False))[0] == 0
            python = venv if has_venv else t.python
            self.pythons[t.device] = python
            folder = f"{home}/check-{self.tag}-{t.device}"
            await device.run(f"mkdir -p -m 700 {shlex.quote(folder)}")
            self.folders[t.device] = folder
            await device.put(PROBE, f"{folder}/probe.py")
            await device.put(GUARD, f"{folder}/guard.py")
            placed = {}  # the model's own files, beside the probe
            for role, path in model_files(self.scenario.model_spec()).items():
                placed[role] = f"{folder}/{path.name}"
                await device.put(path, placed[role])
            spec = json.dumps(model_json(self.scenario, placed))
            _, out, _ = await device.run(
                f"{shlex.quote(python)} {shlex.quote(folder)}/probe.py info --model {shlex.quote(spec)}",
                timeout_s=max(self.inv.timeout_s, 60.0), what="the probe (info)")
            facts = json.loads(out.strip().splitlines()[-1])
            result.update({k: facts.get(k) for k in ("machine", "python", "torch")})
            result["model_digest"] = facts.get("model_digest")
            _, out, _ = await device.run(f"cat {shlex.quote(home)}/installed.json 2>/dev/null; true")
            with contextlib.suppress(ValueError):
                result["installed"] = json.loads(out).get("digest") if out.strip() else None
            if not has_venv:
                result["problems"].append(f"not set up: no {self.inv.remote_dir}/venv "
                                          "(run halp hw setup)")
            elif facts.get("error"):
                result["problems"].append(facts["error"])
            if result["model_digest"] is not None:
                result["digest_matches"] = result["model_digest"] == want
                if not result["digest_matches"]:
                    result["problems"].append(f"model digest {result['model_digest']} differs "
                                              f"from this machine's {want} (torch version?)")
        except (BackendError, ValueError, IndexError) as exc:
            result["problems"].append(str(exc))

    async def _links(self) -> None:
        host = self.inv.host
        if host.device not in self.folders:
            for t in self.inv.secondaries:
                self.results[t.device]["problems"].append("no clock or bandwidth probe: the host "
                                                          "is not reachable")
            return
        ports: dict[str, int] = {}

        async def serve(t: Target) -> None:
            device, folder = self.devices[t.device], self.folders[t.device]
            server = await device.start(
                [self.pythons[t.device], f"{folder}/probe.py", "serve", "--bind", t.bind,
                 "--max-s", f"{max(60.0, 4 * self.inv.timeout_s):g}"],
                python=self.pythons[t.device], guard=f"{folder}/guard.py",
                log=f"{folder}/probe.log", cwd=folder, role="probe server", into=self.servers)
            await server.wait_for(lambda: server.said(PROBE_READY) or server.done, 30.0,
                                  lambda: f"{t.device}: the probe server did not start")
            line = next((ln for ln in server.lines if PROBE_READY in ln), None)
            if line is None:
                raise BackendError(f"{t.device}: the probe server exited: {server.last_line()}")
            ports[t.device] = int(line.rsplit(" ", 1)[1])

        ready = [t for t in self.inv.secondaries if t.device in self.folders]
        outcomes = await asyncio.gather(*(serve(t) for t in ready), return_exceptions=True)
        for t, outcome in zip(ready, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                self.results[t.device]["problems"].append(str(outcome))
        targets = [f"{t.device}={t.address}:{ports[t.device]}" for t in ready if t.device in ports]
        if not targets:
            return
        folder = self.folders[host.device]
        argv = [self.pythons[host.device], f"{folder}/probe.py", "client", *targets,
                "--rounds", str(self.rounds), "--bytes", str(self.probe_bytes)]
        try:
            _, out, _ = await self.devices[host.device].run(
                " ".join(shlex.quote(a) for a in argv), timeout_s=60.0 + 10 * len(targets),
                what="the probe (clock and bandwidth)")
            measured = json.loads(out.strip().splitlines()[-1])
        except (BackendError, ValueError, IndexError) as exc:
            for t in ready:
                self.results[t.device]["problems"].append(f"probe from the host: {exc}")
            return
        for name, m in measured.items():
            result = self.results[name]
            if m.get("error"):
                result["problems"].append(f"probe from the host: {m['error']}")
                continue
            result.update({"clock_offset_s": m["offset_s"],
                           "clock_uncertainty_s": m["uncertainty_s"],
                           # the probe measures payload; a scenario's bandwidth counts frames
                           "to_bps": line_rate_bps(m["to_bps"]),
                           "from_bps": line_rate_bps(m["from_bps"])})


def check(scenario: Scenario, rounds: int = ROUNDS, probe_bytes: int = PROBE_BYTES,
          log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """One result per device (see `Checker`); problems are listed, never raised."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    return asyncio.run(Checker(scenario, rounds, probe_bytes, log).main())


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:+.2f}"


def _mbps(value: float | None) -> str:
    return "-" if value is None else f"{value / 1e6:.0f}"


def format_table(results: list[dict[str, Any]]) -> list[str]:
    header = (f"{'device':<10} {'role':<9} {'ssh':<24} {'python':<7} {'torch':<12} "
              f"{'model':<17} {'offset ms':>10} {'+-ms':>6} {'to Mb/s':>8} {'from Mb/s':>9}")
    lines = [header]
    for r in results:
        if not r["reachable"]:
            lines.append(f"{r['device']:<10} {r['role']:<9} {r['ssh']:<24} unreachable")
        else:
            digest = r["model_digest"] or "-"
            if r["digest_matches"] is True:
                digest += " ok"
            elif r["digest_matches"] is False:
                digest += " !!"
            unc = r["clock_uncertainty_s"]
            lines.append(
                f"{r['device']:<10} {r['role']:<9} {r['ssh']:<24} {r['python'] or '-':<7} "
                f"{r['torch'] or '-':<12} {digest:<17} {_ms(r['clock_offset_s']):>10} "
                f"{'-' if unc is None else f'{unc * 1e3:.2f}':>6} {_mbps(r['to_bps']):>8} "
                f"{_mbps(r['from_bps']):>9}")
        lines += [f"  {r['device']}: {p}" for p in r["problems"]]
    return lines

"""Realise a `Topology` with Mininet: CPU-limited hosts, one bridge, HTB-shaped links.

- Each device is a `CPULimitedHost` (its own network namespace and a CFS cgroup). A dilated
  device (`emu.devices`) has no quota: its compute runs on a core of its own and its process
  holds each op back itself (`halp.runtime.dilation`). Under the quota model it is limited to
  `cpu_share` of one core: Mininet's fraction is of the whole machine, so it gets
  `cpu_share / cores`, with the CFS period from `backends.emu.cfs_period_us` (10 ms by default
  instead of Mininet's 100 ms, so a 20 ms op is not stretched to a whole period). Its cgroup
  also gets a high `cpu.shares`, so that other busy processes cannot push it below its share.
- The switch is a plain Linux bridge made with iproute2 (`Bridge` below): no OpenFlow
  controller, no Open vSwitch kernel module, no `brctl`.
- Links are `TCLink`s shaped with HTB (Mininet's class 5:1, burst 15 kB) at the rate of the
  topology; the rates are read back from the kernel and a mismatch is an error.
- Every emulated interface sends segments of at most `SEGMENT_MAX_BYTES` (`gso_max_size`)
  and merges none it receives (GRO off), both read back. HTB lets a whole segment through
  whenever the class has any tokens left, so a block arrives one last segment's time early:
  with TCP's default 64 kB segments, a 57 kB block sent after an idle gap crossed a 100 Mbps
  link in 0.07-0.7 ms instead of the 4.8 its frames take. Single frames (offloads off) are
  exact, but every frame then costs its kernel work in a softirq, which the kernel charges
  to whichever thread it interrupts: a dilated compute thread, whose CPU time dilation
  multiplies (MoDNN on the shared channel came out 13-19% slow). 8 kB segments bound the
  early arrival at 0.65 ms at 100 Mbps and the work at one softirq pass per 5-6 frames.
- A shared channel is an IFB device whose one HTB class carries every packet that enters the
  bridge (an ingress `mirred` redirect on each bridge port).
- Delay, jitter and loss need the `netem` qdisc. When the kernel lacks it the network refuses to
  start with one line saying so; it never runs without them silently.
- `LiveRates` changes HTB rates on schedule (`tc class change`) for links with bandwidth traces.
- `AwakeCpus` keeps the machine's idle CPUs polling while the network is up
  (`backends.emu.keep_cpus_awake`, on by default; see emu/README).

Mininet is used for what it does well (namespaces, veth pairs, cgroups, `TCIntf`); its global
set-up (`fixLimits`, which raises system-wide sysctls) and its cleanup by process name
(`mn -c`) are not: `EmulatedNetwork.stop` removes exactly what `start` made.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emu.topology import HTB_BURST_BYTES, PREFIX_LEN, Topology, rate_changes
from halp.errors import BackendError

INSTALL_HINT = "the emulator needs root and Mininet (apt-get install mininet cgroup-tools)"
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("cpu", "cpuacct", "cpuset")
RATE_TOLERANCE = 0.01
# The largest segment an emulated interface sends (see the module's docstring): a block
# arrives at most this many bytes' time early on its link.
SEGMENT_MAX_BYTES = 8192
# cpu.shares of every emulated device (the kernel's default is 1024, a nice-0 task's weight).
# CFS bandwidth control only caps a device at its quota; when other processes keep the cores
# busy, a device with the default weight gets less than its share. With this weight it wins
# its quota from up to ~15 busy nice-0 tasks per core, so a quarter core stays a quarter core.
CPU_WEIGHT = 16 * 1024


def require_emulator() -> None:
    """Raise one line unless this process can build Mininet networks."""
    if os.geteuid() != 0:
        raise BackendError(INSTALL_HINT + "; this process is not root")
    try:
        import mininet.net  # noqa: F401
    except ImportError:
        raise BackendError(INSTALL_HINT + "; then run `.venv/bin/python emu/link_mininet.py`") from None
    missing = [tool for tool in ("mnexec", "tc", "ip", "ethtool", "cgcreate", "cgdelete",
                                 "cgclassify")
               if shutil.which(tool) is None]
    if missing:
        raise BackendError(f"{INSTALL_HINT}; missing {', '.join(missing)}")


def netem_available() -> bool:
    """Can this kernel add a netem qdisc? Tried in a throwaway network namespace."""
    probe = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root",
                            "netem", "delay", "1ms"], capture_output=True, text=True)
    return probe.returncode == 0


def require_netem(needed: bool) -> None:
    """Raise one line when delay, jitter or loss is asked for and this kernel has no netem."""
    if needed and not netem_available():
        raise BackendError("network.delay/jitter/loss need the `netem` qdisc, which this "
                           "kernel lacks (CONFIG_NET_SCH_NETEM); set them to 0 or use the "
                           "simulator")


def run(argv: list[str], where: str = "") -> str:
    """Run a command in the root namespace; raise one line on failure."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise BackendError(f"{where or argv[0]}: `{' '.join(argv)}` failed: "
                           f"{detail[0] if detail else 'exit ' + str(done.returncode)}")
    return done.stdout


def run_in(pid: int | None, argv: list[str], where: str = "") -> str:
    """Run a command in the network namespace of process `pid` (not in its cgroup); with
    None, in the root namespace."""
    return run(argv if pid is None else ["mnexec", "-a", str(pid), *argv], where)


# ---- the switch ---------------------------------------------------------------------------
def _bridge_class() -> type:
    from mininet.node import Switch

    class Bridge(Switch):
        """A Linux bridge made with iproute2: forwards by MAC learning, needs no controller."""

        def start(self, _controllers: Any) -> None:
            run(["ip", "link", "add", "name", self.name, "type", "bridge",
                 "forward_delay", "0"], self.name)
            for intf in self.intfList():
                if self.name in intf.name:
                    run(["ip", "link", "set", "dev", intf.name, "master", self.name], self.name)
            run(["ip", "link", "set", "dev", self.name, "up"], self.name)

        def connected(self) -> bool:
            return True

        def stop(self, deleteIntfs: bool = True) -> None:
            subprocess.run(["ip", "link", "del", "dev", self.name], capture_output=True)
            super().stop(deleteIntfs)

    return Bridge


# ---- idle CPUs ----------------------------------------------------------------------------
PM_QOS_DEVICE = Path("/dev/cpu_dma_latency")


class AwakeCpus:
    """A zero-latency PM QoS request on `/dev/cpu_dma_latency`, held while it is open: the
    kernel then polls in idle instead of halting. A throttled device leaves its CPU idle for
    most of every period; halted, a virtual CPU gives its core back to the hypervisor and
    resumes on cold caches, which made a quarter-core device's compute spread and drift
    (emu/README). The request ends when the file is closed, by `close` or by the process's
    exit, so nothing outlives the run."""

    def __init__(self, log: Callable[[str], None]):
        self.fd: int | None = None
        try:
            self.fd = os.open(PM_QOS_DEVICE, os.O_WRONLY)
            os.write(self.fd, struct.pack("i", 0))
        except OSError as exc:
            self.close()
            log(f"idle CPUs will halt: cannot hold {PM_QOS_DEVICE} ({exc.strerror})")

    @property
    def held(self) -> bool:
        return self.fd is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---- the network --------------------------------------------------------------------------
class EmulatedNetwork:
    """A running emulation of one topology. Use as a context manager: `stop` always runs and
    removes the hosts, their cgroups, the links, the bridge and the IFB device it made."""

    def __init__(self, topology: Topology, log: Callable[[str], None] | None = None):
        self.topology = topology
        self.log = log or (lambda _msg: None)
        self.net: Any = None
        self.nodes: dict[str, Any] = {}  # device -> Mininet host
        self.switch_port: dict[str, str] = {}  # device -> bridge-side interface name
        self._ifb_made = False
        self._stopped = False
        self.awake: AwakeCpus | None = None

    def __enter__(self) -> EmulatedNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- building -------------------------------------------------------------------------
    def start(self) -> None:
        require_emulator()
        topo = self.topology
        netem = topo.needs_netem
        require_netem(netem)
        self._check_free()
        if topo.keep_cpus_awake:
            self.awake = AwakeCpus(self.log)
        from mininet.link import Link, TCLink
        from mininet.log import setLogLevel
        from mininet.net import Mininet
        from mininet.node import CPULimitedHost

        setLogLevel("critical")  # tc's warnings arrive as "*** Error"; we read back instead
        Mininet.inited = True  # skip Mininet.init: we checked root; no system-wide fixLimits
        self.net = Mininet(topo=None, build=False, controller=None, host=CPULimitedHost,
                           switch=_bridge_class(), link=Link, ipBase=f"{topo.host.ip}/{PREFIX_LEN}",
                           autoSetMacs=False, waitConnected=False)
        for spec in topo.nodes:
            self.nodes[spec.device] = self.net.addHost(
                spec.node, cls=CPULimitedHost, ip=f"{spec.ip}/{PREFIX_LEN}",
                cpu=topo.cpu_fraction(spec.device), sched="cfs", period_us=topo.cfs_period_us)
        switch = self.net.addSwitch(topo.switch, dpid="1")
        for spec in topo.nodes:
            link = topo.link(spec.device)
            params: dict[str, Any] = {}
            if link.shaped:
                assert link.rate_bps is not None
                params["bw"] = link.rate_bps / 1e6  # Mininet takes Mbit/s
            if netem and spec.role != "host":
                params.update(_netem_params(topo))
            made = self.net.addLink(self.nodes[spec.device], switch,
                                    cls=TCLink if params else Link, **params)
            self.switch_port[spec.device] = made.intf2.name
        self.net.build()
        self.net.start()
        for spec in topo.nodes:  # the quota is a cap; a high weight makes it a guarantee too
            (CGROUP_ROOT / "cpu" / spec.node / "cpu.shares").write_text(f"{CPU_WEIGHT}\n")
        if topo.channel_bps is not None:
            self._make_channel(topo.channel_bps)
        self._limit_segments()
        self._check()
        self.log(topo.describe())

    def _make_channel(self, bps: float) -> None:
        ifb = self.topology.ifb
        assert ifb is not None
        run(["ip", "link", "add", "name", ifb, "type", "ifb"], "shared channel")
        self._ifb_made = True
        run(["ip", "link", "set", "dev", ifb, "up"], "shared channel")
        run(["tc", "qdisc", "add", "dev", ifb, "root", "handle", "5:0", "htb", "default", "1"],
            "shared channel")
        run(["tc", "class", "add", "dev", ifb, "parent", "5:0", "classid", "5:1", "htb",
             "rate", f"{bps:.0f}bit", "burst", f"{HTB_BURST_BYTES}b"], "shared channel")
        for port in self.switch_port.values():
            run(["tc", "qdisc", "add", "dev", port, "handle", "ffff:", "ingress"], "shared channel")
            run(["tc", "filter", "add", "dev", port, "parent", "ffff:", "protocol", "all", "u32",
                 "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb],
                "shared channel")

    def _interfaces(self) -> list[tuple[str, int | None]]:
        """Every interface of the emulation: (name, pid of its namespace; None for the root)."""
        return ([(spec.intf, self.nodes[spec.device].pid) for spec in self.topology.nodes]
                + [(port, None) for port in self.switch_port.values()])

    def _limit_segments(self) -> None:
        for name, pid in self._interfaces():
            for argv in (["ip", "link", "set", "dev", name, "gso_max_size", str(SEGMENT_MAX_BYTES)],
                         ["ethtool", "-K", name, "gro", "off"]):
                run_in(pid, argv, f"{name} segments")

    def _check_free(self) -> None:
        """Refuse to start over names that exist (another run with the same tag)."""
        topo = self.topology
        taken = [n.node for n in topo.nodes if (CGROUP_ROOT / "cpu" / n.node).exists()]
        links = run(["ip", "-o", "link", "show"])
        names = [topo.switch, *(n.intf for n in topo.nodes)] + ([topo.ifb] if topo.ifb else [])
        taken += [n for n in names if re.search(rf"\d+: {re.escape(n)}[@:]", links)]
        if taken:
            raise BackendError(f"emulator names {', '.join(taken)} are in use on this machine; "
                               "another run with the same tag is alive")

    def _check(self) -> None:
        """Read back what the kernel holds: segment sizes, HTB rates and CFS quotas."""
        for name, pid in self._interfaces():
            shown = [run_in(pid, argv, name) for argv in
                     (["ip", "-d", "link", "show", "dev", name], ["ethtool", "-k", name])]
            segment = re.search(r"gso_max_size (\d+)", shown[0])
            gro = re.search(r"^generic-receive-offload: (\w+)", shown[1], re.MULTILINE)
            if (segment is None or int(segment.group(1)) != SEGMENT_MAX_BYTES
                    or gro is None or gro.group(1) != "off"):
                raise BackendError(f"{name}: segments of {segment.group(1) if segment else '?'} "
                                   f"bytes, GRO {gro.group(1) if gro else '?'}; wanted "
                                   f"{SEGMENT_MAX_BYTES} and off, else HTB shapes whole "
                                   "super-packets")
        for spec in self.topology.nodes:
            link = self.topology.link(spec.device)
            if link.shaped:
                assert link.rate_bps is not None
                self.check_rate(spec.device, link.rate_bps)
            quota = int((CGROUP_ROOT / "cpu" / spec.node / "cpu.cfs_quota_us").read_text())
            period = int((CGROUP_ROOT / "cpu" / spec.node / "cpu.cfs_period_us").read_text())
            if self.topology.cpu_model == "dilate":  # no quota: its compute has a core alone
                if quota != -1:
                    raise BackendError(f"{spec.device}: the cgroup holds a quota ({quota}/{period} "
                                       "us), but the device is dilated")
                continue
            share = quota / period
            if abs(share - spec.cpu_share) > 0.02 * spec.cpu_share:
                raise BackendError(f"{spec.device}: the cgroup gives {share:.3f} of a core "
                                   f"({quota}/{period} us), not {spec.cpu_share:g}")

    def check_rate(self, device: str, bps: float) -> None:
        for where, got in self.rates(device).items():
            if abs(got - bps) > RATE_TOLERANCE * bps:
                raise BackendError(f"{device}: HTB on {where} shapes at {got:.0f} bps, "
                                   f"not {bps:.0f}")

    def rates(self, device: str) -> dict[str, float]:
        """The HTB rate of class 5:1 on both ends of a device's link (interface -> bps)."""
        node = self.nodes[device]
        spec = self.topology.node(device)
        return {spec.intf: _class_rate(run_in(node.pid, ["tc", "class", "show", "dev", spec.intf])),
                self.switch_port[device]: _class_rate(run(["tc", "class", "show", "dev",
                                                           self.switch_port[device]]))}

    def set_rate(self, device: str, bps: float) -> None:
        """Change the rate of a device's link, both directions, while traffic flows."""
        node = self.nodes[device]
        spec = self.topology.node(device)
        change = ["tc", "class", "change", "dev", "{dev}", "parent", "5:0", "classid", "5:1",
                  "htb", "rate", f"{bps:.0f}bit", "burst", f"{HTB_BURST_BYTES}b"]
        run_in(node.pid, [a.replace("{dev}", spec.intf) for a in change], f"{device} link")
        port = self.switch_port[device]
        run([a.replace("{dev}", port) for a in change], f"{device} link")

    def node(self, device: str) -> Any:
        return self.nodes[device]

    # ---- tearing down ---------------------------------------------------------------------
    def stop(self) -> None:
        """Remove everything `start` made, whatever state it reached. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.awake is not None:
            self.awake.close()
        problems: list[str] = []
        if self.net is not None:
            try:
                self.net.stop()
            except Exception as exc:  # keep going: the leftovers are removed below
                problems.append(f"mininet stop: {exc}")
        # Whatever Mininet left (a half-built net, a shell that ignored SIGHUP): by name and
        # pid of what we made, never by pattern.
        for node in list(self.nodes.values()):
            shell = getattr(node, "shell", None)
            if shell is not None and shell.poll() is None:
                _kill_group(shell.pid)
        for port in self.switch_port.values():
            subprocess.run(["ip", "link", "del", "dev", port], capture_output=True)
        names = [self.topology.switch]
        if self._ifb_made and self.topology.ifb is not None:
            names.append(self.topology.ifb)
        for name in names:
            subprocess.run(["ip", "link", "del", "dev", name], capture_output=True)
        for spec in self.topology.nodes:
            _remove_cgroup(spec.node)
        left = self.leftovers()
        if left:
            problems.append("left behind: " + ", ".join(left))
        if problems:
            raise BackendError("emulator teardown incomplete: " + "; ".join(problems))

    def leftovers(self) -> list[str]:
        topo = self.topology
        left = [f"cgroup {c}/{n.node}" for n in topo.nodes for c in CGROUP_CONTROLLERS
                if (CGROUP_ROOT / c / n.node).exists()]
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        names = [topo.switch, *self.switch_port.values()] + ([topo.ifb] if topo.ifb else [])
        left += [f"interface {n}" for n in names if re.search(rf"\d+: {re.escape(n)}[@:]", links)]
        return left


def _netem_params(topo: Topology) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if topo.delay_s:
        params["delay"] = f"{topo.delay_s * 1e3:g}ms"
    if topo.jitter_s:
        params["jitter"] = f"{topo.jitter_s * 1e3:g}ms"
    if topo.loss:
        params["loss"] = topo.loss * 100.0  # Mininet takes percent
    return params


_RATE = re.compile(r"\brate (\d+(?:\.\d+)?)([KMG]?)bit\b")


def _class_rate(tc_output: str) -> float:
    """The rate of HTB class 5:1 in `tc class show` output, in bits per second."""
    for line in tc_output.splitlines():
        if "htb 5:1 " in line:
            match = _RATE.search(line)
            if match:
                scale = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9}[match.group(2)]
                return float(match.group(1)) * scale
    raise BackendError(f"no HTB class 5:1 in `tc class show`: {tc_output.strip()[:120]!r}")


def _kill_group(pid: int, grace_s: float = 2.0) -> None:
    """SIGTERM the process group led by `pid`, SIGKILL it after `grace_s`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _remove_cgroup(name: str) -> None:
    for controller in CGROUP_CONTROLLERS:
        path = CGROUP_ROOT / controller / name
        for _ in range(20):
            if not path.exists():
                break
            try:
                path.rmdir()
            except OSError:
                time.sleep(0.05)  # tasks still leaving


# ---- bandwidth traces, live -----------------------------------------------------------------
class LiveRates:
    """Plays the topology's bandwidth traces on the running network: a thread that sleeps until
    each change and applies it with `tc class change`. `start(t0)` takes the run's time zero
    (time.monotonic()); `stop()` ends it (also used at teardown). Failures are kept and raised
    by `stop()`."""

    def __init__(self, network: EmulatedNetwork, log: Callable[[str], None] | None = None):
        self.network = network
        self.changes = rate_changes(network.topology)
        self.log = log or (lambda _msg: None)
        self.applied: list[tuple[float, str, float]] = []  # (when, device, bps), run clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, t0: float) -> None:
        if not self.changes or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._play, args=(t0,), name="emu-live-rates",
                                        daemon=True)
        self._thread.start()

    def _play(self, t0: float) -> None:
        try:
            for at, device, bps in self.changes:
                if self._stop.wait(max(0.0, t0 + at - time.monotonic())):
                    return
                self.network.set_rate(device, bps)
                self.applied.append((time.monotonic() - t0, device, bps))
                self.log(f"{device} link now {bps / 1e6:g} Mbps (t={at:g}s)")
        except BaseException as exc:  # reported by stop()
            self._error = exc

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise BackendError(f"bandwidth trace: {error}")

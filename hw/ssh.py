"""SSH to the devices (asyncssh): connections, commands, file copies and guarded processes.

Every failure a user can meet becomes one `BackendError` line naming the device and what to do
(unreachable, refused key, unknown host key, a command that failed). Connections send SSH
keepalives, so a device that reboots or drops off the network is noticed within
`KEEPALIVE_S * (KEEPALIVE_COUNT + 1)` seconds even when it cannot say goodbye.

A long-running command (a worker, the host executor, a probe server, a profile) starts under
`hw/guard.py`, which is copied to the device first. `Remote` holds such a process: its output
lines, its pids, and `stop()`, which closes the guard's stdin (the guard then stops its command's
process group) and falls back to `kill` by pid. Because the guard also stops its command when the
SSH channel closes, nothing outlives the controller's connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import signal
import socket
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from halp.errors import BackendError
from hw.inventory import Target, known_hosts, shell_path

CONNECT_TIMEOUT_S = 10.0
KEEPALIVE_S = 2.0
KEEPALIVE_COUNT = 3
COMMAND_TIMEOUT_S = 60.0
RECONNECT_TIMEOUT_S = 5.0  # after a device was lost: one try to stop what may still run
STOP_GRACE_S = 5.0  # SIGTERM to SIGKILL, in the guard
GUARD = Path(__file__).with_name("guard.py")
GUARD_LINE = re.compile(r"^halp-guard pid=(\d+) child=(\d+)$")
GUARD_EXIT = re.compile(r"^halp-guard exit=(\d+)$")
INSTALL_HINT = "the hardware backend needs asyncssh: pip install -e '.[hw]'"


def require_asyncssh() -> Any:
    try:
        import asyncssh
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return asyncssh


def short(cmd: str, limit: int = 60) -> str:
    return cmd if len(cmd) <= limit else cmd[: limit - 3] + "..."


class Device:
    """An open SSH connection to one device."""

    def __init__(self, target: Target, conn: Any):
        self.target = target
        self.conn = conn
        self.name = target.device
        self.lost = False  # the connection closed under us
        self._closed = asyncio.ensure_future(conn.wait_closed())
        self._closed.add_done_callback(lambda _: setattr(self, "lost", True))
        self._sftp: Any = None
        self.home: str = ""  # remote_dir as an absolute path, once resolved

    @property
    def closed(self) -> asyncio.Future:
        return self._closed

    def lost_message(self, doing: str = "mid-run") -> str:
        return (f"lost the SSH connection to {self.name} at {self.target.where} {doing} "
                "(rebooted, powered off or off the network?)")

    async def run(self, cmd: str, timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True,
                  what: str | None = None, input: str | None = None) -> tuple[int, str, str]:
        """Run `cmd` in the device's shell; returns (status, stdout, stderr). With `check`, a
        non-zero status is a BackendError quoting the last line of stderr."""
        asyncssh = require_asyncssh()
        what = what or f"`{short(cmd)}`"
        try:
            result = await asyncio.wait_for(self.conn.run(cmd, check=False, input=input),
                                            timeout_s)
        except TimeoutError:
            raise BackendError(f"{self.name}: {what} did not finish within {timeout_s:g} s") from None
        except (asyncssh.Error, OSError):
            raise BackendError(self.lost_message(f"while running {what}")) from None
        status = result.exit_status if result.exit_status is not None else -1
        out, err = str(result.stdout or ""), str(result.stderr or "")
        if check and status != 0:
            last = last_line(err) or last_line(out) or "no output"
            raise BackendError(f"{self.name}: {what} failed (exit {status}): {last}")
        return status, out, err

    async def sftp(self) -> Any:
        asyncssh = require_asyncssh()
        if self._sftp is None:
            try:
                self._sftp = await self.conn.start_sftp_client()
            except (asyncssh.Error, OSError) as exc:
                raise BackendError(f"{self.name}: cannot open SFTP ({exc}); is the sftp "
                                   "subsystem enabled in sshd_config?") from None
        return self._sftp

    async def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        asyncssh = require_asyncssh()
        sftp = await self.sftp()
        try:
            await sftp.put(str(local), remote)
            if mode is not None:
                await sftp.chmod(remote, mode)
        except (asyncssh.Error, OSError) as exc:
            raise BackendError(f"{self.name}: cannot copy {local.name} to {remote}: {exc}") from None

    async def write(self, remote: str, text: str, mode: int = 0o644) -> None:
        """Write a small text file on the device (created with `mode` from the start)."""
        asyncssh = require_asyncssh()
        sftp = await self.sftp()
        try:
            async with sftp.open(remote, "w", asyncssh.SFTPAttrs(permissions=mode)) as handle:
                await handle.write(text)
            await sftp.chmod(remote, mode)
        except (asyncssh.Error, OSError) as exc:
            raise BackendError(f"{self.name}: cannot write {remote}: {exc}") from None

    async def get(self, remote: str, local: Path) -> bool:
        """Copy a file back; False when it does not exist."""
        asyncssh = require_asyncssh()
        sftp = await self.sftp()
        try:
            await sftp.get(remote, str(local))
        except asyncssh.SFTPNoSuchFile:
            return False
        except (asyncssh.Error, OSError) as exc:
            raise BackendError(f"{self.name}: cannot copy {remote} back: {exc}") from None
        return True

    async def read_from(self, remote: str, offset: int) -> bytes:
        """The bytes of a remote file from `offset` on (b"" when it does not exist yet)."""
        asyncssh = require_asyncssh()
        sftp = await self.sftp()
        try:
            async with sftp.open(remote, "rb") as handle:
                return await handle.read(-1, offset)
        except asyncssh.SFTPNoSuchFile:
            return b""

    async def resolve_home(self, remote_dir: str) -> str:
        """Make `remote_dir` and return it as an absolute path."""
        _, out, _ = await self.run(f"mkdir -p {shell_path(remote_dir)} && cd {shell_path(remote_dir)}"
                                   " && pwd", what=f"creating {remote_dir}")
        self.home = out.strip().splitlines()[-1]
        return self.home

    async def start(self, argv: list[str], *, python: str, guard: str, log: str, cwd: str,
                    env: dict[str, str] | None = None, role: str = "process",
                    on_line: Callable[[str], None] | None = None,
                    into: list[Remote] | None = None) -> Remote:
        """Start `argv` under the guard (already copied to `guard` on the device). The Remote
        is appended to `into` as soon as it exists, before it has said its pids."""
        asyncssh = require_asyncssh()
        words = ["exec"]
        if env:
            words += ["env", *(f"{k}={shlex.quote(v)}" for k, v in env.items())]
        words += [shlex.quote(w) for w in [python, guard, "--log", log,
                                           "--grace", f"{STOP_GRACE_S:g}", "--", *argv]]
        cmd = f"cd {shlex.quote(cwd)} && {' '.join(words)}"
        try:
            process = await self.conn.create_process(cmd, stderr=asyncssh.STDOUT,
                                                     encoding="utf-8", errors="replace")
        except (asyncssh.Error, OSError):
            raise BackendError(self.lost_message(f"while starting its {role}")) from None
        remote = Remote(self, role, process, on_line, marker=cwd)
        if into is not None:
            into.append(remote)
        await remote.started()
        return remote

    async def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.exit()
        self.conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._closed), 5.0)


class Remote:
    """A guarded process on a device: its output, its pids, and how to stop it."""

    def __init__(self, device: Device, role: str, process: Any,
                 on_line: Callable[[str], None] | None, marker: str):
        self.device = device
        self.marker = marker  # in the command line of every process it started (its folder)
        self.role = role
        self.process = process
        self.on_line = on_line
        self.lines: deque[str] = deque(maxlen=200)
        self.guard_pid: int | None = None
        self.child_pid: int | None = None
        self.status: int | None = None  # the command's exit status, as the guard reported it
        self._changed = asyncio.Event()
        self.exited = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.process.stdout:
                line = raw.rstrip("\n")
                if (m := GUARD_LINE.match(line)) is not None:
                    self.guard_pid, self.child_pid = int(m.group(1)), int(m.group(2))
                elif (m := GUARD_EXIT.match(line)) is not None:
                    self.status = int(m.group(1))
                else:
                    self.lines.append(line)
                    if self.on_line is not None:
                        self.on_line(line)
                self._changed.set()
        except Exception:  # the connection is gone
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.process.wait_closed(), 2.0)
            if self.status is None and self.process.exit_status not in (None, -1):
                self.status = self.process.exit_status
            if not self.exited.done():
                self.exited.set_result(self.status)
            self._changed.set()

    @property
    def done(self) -> bool:
        return self.exited.done()

    @property
    def label(self) -> str:
        return f"{self.role} on {self.device.name}"

    async def started(self, timeout_s: float = 30.0) -> None:
        """Wait for the guard's first line (the pids)."""
        await self.wait_for(lambda: self.guard_pid is not None or self.done, timeout_s,
                            lambda: f"{self.device.name}: the {self.role} did not start within "
                                    f"{timeout_s:g} s")
        if self.guard_pid is None:
            raise BackendError(f"{self.device.name}: could not start the {self.role}: "
                               f"{self.last_line() or 'no output'}")

    async def wait_for(self, ready: Callable[[], bool], timeout_s: float,
                       late: Callable[[], str]) -> None:
        """Wait until `ready()`, re-checked whenever the process says something or exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not ready():
            left = deadline - loop.time()
            if left <= 0:
                raise BackendError(late())
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def last_line(self) -> str:
        lines = [ln.strip() for ln in self.lines if ln.strip()]
        return lines[-1] if lines else ""

    async def stop(self) -> str | None:
        """Stop the process (by the guard, then by pid); None, or why it could not be."""
        if not self.done:
            with contextlib.suppress(Exception):
                self.process.stdin.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.exited), STOP_GRACE_S + 3.0)
        problem = None
        if not self.done or self.device.lost:
            problem = await self._kill()
        self.process.close()
        self._reader.cancel()
        with contextlib.suppress(BaseException):
            await self._reader
        return problem

    async def _kill(self) -> str | None:
        """The fallback: SIGKILL to the guard and to the command's process group, by pid, each
        only while its command line still names this run's folder (a pid may have been reused:
        after a reboot, say). A lost device gets one new connection for it."""
        pids = [p for p in (self.guard_pid, self.child_pid) if p]
        if not pids:
            return None
        q = shlex.quote
        kill = "; ".join(
            f"if tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null | grep -qF -- {q(self.marker)}; "
            f"then kill -KILL -- {target} 2>/dev/null; fi"
            for pid, target in ((self.guard_pid, self.guard_pid), (self.child_pid, f"-{self.child_pid}"))
            if pid) + "; true"
        device = self.device
        fresh = None
        if device.lost:
            fresh = await reconnect(self.device.target)
            if fresh is not None:
                device = fresh
            else:
                return (f"could not reach {self.device.name} to stop its {self.role} (pids "
                        f"{', '.join(map(str, pids))}); if it did not reboot, stop them there")
        try:
            await device.run(kill, timeout_s=10.0, what=f"stopping the {self.role}")
        except BackendError as exc:
            return str(exc)
        finally:
            if fresh is not None:
                await fresh.close()
        return None


async def reconnect(target: Target, within_s: float = RECONNECT_TIMEOUT_S) -> Device | None:
    """A new connection to a device that was lost, tried until `within_s` passes; or None."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        try:
            return await connect(target, max(1.0, deadline - loop.time()))
        except BackendError:
            if loop.time() + 1.0 > deadline:
                return None
            await asyncio.sleep(1.0)


def describe_exit(status: int | None) -> str:
    """`exit 3`, `killed by SIGKILL`, or `no exit status` (the connection went first)."""
    if status is None:
        return "no exit status"
    if status > 128:
        try:
            return f"killed by {signal.Signals(status - 128).name}"
        except ValueError:
            pass
    return f"exit {status}"


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


async def connect(target: Target, timeout_s: float = CONNECT_TIMEOUT_S) -> Device:
    """Open an SSH connection to the device, or raise one line saying why not."""
    asyncssh = require_asyncssh()
    options: dict[str, Any] = {
        "port": target.ssh_port, "connect_timeout": timeout_s, "login_timeout": timeout_s,
        "keepalive_interval": KEEPALIVE_S, "keepalive_count_max": KEEPALIVE_COUNT,
    }
    if target.ssh_user:
        options["username"] = target.ssh_user
    if target.ssh_key:
        if not Path(target.ssh_key).is_file():
            raise BackendError(f"{target.device}: SSH key {target.ssh_key} does not exist "
                               "(devices[].ssh_key)")
        options["client_keys"] = [target.ssh_key]
        options["agent_path"] = None  # only the key the scenario names
    if known_hosts() is not None:
        options["known_hosts"] = known_hosts()
    where = f"{target.device} at {target.where}"
    try:
        conn = await asyncio.wait_for(asyncssh.connect(target.address, **options), timeout_s + 2)
    except TimeoutError:
        raise BackendError(f"cannot reach {where}: no SSH answer within {timeout_s:g} s "
                           "(powered off, wrong address, or off the network?)") from None
    except ConnectionRefusedError:
        raise BackendError(f"cannot reach {where}: connection refused (is sshd running there, "
                           "and is ssh_port right?)") from None
    except socket.gaierror:
        raise BackendError(f"cannot reach {target.device}: address {target.address!r} does not "
                           "resolve") from None
    except asyncssh.PermissionDenied:
        key = target.ssh_key or "the default keys"
        raise BackendError(f"{where} refused the SSH key {key}: add its public key to "
                           "~/.ssh/authorized_keys there (ssh-copy-id), or fix ssh_user/ssh_key"
                           ) from None
    except asyncssh.HostKeyNotVerifiable:
        hosts = known_hosts() or "~/.ssh/known_hosts"
        raise BackendError(f"{where}: its host key is not in {hosts}; check it and add it "
                           f"(ssh-keyscan -p {target.ssh_port} {target.address} >> {hosts})"
                           ) from None
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise BackendError(f"{target.device}: cannot read SSH key {target.ssh_key}: {exc}") from None
    except asyncssh.Error as exc:
        raise BackendError(f"cannot reach {where}: SSH failed ({exc.reason})") from None
    except OSError as exc:
        raise BackendError(f"cannot reach {where}: {exc.strerror or exc}") from None
    return Device(target, conn)


async def gather_or_cancel(*aws: Any) -> list[Any]:
    """Like `asyncio.gather`, but on the first failure the others are cancelled and awaited
    before it is raised (so nothing is still running when the caller tears down)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def connect_all(targets: list[Target], timeout_s: float = CONNECT_TIMEOUT_S) -> list[Device]:
    """Connect to every device at once; on any failure close the others and raise the first
    failure (in the scenario's device order)."""
    results = await asyncio.gather(*(connect(t, timeout_s) for t in targets), return_exceptions=True)
    devices = [r for r in results if isinstance(r, Device)]
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        for d in devices:
            await d.close()
        raise failures[0]
    return devices

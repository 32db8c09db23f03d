"""The probe `halp hw check` runs on the devices: facts, clock offsets and a bandwidth sample.

    python probe.py info [--model JSON]          one JSON line: python, machine, torch, the
                                                 model digest (when halp is importable)
    python probe.py serve --bind ADDR            on a secondary: a small TCP server; prints
                                                 `halp-probe listening on PORT`; runs under the
                                                 guard, and stops by itself after --max-s
    python probe.py client NAME=HOST:PORT ...    on the host: for each secondary, ping-pong
                                                 clock offsets and a bandwidth sample both ways;
                                                 one JSON line

Standard library only (copied into a folder on the device for each check), so it runs with any
Python 3 the device has, before or after `halp hw setup`.

Clock offsets here are of the wall clock (`time.time()`, the clock NTP or chrony disciplines):
host time = device time + offset, from the round with the shortest round trip, whose half is the
uncertainty. (The trace maps worker times with the runtime's own ping-pong on the monotonic
clock; this tells you whether the devices' clocks agree at all.)
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import sys
import threading
import time
from typing import Any

READY = "halp-probe listening on"
CHUNK = 1 << 16


# ---- info ---------------------------------------------------------------------------------
def info(model: dict[str, Any] | None) -> dict[str, Any]:
    facts: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                   "executable": sys.executable, "torch": None, "model_digest": None,
                   "error": None, "time": time.time()}
    try:
        import torch

        facts["torch"] = torch.__version__
    except Exception as exc:  # not installed, or broken
        facts["error"] = f"torch: {exc}"
        return facts
    if model:
        try:
            from halp.model.zoo import ModelSpec, build_model, model_digest

            fields: dict[str, Any] = dict(model)
            if fields.get("input_shape"):
                fields["input_shape"] = tuple(fields["input_shape"])
            spec = ModelSpec(**fields)
            facts["model_digest"] = model_digest(build_model(spec))
        except Exception as exc:
            facts["error"] = f"model: {exc}"
    return facts


# ---- serve --------------------------------------------------------------------------------
def serve(bind: str, port: int, max_s: float) -> int:
    server = socket.create_server((bind, port))
    server.settimeout(0.2)
    print(f"{READY} {server.getsockname()[1]}", flush=True)
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        try:
            conn, _ = server.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()
    server.close()
    return 0


def _handle(conn: socket.socket) -> None:
    conn.settimeout(30)
    reader = conn.makefile("rb")
    try:
        while line := reader.readline():
            word, _, arg = line.decode().strip().partition(" ")
            if word == "T":
                conn.sendall(f"{time.time():.9f}\n".encode())
            elif word == "U":  # upload: receive n bytes, then acknowledge
                left = int(arg)
                while left > 0:
                    data = reader.read(min(CHUNK, left))
                    if not data:
                        return
                    left -= len(data)
                conn.sendall(b"OK\n")
            elif word == "D":  # download: send n bytes
                _send(conn, int(arg))
            else:
                return
    except OSError:
        pass
    finally:
        conn.close()


def _send(conn: socket.socket, n: int) -> None:
    block = b"\0" * CHUNK
    while n > 0:
        conn.sendall(block[:min(CHUNK, n)])
        n -= min(CHUNK, n)


# ---- client -------------------------------------------------------------------------------
def measure(address: str, rounds: int, nbytes: int, timeout_s: float) -> dict:
    host, _, port = address.rpartition(":")
    try:
        conn = socket.create_connection((host, int(port)), timeout=timeout_s)
    except OSError as exc:
        return {"error": f"cannot connect to {address}: {exc.strerror or exc}"}
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = conn.makefile("rb")
    try:
        best = None
        for _ in range(rounds):
            t0 = time.time()
            conn.sendall(b"T\n")
            their = float(reader.readline())
            t1 = time.time()
            sample = ((t0 + t1) / 2 - their, (t1 - t0) / 2)
            if best is None or sample[1] < best[1]:
                best = sample
        assert best is not None
        t0 = time.perf_counter()
        conn.sendall(f"U {nbytes}\n".encode())
        _send(conn, nbytes)
        if reader.readline().strip() != b"OK":
            return {"error": "the probe server did not acknowledge the upload"}
        up_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        conn.sendall(f"D {nbytes}\n".encode())
        left = nbytes
        while left > 0:
            data = reader.read(min(CHUNK, left))
            if not data:
                return {"error": "the probe server closed the connection"}
            left -= len(data)
        down_s = time.perf_counter() - t0
    except (OSError, ValueError) as exc:
        return {"error": f"probe to {address} failed: {exc}"}
    finally:
        conn.close()
    return {"offset_s": best[0], "uncertainty_s": best[1], "rtt_s": 2 * best[1],
            "to_bps": nbytes * 8 / up_s, "from_bps": nbytes * 8 / down_s, "bytes": nbytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info")
    p.add_argument("--model", help="JSON of a halp ModelSpec, to report its weight digest")
    p = sub.add_parser("serve")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--max-s", type=float, default=120.0)
    p = sub.add_parser("client")
    p.add_argument("targets", nargs="+", metavar="NAME=HOST:PORT")
    p.add_argument("--rounds", type=int, default=16)
    p.add_argument("--bytes", type=int, default=2_000_000)
    p.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(info(json.loads(args.model) if args.model else None)), flush=True)
        return 0
    if args.command == "serve":
        return serve(args.bind, args.port, args.max_s)
    results = {}
    for target in args.targets:
        name, _, address = target.partition("=")
        results[name] = measure(address, max(1, args.rounds), max(1, args.bytes), args.timeout)
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`halp worker --listen ADDR --token FILE [--name NAME]`: serve as a secondary device.

Starts once and stays up across requests and runs; stop it with SIGTERM or Ctrl-C. When it is
listening it prints one line to stdout, `halp worker NAME listening on ADDRESS (pid N)`, which
scripts can wait for (with `--listen HOST:0` the address carries the port the system chose).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from halp.errors import HalpError
from halp.runtime.files import FILE_STORE
from halp.runtime.lines import WORKER_READY


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run a worker that executes plan ops for a host")
    p.add_argument("--listen", metavar="ADDR",
                   help="where to listen: tcp://HOST:PORT, HOST:PORT or :PORT (port 0: any)")
    p.add_argument("--token", metavar="FILE", help="shared token file (the host holds the same)")
    p.add_argument("--name", help="the device name this worker must be called by the host")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads until a host says otherwise (default 1)")
    p.add_argument("--new-token", metavar="FILE", help="write a fresh random token file and exit")
    p.add_argument("--files", metavar="DIR", default=FILE_STORE,
                   help="this device's store of model files (weights, a custom model's .py) "
                        "by sha256, filled by `halp run --backend hw` (default: ./files)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from halp.runtime import auth

    if args.new_token:
        auth.write_token(args.new_token)
        print(f"wrote a new token to {args.new_token}")
        return 0
    if not args.listen or not args.token:
        raise HalpError("worker needs --listen ADDR and --token FILE")
    if not 1 <= args.threads <= 64:
        raise HalpError(f"--threads {args.threads}: use 1 to 64")
    token = auth.load_token(args.token)
    from halp.model.trace import warm_up
    from halp.runtime.worker import serve_forever

    warm_up()  # before it says it listens: a host's handshake then waits for the model alone

    log = logging.getLogger("halp.worker")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s halp worker %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    log.propagate = False

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}

    def ready(address: str) -> None:
        import os

        print(f"halp worker {args.name or '-'} {WORKER_READY} {address} (pid {os.getpid()})",
              flush=True)

    try:
        serve_forever(args.listen, token, args.name, args.threads, stop, ready, log, args.files)
    finally:
        for sig, handler_ in previous.items():
            signal.signal(sig, handler_)
    return 0

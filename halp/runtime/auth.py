"""Who may talk to a worker: a shared token, a nonce handshake, and keys derived per run.

The handshake (host H, worker W, token T; every step is a signed message, see `wire`):

    H -> W  NONCE_REQ {challenge c}                       signed with T
    W -> H  NONCE {c, worker nonce w}                     signed with T; w is fresh, for this
                                                          connection only, and used once
    H -> W  HELLO {w, run nonce r, device, spec, peers}   signed with T
    W -> H  WELCOME {digest, clock}                       signed with the session key
            session key = HMAC(T, "halp-session" | w | r)

Every later message between H and W is signed with the session key and carries a sequence
number that must grow (`ReplayGuard`), so a message replayed within a run is refused and one
from an earlier run fails its MAC (other nonces, other key). Workers send blocks to each other
signed with the pair key HMAC(T, "halp-peer" | r | src | dst), known only to holders of T and
tied to the run the host announced in its HELLO.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from halp.errors import HalpError
from halp.runtime.wire import WireError

MIN_TOKEN_BYTES = 16
NONCE_BYTES = 16


def load_token(path: str | Path) -> bytes:
    """The secret in a token file (surrounding whitespace stripped)."""
    path = Path(path).expanduser()
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise HalpError(f"cannot read token file {path}: {exc.strerror}; create one with "
                        f"`halp worker --new-token {path}`") from None
    if len(token) < MIN_TOKEN_BYTES:
        raise HalpError(f"token file {path} holds {len(token)} bytes; it needs at least "
                        f"{MIN_TOKEN_BYTES} (create one with `halp worker --new-token {path}`)")
    return token


def write_token(path: str | Path) -> bytes:
    """Write a fresh random token to `path`, readable by its owner only, and return it."""
    path = Path(path).expanduser()
    token = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(token + b"\n")
    return token


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


def _derive(token: bytes, *parts: str) -> bytes:
    return hmac.new(token, "|".join(parts).encode(), hashlib.sha256).digest()


def session_key(token: bytes, worker_nonce: str, run_nonce: str) -> bytes:
    return _derive(token, "halp-session", worker_nonce, run_nonce)


def peer_key(token: bytes, run_nonce: str, src: str, dst: str) -> bytes:
    return _derive(token, "halp-peer", run_nonce, src, dst)


def check_nonce(value: object) -> str:
    if not isinstance(value, str) or len(value) != 2 * NONCE_BYTES:
        raise WireError("handshake nonce missing or malformed")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise WireError("handshake nonce is not hex") from None
    return value


class ReplayGuard:
    """Accepts each sender's sequence numbers only in increasing order."""

    def __init__(self) -> None:
        self.last = -1

    def check(self, seq: int) -> None:
        if seq <= self.last:
            raise WireError(f"replayed or reordered message (sequence {seq} after {self.last})")
        self.last = seq

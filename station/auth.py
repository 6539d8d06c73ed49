"""Who is at the station: password hashes, the logged-in user, and CSRF tokens.

Passwords are kept only as scrypt hashes (Python's hashlib: a well-kept KDF, nothing to
install), compared in constant time, and failed tries are throttled by name and address, with
growing delays that never lock the right password out for more than a minute.
A login is a row in the database (revocable: logging out ends it, an idle one expires) whose
token rides in Starlette's signed session cookie (HttpOnly, SameSite=Strict); every
state-changing request must carry the session's CSRF token (a form field or the X-CSRF-Token
header), so another site cannot act with a nurse's login. With auth: proxy, only the trusted
proxies' user header is believed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from station.config import User, WebConfig

N, R, P = 2 ** 14, 8, 1  # scrypt cost: ~50 ms on a Pi-class core, 16 MB


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P)
    b64 = base64.b64encode
    return f"scrypt${N}${R}${P}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _, n, r, p, salt, key = stored.split("$")
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                             r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(key))


def find_user(users: list[User], name: str, password: str) -> User | None:
    for u in users:
        if hmac.compare_digest(u.name.encode(), name.encode()):
            return u if check_password(password, u.password_hash) else None
    check_password(password, hash_password("timing"))  # an unknown name takes as long
    return None


def session_secret(path: str) -> str:
    """The key that signs cookies: read, or made once (0600) so logins survive restarts."""
    p = Path(path)
    try:
        return p.read_text().strip()
    except FileNotFoundError:
        p.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(32)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        return secret


def trusted(web: WebConfig, client: str | None) -> bool:
    """Whether a request comes from one of the reverse proxies the config trusts."""
    if not client:
        return False
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False)
               for net in web.trusted_proxies)


def client_address(web: WebConfig, request: Any) -> str:
    """Who sent a request, for throttling and logs: the direct peer (uvicorn's own reading of
    X-Forwarded-For is off: it trusted the loopback, so anyone there could claim to be the
    trusted proxy, or rotate addresses past the throttle); only when that peer is a trusted
    proxy, the address it names in X-Forwarded-For (the nearest one it did not add itself)."""
    peer = request.client.host if request.client else "?"
    if not trusted(web, peer):
        return peer
    forwarded = [a.strip() for a in request.headers.get("x-forwarded-for", "").split(",")
                 if a.strip()]
    for address in reversed(forwarded):
        if not trusted(web, address):
            return address
    return peer


class Throttle:
    """Failed logins, by name and address together, by name, and by address, over the last
    `window_s`: each key past its free tries waits longer after every further failure (1 s,
    2 s, 4 s … up to `cap_s`), and no password is checked meanwhile. Never more than a minute:
    five wrong passwords from anyone locked a nurse's right one out for 15 minutes before."""

    def __init__(self, free: dict[str, int] | None = None, cap_s: float = 60.0,
                 window_s: float = 900.0) -> None:
        self.free = free or {"pair": 3, "user": 5, "address": 10}
        self.cap_s, self.window_s = cap_s, window_s
        self._failures: dict[tuple[str, ...], list[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, user: str, address: str) -> dict[str, tuple[str, ...]]:
        return {"pair": ("pair", user, address), "user": ("user", user),
                "address": ("address", address)}

    def wait_s(self, user: str, address: str, now: float) -> float:
        """0 if a try is allowed now, else how long to wait."""
        with self._lock:
            longest = 0.0
            for kind, key in self._keys(user, address).items():
                times = [t for t in self._failures.get(key, []) if now - t < self.window_s]
                self._failures[key] = times
                over = len(times) - self.free[kind]
                if over >= 0:
                    delay = min(self.cap_s, 2.0 ** over)
                    longest = max(longest, times[-1] + delay - now)
            return max(0.0, longest)

    def failed(self, user: str, address: str, now: float) -> None:
        with self._lock:
            for key in self._keys(user, address).values():
                self._failures.setdefault(key, []).append(now)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            for key in (("user", user), ("pair", user, address)):
                self._failures.pop(key, None)


def csrf_token(session: dict[str, Any]) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok(session: dict[str, Any], given: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and given and hmac.compare_digest(expected, given))

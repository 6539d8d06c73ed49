"""Who is at the station: password hashes, the logged-in user, and CSRF tokens.

Passwords are kept only as scrypt hashes (Python's hashlib: a well-kept KDF, nothing to
install), compared in constant time. A login lives in Starlette's signed session cookie
(HttpOnly, SameSite=Strict); every state-changing request must carry the session's CSRF token
(a form field or the X-CSRF-Token header), so another site cannot act with a nurse's login.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
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


def current_user(web: WebConfig, session: dict[str, Any], headers: Any) -> str | None:
    if web.auth == "proxy":
        name = headers.get(web.proxy_user_header, "")
        return name.strip()[:200] or None
    if web.auth == "users":
        return session.get("user")
    return None


def csrf_token(session: dict[str, Any]) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok(session: dict[str, Any], given: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and given and hmac.compare_digest(expected, given))

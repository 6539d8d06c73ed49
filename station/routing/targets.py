"""How an alert leaves the station: a command (the alert as JSON on its standard input), or a
webhook (the alert POSTed as JSON). Each returns normally or raises DeliveryFailed saying why."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_S = 10.0


class DeliveryFailed(RuntimeError):
    pass


def run_command(argv: list[str], message: dict[str, Any]) -> str:
    try:
        done = subprocess.run(argv, input=json.dumps(message).encode(), capture_output=True,
                              timeout=TIMEOUT_S)
    except FileNotFoundError:
        raise DeliveryFailed(f"no such program: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise DeliveryFailed(f"{argv[0]} did not finish within {TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise DeliveryFailed(f"{argv[0]}: {exc}") from None
    if done.returncode:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise DeliveryFailed(f"{argv[0]} exited {done.returncode}: {tail[0][:200]}")
    return f"{argv[0]} exited 0"


def post_webhook(url: str, message: dict[str, Any]) -> str:
    request = urllib.request.Request(url, data=json.dumps(message).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              "User-Agent": "lungedge-station"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code} from {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"{url}: {reason}") from None

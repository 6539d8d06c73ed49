"""What lungedge publishes: topic kinds, their delivery settings, and the JSON Schemas.

Payload shapes are defined by the schemas in `edge/schemas/` (shipped with the package, so a
subscriber can validate against the same files); the daemon builds payloads as plain dicts and
the tests validate real messages against these schemas.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SCHEMAS = Path(__file__).resolve().parent / "schemas"


@dataclass(frozen=True)
class TopicKind:
    name: str
    qos: int
    retain: bool
    keep: int  # spool eviction order: lower goes first when the spool is full


KINDS = {k.name: k for k in (
    TopicKind("status", 1, True, 3),
    TopicKind("cycle", 1, False, 1),
    TopicKind("alert", 1, False, 2),
    TopicKind("summary", 1, False, 2),
    TopicKind("stats", 0, False, 0),
)}


def iso_ms(t: float) -> str:
    """UNIX time → ISO-8601 UTC with milliseconds, e.g. 2026-11-21T14:43:51.123Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@cache
def schema(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{kind}.json").read_text())


def topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/{device_id}/{kind}"

"""What a routing rule sends: one page per alert event, the body a webhook is POSTed and a
command reads on its standard input.

Typed here, with its JSON Schema generated from these dataclasses (`station/schemas/page.json`,
`python -m station.routing.page` rewrites it; a test checks it is current), because a pager
gateway or a nurse-call bridge is written by someone who never reads this code: what they
receive must be a contract with a version, not whatever dict the router happened to build.
Integrator's notes: docs/webhook.md.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

from edge.delivery.wire import properties
from edge.vocabulary import AlertState, Category, Priority

PAGE_SCHEMA_VERSION = 1
# what happened: the alert opened, changed or ended, or nobody acknowledged it in time
PageEvent = Literal["new", "update", "end", "escalation"]
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schemas" / "page.json"


@dataclass(frozen=True, kw_only=True)
class PagedAlert:
    """The alert as the ward sees it, with a link to its page on the station."""

    alert_id: str
    device_id: str
    bed: str | None  # the device's name on the ward, where one was given
    kind: str  # wheeze, crackle, poor_signal, no_audio, or a station alarm (offline, …)
    title: str  # the kind in words
    category: Category
    priority: Priority
    state: AlertState
    opened_at: float  # UNIX seconds
    # the evidence the device or the station gave (cycles of the window, silent seconds, …)
    evidence: dict[str, Any] | None
    link: str | None  # the alert's page (null until the station's public_url is set)


@dataclass(frozen=True, kw_only=True)
class Page:
    """One alert event, sent to a rule's command or webhook."""

    schema_version: int = field(default=PAGE_SCHEMA_VERSION,
                                metadata={"schema": {"const": PAGE_SCHEMA_VERSION}})
    rule: str  # the routing rule that sent it
    event: PageEvent
    alert: PagedAlert

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def page_schema() -> dict[str, Any]:
    props = properties(Page)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "lungedge/station-page.json", "title": "A lungedge station page",
            "type": "object", "additionalProperties": False, "properties": props,
            "required": list(props)}


@cache
def shipped_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


if __name__ == "__main__":
    SCHEMA_FILE.parent.mkdir(exist_ok=True)
    SCHEMA_FILE.write_text(json.dumps(page_schema(), indent=2) + "\n")
    sys.stdout.write(f"wrote {SCHEMA_FILE}\n")

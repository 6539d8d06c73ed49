"""What a charge nurse reads first: the ward's tiles in order of what needs a person, and the
counts above them.

Central stations put the bed that needs someone at the top, whatever its name: a new wheeze
on the thirteenth bed must not sit below the fold behind twelve quiet ones. Order:
1. an unacknowledged clinical alert, the newest change first;
2. an unacknowledged technical alarm (device offline, no audio…), the newest first;
3. a clinical alert someone has seen that is still open;
4. any other problem: an open technical alarm already seen, a degraded or offline device;
5. the rest, by name as people read names (bed 2 before bed 10; case and leading
   punctuation do not move a bed to the top).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from station.store.read_models import Alert, Tile

ATTENTION_CLINICAL, ATTENTION_TECHNICAL, SEEN_CLINICAL, PROBLEM, QUIET = range(5)


def name_key(name: str) -> tuple[Any, ...]:
    """Natural, case-blind order: "ward-2" < "Ward-10"; '"bed' sorts as "bed"."""
    text = re.sub(r"^[^0-9A-Za-z]+", "", name).casefold() or name.casefold()
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", text) if part)


def rank(tile: Tile) -> int:
    if any(a.attention for a in tile.clinical):
        return ATTENTION_CLINICAL
    if any(a.attention for a in tile.technical):
        return ATTENTION_TECHNICAL
    if tile.clinical:
        return SEEN_CLINICAL
    if tile.technical or tile.state != "online":
        return PROBLEM
    return QUIET


def latest_change(alerts: tuple[Alert, ...]) -> float:
    return max((a.updated_at for a in alerts if a.attention), default=0.0)


def by_urgency(tiles: list[Tile]) -> list[Tile]:
    def key(t: Tile) -> tuple[Any, ...]:
        r = rank(t)
        newest = -latest_change(t.clinical if r == ATTENTION_CLINICAL else t.technical) \
            if r in (ATTENTION_CLINICAL, ATTENTION_TECHNICAL) else 0.0
        return (r, newest, name_key(t.name))
    return sorted(tiles, key=key)


@dataclass(frozen=True, kw_only=True)
class Summary:
    """The bar above the tiles."""
    clinical_unseen: int  # clinical alerts nobody has seen since they last changed
    clinical_open: int
    technical_unseen: int
    technical_unseen_ids: tuple[str, ...]  # what one bulk acknowledgement covers, no more
    devices: int
    online: int
    degraded: int
    offline: int
    unseen_clinical_ids: tuple[str, ...]  # a new one here sounds the tone, where it is on


def summary(tiles: list[Tile]) -> Summary:
    clinical = [a for t in tiles for a in t.clinical]
    technical = [a for t in tiles for a in t.technical]
    states = [t.state for t in tiles]
    return Summary(
        clinical_unseen=sum(a.attention for a in clinical),
        clinical_open=sum(a.state == "open" for a in clinical),
        technical_unseen=sum(a.attention for a in technical),
        technical_unseen_ids=tuple(a.alert_id for a in technical if a.attention),
        devices=len(tiles), online=states.count("online"), degraded=states.count("degraded"),
        offline=states.count("offline"),
        unseen_clinical_ids=tuple(sorted(a.alert_id for a in clinical if a.attention)))

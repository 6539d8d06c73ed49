"""What a charge nurse reads first: the ward's tiles in order of what needs a person, and the
counts above them.

Central stations put the bed that needs someone at the top, whatever its name: a new wheeze
on the thirteenth bed must not sit below the fold behind twelve quiet ones. Order, by priority:
1. an unacknowledged clinical alert;
2. an unacknowledged technical alarm (device offline, no audio…);
3. a clinical alert someone has seen that is still open;
4. any other problem: an open technical alarm already seen, a degraded or offline device;
5. the rest;
and within each, by name as people read names (bed 2 before bed 10; case and leading
punctuation do not move a bed to the top). Never by the newest change: a tile moves only when
its priority does, so the bed under a nurse's finger is the bed she meant (ordering by the
newest change swapped tiles eleven times a minute).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from station.store.read_models import Tile

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


def by_urgency(tiles: list[Tile]) -> list[Tile]:
    return sorted(tiles, key=lambda t: (rank(t), name_key(t.name)))


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
        offline=states.count("offline"))

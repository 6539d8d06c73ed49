"""The daemon's health as an explicit state machine: what it tells systemd, the log and the
retained status topic, and why.

    starting ──► online ⇄ degraded ──► stopping        (any state ──► stopping)

`degraded` always carries its reasons, most important first; a reason is there while its
condition is observed and leaves when it clears, and the state follows. The machine only
decides; the daemon observes (once a second) and reports what changed. Reasons the broker can
never hear (it is unreachable) stay local: the log and systemd's STATUS= show them, the
retained status does not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from edge.vocabulary import DeviceState


class State(enum.StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    DEGRADED = "degraded"
    STOPPING = "stopping"


ALLOWED = {State.STARTING: {State.ONLINE, State.DEGRADED, State.STOPPING},
           State.ONLINE: {State.DEGRADED, State.STOPPING},
           State.DEGRADED: {State.ONLINE, State.STOPPING},
           State.STOPPING: set()}
BROKER_UNREACHABLE = "broker unreachable"


@dataclass(kw_only=True, frozen=True)
class Observation:
    source_error: str = ""  # the audio source failed: why
    no_audio: bool = False  # the no_audio alert is open
    poor_signal: str = ""  # the poor_signal alert is open: why, in words
    broker_unreachable: str = ""  # why delivery to the broker does not work now
    broker_refuses: str = ""  # why the broker refuses the messages it is sent
    # messages the full spool had to drop lately (spool.drops_window_s): a spool that
    # overflowed once, then drained, is healthy again, where it said "degraded" for good
    spool_dropped: int = 0
    storage: str = ""  # the spool's storage is failing: why

    def reasons(self) -> tuple[str, ...]:
        """In order of importance: nothing is classified, then data is being lost, then the
        result may be wrong, then delivery is late."""
        out = []
        if self.source_error or self.no_audio:
            out.append(self.source_error or "no audio")
        if self.storage:
            out.append(self.storage)
        if self.spool_dropped:
            out.append(f"spool full: {self.spool_dropped} message(s) dropped lately")
        if self.poor_signal:
            out.append(f"poor signal: {self.poor_signal}")
        if self.broker_refuses:
            out.append(self.broker_refuses)
        if self.broker_unreachable:
            out.append(f"{BROKER_UNREACHABLE}: {self.broker_unreachable}")
        return tuple(out)


@dataclass(frozen=True)
class Change:
    state: State
    reasons: tuple[str, ...]

    @property
    def published(self) -> tuple[DeviceState, list[str]]:
        """(state, reasons) for the retained status topic: what a broker can hear."""
        remote = [r for r in self.reasons if not r.startswith(BROKER_UNREACHABLE)]
        if self.state == State.STOPPING:
            return "offline", ["shutdown"]
        return ("degraded" if remote else "online"), remote

    def __str__(self) -> str:
        return self.state.value + (f": {'; '.join(self.reasons)}" if self.reasons else "")


class Health:
    def __init__(self) -> None:
        self.state = State.STARTING
        self.reasons: tuple[str, ...] = ()

    def observe(self, o: Observation) -> Change | None:
        """The change this observation makes, if any."""
        if self.state == State.STOPPING:
            return None
        reasons = o.reasons()
        state = State.DEGRADED if reasons else State.ONLINE
        if (state, reasons) == (self.state, self.reasons):
            return None
        return self._go(state, reasons)

    def stop(self) -> Change:
        return self._go(State.STOPPING, ())

    def _go(self, state: State, reasons: tuple[str, ...]) -> Change:
        if state != self.state and state not in ALLOWED[self.state]:
            raise RuntimeError(f"health cannot go from {self.state} to {state}")
        self.state, self.reasons = state, reasons
        return Change(state, reasons)

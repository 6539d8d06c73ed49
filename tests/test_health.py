"""The daemon's health state machine: online, degraded and back, with its reasons."""

from __future__ import annotations

import pytest

from edge.service.health import Health, Observation, State


def test_health_goes_online_degraded_and_back_with_its_reasons() -> None:
    h = Health()
    assert h.state == State.STARTING
    first = h.observe(Observation())
    assert first is not None and first.state == State.ONLINE
    assert first.published == ("online", [])
    assert h.observe(Observation()) is None  # nothing changed: nothing to report
    bad = h.observe(Observation(no_audio=True, poor_signal="clipped", spool_dropped=3))
    assert bad is not None and bad.state == State.DEGRADED
    # most important first: nothing is heard, then data is lost, then results may be wrong
    assert bad.reasons == ("no audio", "spool full: 3 message(s) dropped lately",
                           "poor signal: clipped")
    assert str(bad) == ("degraded: no audio; spool full: 3 message(s) dropped lately; "
                        "poor signal: clipped")
    fewer = h.observe(Observation(spool_dropped=3))
    assert fewer is not None and fewer.reasons == ("spool full: 3 message(s) dropped lately",)
    assert h.observe(Observation()).state == State.ONLINE  # type: ignore[union-attr]


def test_an_unreachable_broker_is_a_local_reason_only() -> None:
    """The broker cannot hear that it is unreachable: the log and systemd say degraded, the
    retained status (sent once it is back) says online."""
    h = Health()
    why = "mqtt.tls: cannot use ca_file /etc/x.pem ([Errno 2] No such file or directory)"
    change = h.observe(Observation(broker_unreachable=why))
    assert change is not None and change.state == State.DEGRADED
    assert change.reasons == (f"broker unreachable: {why}",)
    assert change.published == ("online", [])
    both = h.observe(Observation(broker_unreachable=why, source_error="device gone"))
    assert both is not None and both.published == ("degraded", ["device gone"])


def test_stopping_is_final() -> None:
    h = Health()
    h.observe(Observation(no_audio=True))
    stop = h.stop()
    assert stop.state == State.STOPPING and stop.published == ("offline", ["shutdown"])
    assert h.observe(Observation()) is None
    with pytest.raises(RuntimeError, match="cannot go from stopping to"):
        h._go(State.ONLINE, ())

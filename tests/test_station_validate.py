"""The station's two schema checks agree: the fast compiled one (fastjsonschema) that ingest
runs on every message, and jsonschema, the judge it falls back to. Real messages of every kind
from the daemon, then mutated at random (a key set to any JSON value, removed, or one added):
the fast check never accepts what jsonschema refuses."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastjsonschema", reason="the station extra: pip install 'lungedge[station]'")

from edge.delivery.publisher import envelope
from edge.delivery.wire import RunningModel, Status, body_dict
from station.validate import _fast, _validator, schema_error
from tests.conftest import TEST_EPOCH
from tests.test_daemon_wiring import SAMPLES, run_daemon

values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-2**60, 2**60), st.floats(
        allow_nan=False, allow_infinity=False), st.text(max_size=30),
        st.sampled_from(["2026-12-06T01:02:03.456Z", "0123456789abcdef", "normal", "new",
                         "crackle", "online", "flac", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """One real message of every kind the daemon sends (clips on)."""
    messages = run_daemon(tmp_path_factory.mktemp("daemon"),
                          SAMPLES / "crackle_65121853_1.5_0_p4_4225.wav",
                          extra="clips: {enabled: true}").messages
    out: dict[str, dict[str, Any]] = {}
    for kind, body in messages:
        out.setdefault(kind, json.loads(json.dumps(body)))
    # the status goes through the publisher's own path, not the messages it records
    out["status"] = envelope("bed-1", 0, TEST_EPOCH) | body_dict(
        Status(state="degraded", reason="poor signal", reasons=["poor signal"],
               model=RunningModel("lungedge-cnnlstm", "0.5.0", sha256="ab" * 32,
                                  note="installed"),
               connected_at="2026-12-03T10:00:00.000Z", last_will=False, heartbeat_s=5.0,
               breathing_pause_s=30.0))
    return out


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, (*prefix, i))
    return out


def test_real_messages_pass_both(real: dict[str, dict[str, Any]]) -> None:
    assert set(real) >= {"status", "cycle", "alert", "summary", "stats", "clip"}
    for kind, body in real.items():
        _fast(kind)(body)
        assert schema_error(kind, body) == ""


@settings(max_examples=600, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_the_fast_check_never_accepts_what_jsonschema_refuses(
        real: dict[str, dict[str, Any]], data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(sorted(real)))
    body = copy.deepcopy(real[kind])
    where = data.draw(st.sampled_from(paths(body)))
    parent = body
    for key in where[:-1]:
        parent = parent[key]
    how = data.draw(st.sampled_from(["set", "set", "set", "remove", "add"]))
    if how == "set":
        parent[where[-1]] = data.draw(values)
    elif how == "remove" and isinstance(parent, dict):
        del parent[where[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(min_size=1, max_size=8))] = data.draw(values)
    judged = not any(True for _ in _validator(kind).iter_errors(body))
    try:
        _fast(kind)(body)
        fast = True
    except Exception:
        fast = False
    assert not (fast and not judged), (kind, where, how, body)
    assert (schema_error(kind, body) == "") == judged


def test_the_shipped_wire_schemas_are_generated_from_the_dataclasses() -> None:
    """Every JSON Schema in edge/delivery/schemas/ is what the wire dataclasses generate: a bound
    widened by hand in a shipped file (or a field added to a dataclass without regenerating)
    fails here."""
    from edge.delivery.wire import BODIES, json_schema, schema

    for kind in BODIES:
        assert schema(kind) == json_schema(kind), \
            f"{kind}.json differs: python -c 'from edge.delivery.wire import write_schemas; " \
            "write_schemas()'"

"""The device's model store (issue 41, second part): a package installed by `lungedge model
install` is checked, copied, self-tested beside the running one and made current on trial; a
running daemon takes it between two cycles on SIGHUP without stopping its capture, and goes
back by itself when the package fails its self-test or the daemon dies during the trial. Real
interpreters, a real broker, real SIGKILLs."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge.dev.local_broker import LocalBroker as Broker
from edge.pipeline.model import ModelError, ModelRunner, sha256_of
from edge.pipeline.self_test import SELFTEST_FILE, SelfTestFailed, write_golden
from edge.service.model_store import ModelStore
from tests.test_daemon import ROOT, SMOKE_MODEL, Subscriber, finish, start_daemon, write_config


def package(tmp: Path, version: str, *, name: str = "lungedge-smoke") -> Path:
    """The smoke model as VERSION, with golden windows its own runner gives."""
    out = tmp / f"pkg-{version}"
    shutil.copytree(SMOKE_MODEL, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["version"], manifest["name"] = version, name
    (out / "manifest.json").write_text(json.dumps(manifest))
    runner = ModelRunner(out)
    m = runner.manifest
    windows = np.random.default_rng(1).normal(
        size=(6, m.window.frames, m.frontend.n_features)).astype(np.float32)
    write_golden(out, runner, windows)
    return out


def install(store: ModelStore, pkg: Path, **kw: object) -> str:
    done = store.install(pkg, trusted_keys=(), max_window_ms=float(str(kw.get("ms", 500))),
                         downgrade=bool(kw.get("downgrade", False)), now=time.time())
    return done.folder.name


def test_install_refusals_trial_and_rollback(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    first = install(store, package(tmp_path, "0.0.1"))
    active = store.active()
    assert active is not None and active.current == first and active.trial_since is None
    second = install(store, package(tmp_path, "0.0.2"))
    active = store.active()
    assert active is not None and (active.current, active.previous) == (second, first)
    assert active.trial_since is not None and "golden windows agree" in active.why
    with pytest.raises(ModelError, match=r"0.0.1 is older than the running lungedge-smoke "
                                         r"0.0.2: refused \(install with --downgrade"):
        install(store, package(tmp_path / "again", "0.0.1"))
    # a package that does not behave as it did when packaged: refused, the store as it was
    flipped = package(tmp_path, "0.0.3")
    with np.load(flipped / SELFTEST_FILE) as data:
        windows, probs = data["windows"], data["probs"]
    np.savez(flipped / SELFTEST_FILE, windows=windows, probs=np.roll(np.eye(probs.shape[1])[
        probs.argmax(1)], 1, axis=1).astype(np.float32))
    with pytest.raises(SelfTestFailed, match=r"window 0 called \w+ here, \w+ when packaged"):
        install(store, flipped)
    slow = package(tmp_path, "0.0.4")
    with pytest.raises(SelfTestFailed, match=r"ms a window on this device, over its budget"):
        install(store, slow, ms=1e-6)
    broken = package(tmp_path, "0.0.5")
    (broken / "model.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError):
        install(store, broken)
    assert sorted(p.name for p in store.root.iterdir()) == sorted([first, second,
                                                                  "active.json"])
    back = store.rollback("asked", by_hand=True)
    assert (back.current, back.previous) == (first, second) and back.trial_since is None
    assert back.why == "sent back by hand: asked"
    assert install(store, package(tmp_path / "down", "0.0.1"), downgrade=True) == first


def test_a_sigkill_at_any_point_of_an_install_leaves_a_model_that_runs(tmp_path: Path
                                                                       ) -> None:
    """`lungedge model install` killed at random moments: the store always names a complete
    package that loads, old or new, and the next install clears what the killed one left."""
    store_dir = tmp_path / "store"
    cfg = tmp_path / "lungedge.yaml"
    cfg.write_text(f"model:\n  store: {store_dir}\n")
    store = ModelStore(store_dir)
    install(store, package(tmp_path, "0.0.1"))
    rng = random.Random(0)
    outcomes = set()
    for i in range(8):
        new = package(tmp_path / str(i), f"0.1.{i}")
        proc = subprocess.Popen([sys.executable, "-m", "edge", "model", "--config", str(cfg),
                                 "install", str(new)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        current = store.current()
        assert current is not None
        runner = ModelRunner(current)  # complete: every member there, the manifest agreeing
        outcomes.add(runner.manifest.version == f"0.1.{i}")
    assert ModelRunner(store_dir / install(store, package(tmp_path, "0.2.0")))
    assert not [p for p in store_dir.iterdir() if p.name.startswith(".incoming-")]
    assert len([p for p in store_dir.iterdir() if p.is_dir()]) <= 2
    assert outcomes  # (which ones were hit is the clock's; every one left a valid model)


def _store_config(tmp: Path, port: int, store: Path, watch_s: float) -> Path:
    cfg = write_config(tmp, port, realtime=True, loop=True)
    cfg.write_text(cfg.read_text().replace(
        f"  path: {SMOKE_MODEL}\n",
        f"  path: null\n  store: {store}\n  watch_s: {watch_s}\n"))
    return cfg


def _versions(sub: Subscriber) -> list[str]:
    return [c["model"]["version"] for c in sub.of("cycle")]


def test_the_daemon_takes_a_new_package_between_two_cycles_and_falls_back_by_itself(
        tmp_path: Path, broker: Broker) -> None:
    store_dir = tmp_path / "store"
    store = ModelStore(store_dir)
    install(store, package(tmp_path, "0.0.1"))
    cfg = _store_config(tmp_path, broker.port, store_dir, watch_s=3600)
    sub = Subscriber(broker.port)
    proc = start_daemon(cfg)
    try:
        sub.wait_for(lambda: len(sub.of("cycle")) >= 3, timeout=60)
        r = subprocess.run([sys.executable, "-m", "edge", "model", "--config", str(cfg),
                            "install", str(package(tmp_path, "0.0.2"))], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "installed lungedge-smoke 0.0.2" in r.stdout, r.stderr
        proc.send_signal(signal.SIGHUP)
        sub.wait_for(lambda: "0.0.2" in _versions(sub), timeout=60)
        sub.wait_for(lambda: _versions(sub)[-3:] == ["0.0.2"] * 3, timeout=60)
        seqs = [c["seq"] for c in sub.of("cycle")]
        assert seqs == list(range(len(seqs)))  # one epoch, no restart, no cycle lost
        statuses = [s for s in sub.of("status") if s["model"]["version"] == "0.0.2"]
        assert statuses and statuses[0]["state"] == "online"
        active = store.active()
        assert active is not None
        assert statuses[0]["model"]["sha256"] == sha256_of(
            store_dir / active.current / "manifest.json")
        assert statuses[0]["model"]["note"].startswith("installed (6 golden windows agree")
        # killed on trial: the next start goes back to 0.0.1 by itself and says why
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        restarted = start_daemon(cfg)
        before = len(sub.of("cycle"))
        sub.wait_for(lambda: len(sub.of("cycle")) >= before + 3, timeout=60)
        assert _versions(sub)[-1] == "0.0.1"
        active = store.active()
        assert active is not None and active.why.startswith(
            "rolled back: the daemon restarted during the trial of lungedge-smoke-0.0.2")
        note = next(s["model"]["note"] for s in reversed(sub.of("status")) if s["model"])
        assert note.startswith("rolled back: the daemon restarted during the trial")
        restarted.send_signal(signal.SIGTERM)
        out = finish(restarted)
        assert restarted.returncode == 0, out
        assert "model: back to lungedge-smoke-0.0.1" in out
    finally:
        if proc.poll() is None:
            proc.kill()
        sub.close()


def test_an_install_by_root_is_handed_to_the_service_user(tmp_path: Path) -> None:
    """`sudo lungedge model install` on a Pi: the daemon, running as the service user, must
    still be able to keep its trial and roll back."""
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root (to install as root and hand over to another user)")
    nobody = pwd.getpwnam("nobody")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    store = ModelStore(state / "models")
    install(store, package(tmp_path, "0.0.1"))
    install(store, package(tmp_path, "0.0.2"))
    owners = {p.stat().st_uid for p in [store.root, *store.root.rglob("*")]}
    assert owners == {nobody.pw_uid}


def test_install_checks_the_signature_and_names_the_package_given(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="cryptography (a runtime dependency) is "
                                               "missing: pip install -e .")
    from convert.sign import new_key, sign

    key = new_key(tmp_path / "ward")
    pkg = package(tmp_path, "0.0.1")
    sign(pkg, tmp_path / "ward.key")
    store = ModelStore(tmp_path / "store")
    done = store.install(pkg, trusted_keys=[key], max_window_ms=500, now=time.time())
    assert done.package == "lungedge-smoke 0.0.1"
    tampered = package(tmp_path, "0.0.2")
    sign(tampered, tmp_path / "ward.key")
    (tampered / SELFTEST_FILE).write_bytes(b"changed")
    with pytest.raises(ModelError, match=rf"^{tampered}: not the package key [0-9a-f]+ signed: "
                                         rf"{SELFTEST_FILE} changed since it was signed"):
        store.install(tampered, trusted_keys=[key], max_window_ms=500, now=time.time())
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".incoming")] == []


def test_processing_that_falls_behind_on_trial_sends_the_daemon_back(tmp_path: Path) -> None:
    """On trial, capture dropping blocks because processing fell behind is the new package's
    fault: the daemon goes back to the previous package between two cycles and says why."""
    from edge.service.config import parse_config
    from edge.service.daemon import Daemon
    from tests.test_daemon_wiring import SAMPLES, MemoryPublisher

    store = ModelStore(tmp_path / "store")
    first = install(store, package(tmp_path, "0.0.1"))
    install(store, package(tmp_path, "0.0.2"))
    cfg = parse_config(f"""device_id: bed-1
source:
  type: file
  file: {{path: {SAMPLES / 'crackle_65121853_1.5_0_p4_4225.wav'}, realtime: false}}
model: {{store: {store.root}, watch_s: 3600}}
spool: {{path: {tmp_path / 'spool.db'}}}
""")
    publisher = MemoryPublisher()
    daemon = Daemon(cfg, publisher=publisher)
    assert daemon.runner.manifest.version == "0.0.2"
    daemon._observe()  # on trial, nothing dropped: it stays
    assert daemon.runner.manifest.version == "0.0.2"
    daemon.stats.dropped_blocks += 1
    daemon._observe()
    active = store.active()
    assert active is not None and active.current == first
    assert active.why.startswith("rolled back: lungedge-smoke-0.0.2-") and \
        active.why.endswith("processing fell behind on it: capture dropped blocks")
    assert daemon.runner.manifest.version == "0.0.1"
    assert publisher.models[-1].version == "0.0.1"
    assert publisher.models[-1].note == active.why
    assert daemon.run() == 0  # and it goes on classifying with 0.0.1
    assert {m["model"]["version"] for k, m in publisher.messages if k == "cycle"} == {"0.0.1"}


def test_a_trial_that_passes_is_over_once(tmp_path: Path) -> None:
    """After watch_s in good health the package is the device's own: the store says so once,
    and dropped blocks no longer send it back."""
    from edge.service.config import parse_config
    from edge.service.daemon import Daemon
    from tests.test_daemon_wiring import SAMPLES, MemoryPublisher

    store = ModelStore(tmp_path / "store")
    install(store, package(tmp_path, "0.0.1"))
    second = install(store, package(tmp_path, "0.0.2"))
    cfg = parse_config(f"""device_id: bed-1
source:
  type: file
  file: {{path: {SAMPLES / 'crackle_65121853_1.5_0_p4_4225.wav'}, realtime: false}}
model: {{store: {store.root}, watch_s: 0}}
spool: {{path: {tmp_path / 'spool.db'}}}
""")
    daemon = Daemon(cfg, publisher=MemoryPublisher())
    daemon._observe()
    active = store.active()
    assert active is not None and active.current == second and active.trial_since is None
    assert active.why.endswith("; trial of 0 s passed")
    daemon.stats.dropped_blocks += 1
    daemon._observe()
    after = store.active()
    assert after is not None and after.current == second and after.why == active.why

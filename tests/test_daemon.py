"""`lungedge run` as a real process, against a real Mosquitto, with a real int8 model."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest

from edge.delivery.wire import schema
from edge.dev.local_broker import LocalBroker as Broker

ROOT = Path(__file__).resolve().parents[1]
SMOKE_MODEL = ROOT / "tests" / "data" / "smoke_model"
SAMPLE = ROOT / "models" / "samples" / "wheeze_65121853_1.5_0_p1_4228.wav"


class Subscriber:
    """A station: persistent session, QoS 1, reconnects by itself."""

    def __init__(self, port: int, prefix: str = "lungedge") -> None:
        self.messages: list[tuple[str, dict[str, Any], float]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="station",
                                  clean_session=False)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(f"{prefix}/+/+", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        deadline = time.monotonic() + 5
        while not self.client.is_connected():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # the subscription is in place

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic.rsplit("/", 1)[1], json.loads(msg.payload),
                                  time.time()))

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.lock:
            return [p for k, p, _ in self.messages if k == kind]

    def wait_for(self, predicate: Any, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting for messages"
            time.sleep(0.05)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def write_config(tmp: Path, port: int, *, source: str | None = None, realtime: bool = False,
                 loop: bool = False, model: Path = SMOKE_MODEL, extra: str = "",
                 mqtt_extra: str = "", log_level: str = "info",
                 serial_port: Path | None = None) -> Path:
    cfg = tmp / "lungedge.yaml"
    source_yaml = f"""  type: serial
  serial:
    port: {serial_port}""" if serial_port else f"""  type: file
  file:
    path: {source or SAMPLE}
    realtime: {str(realtime).lower()}
    loop: {str(loop).lower()}"""
    cfg.write_text(f"""device_id: bed-7
log_level: {log_level}
source:
{source_yaml}
model:
  path: {model}
mqtt:
  port: {port}
  reconnect_min_s: 0.3
  reconnect_max_s: 1.0
  stats_interval_s: 2
{mqtt_extra}spool:
  path: {tmp / 'spool.db'}
tracker:
  wheeze:
    on_fraction: 0.3
    min_cycles: 2
{extra}""")
    return cfg


def start_daemon(cfg: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def spool_depth(tmp: Path) -> int:
    """Messages waiting in the daemon's spool (0 before the daemon has created it)."""
    try:
        db = sqlite3.connect(f"file:{tmp / 'spool.db'}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
        finally:
            db.close()
    except sqlite3.OperationalError:
        return 0


def cycle_seqs(sub: Subscriber) -> list[int]:
    return [p["seq"] for p in sub.of("cycle")]


def test_end_to_end_every_message_arrives_valid_and_in_sequence(tmp_path: Path,
                                                                 broker: Broker) -> None:
    sub = Subscriber(broker.port)
    proc = start_daemon(write_config(tmp_path, broker.port))
    out = finish(proc)
    assert proc.returncode == 0, out
    sub.wait_for(lambda: any(p["state"] == "offline" for p in sub.of("status")))
    for kind, payload, _ in sub.messages:
        jsonschema.validate(payload, schema(kind))  # every real message, against its schema
    cycles = sub.of("cycle")
    assert len(cycles) >= 8
    assert cycle_seqs(sub) == list(range(len(cycles)))
    assert {c["model"]["name"] for c in cycles} == {"lungedge-smoke"}
    (summary,) = sub.of("summary")
    assert summary["cycles"] == len(cycles) and summary["ended_by"] == "end_of_stream"
    assert summary["session_id"] == cycles[0]["session_id"]
    assert sub.of("stats") and sub.of("stats")[-1]["cycles"] == len(cycles)
    assert spool_depth(tmp_path) == 0
    sub.close()


@contextlib.contextmanager
def simulated_stethoscope(link: Path, log: Path, recording: Path, *extra: str
                          ) -> Iterator[subprocess.Popen[bytes]]:
    """The stethoscope simulator speaking the link protocol on a pty at `link`, its output in
    `log`, stopped when the block ends."""
    with log.open("w") as out:
        sim = subprocess.Popen([sys.executable, "-m", "firmware_bridge.simulate", str(recording),
                                "--link", str(link), "--loop", "--seed", "1", *extra],
                               cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield sim
        finally:
            sim.terminate()
            sim.wait(10)


def stop_cleanly(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert proc.returncode == 0, out


def test_serial_stethoscope_counts_and_alert_light(tmp_path: Path, broker: Broker) -> None:
    """A stethoscope on a lossy serial line (the simulator on a pty, 5% of frames dropped):
    the station sees the lost frames in `stats` while the daemon keeps classifying, and when a
    clinical alert opens the stethoscope is told to blink its LED."""
    link = tmp_path / "steth"
    with simulated_stethoscope(link, tmp_path / "sim.log", SAMPLE, "--drop", "0.05"):
        deadline = time.monotonic() + 10
        while not link.exists():
            assert time.monotonic() < deadline, "simulator did not create its link"
            time.sleep(0.05)
        sub = Subscriber(broker.port)
        proc = start_daemon(write_config(tmp_path, broker.port, serial_port=link,
                                         model=ROOT / "models" / "lungedge-cnnlstm"))
        sub.wait_for(lambda: any(p["source_counters"].get("lost_frames", 0) > 0
                                 for p in sub.of("stats")) and sub.of("cycle")
                     and any(a["event"] == "new" and a["kind"] in ("wheeze", "crackle")
                             for a in sub.of("alert")), timeout=60)
        stop_cleanly(proc)
    stats = sub.of("stats")[-1]
    for kind, payload, _ in sub.messages:
        jsonschema.validate(payload, schema(kind))
    counts = stats["source_counters"]
    assert counts["frames"] > 0 and counts["bad_frames"] == 0 and counts["gap_samples"] > 0
    assert counts["heartbeats"] > 0
    assert stats["gaps"] > 0 and stats["source"].startswith(f"serial {link}")
    assert "ALERT pattern 2 for 3000 ms" in (tmp_path / "sim.log").read_text()
    sub.close()


def test_a_stethoscope_plugged_in_after_start_blinks_its_led(tmp_path: Path,
                                                             broker: Broker) -> None:
    """The stethoscope absent at boot: the daemon waits for it (a WaitingSource), which could
    not blink an LED, so a stethoscope plugged in later never showed an alert at the bedside.
    Now the input's abilities pass through: its LED blinks for the clinical alert."""
    link = tmp_path / "steth"
    sub = Subscriber(broker.port)
    proc = start_daemon(write_config(tmp_path, broker.port, serial_port=link,
                                     model=ROOT / "models" / "lungedge-cnnlstm"))
    sub.wait_for(lambda: any("is the stethoscope plugged in?" in r for s in sub.of("status")
                             for r in s.get("reasons", [])), timeout=30)
    try:
        with simulated_stethoscope(link, tmp_path / "sim.log", ROOT / "models" / "samples"
                                   / "crackle_65121853_1.5_0_p4_4225.wav"):
            sub.wait_for(lambda: any(a["event"] == "new" and a["kind"] == "crackle"
                                     for a in sub.of("alert")), timeout=90)
            deadline = time.monotonic() + 10
            while "ALERT pattern 2 for 3000 ms" not in (tmp_path / "sim.log").read_text():
                assert time.monotonic() < deadline, "the LED was never told to blink"
                time.sleep(0.2)
            stop_cleanly(proc)
    finally:
        sub.close()


def test_broker_restarted_three_times_loses_no_cycle(tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker.port)
    proc = start_daemon(write_config(tmp_path, broker.port, realtime=True, loop=True))
    for _ in range(3):
        time.sleep(2.0)
        broker.stop()
        time.sleep(1.0)
        broker.start()
    time.sleep(2.0)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert proc.returncode == 0, out
    sub.wait_for(lambda: any(p["state"] == "offline" and p["reason"] == "shutdown"
                             for p in sub.of("status")))
    seqs = cycle_seqs(sub)
    assert len(set(seqs)) >= 5
    assert sorted(set(seqs)) == list(range(max(seqs) + 1))  # none lost
    first_seen = list(dict.fromkeys(seqs))
    assert first_seen == sorted(first_seen)  # order kept; repeats are recognisable by seq
    assert spool_depth(tmp_path) == 0
    sub.close()


def test_broker_unreachable_from_start_then_appears(tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker.port)
    broker.stop()
    proc = start_daemon(write_config(tmp_path, broker.port, realtime=True))
    deadline = time.monotonic() + 15
    while spool_depth(tmp_path) < 3:  # classification goes on, into the spool
        assert time.monotonic() < deadline
        time.sleep(0.2)
    broker.start()
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "status degraded: broker unreachable" in out
    sub.wait_for(lambda: any(p["state"] == "offline" for p in sub.of("status")))
    seqs = cycle_seqs(sub)
    assert seqs and sorted(set(seqs)) == list(range(max(seqs) + 1))
    sub.close()


def test_daemon_killed_mid_stream_delivers_everything_after_restart(tmp_path: Path,
                                                                    broker: Broker) -> None:
    sub = Subscriber(broker.port)
    broker.stop()
    cfg = write_config(tmp_path, broker.port, realtime=True)
    proc = start_daemon(cfg)
    deadline = time.monotonic() + 15
    while spool_depth(tmp_path) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.kill()  # SIGKILL: no goodbye
    proc.wait()
    with sqlite3.connect(tmp_path / "spool.db") as db:
        spooled = db.execute("SELECT seq FROM messages WHERE kind='cycle'").fetchall()
    assert spooled
    broker.start()
    proc = start_daemon(cfg)
    out = finish(proc)
    assert proc.returncode == 0, out
    sub.wait_for(lambda: any(p["state"] == "offline" and p["reason"] == "shutdown"
                             for p in sub.of("status")))
    got = set(cycle_seqs(sub))
    assert {s for (s,) in spooled} <= got  # all classified before the kill arrived
    assert sorted(got) == list(range(max(got) + 1))  # and seq carried on across the restart
    sub.close()


# -- refusing bad input -----------------------------------------------------------------------
def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_bad_inputs_fail_fast_with_clear_errors(tmp_path: Path) -> None:
    port = 1  # never reached: every case fails before connecting
    broken = tmp_path / "broken_model"
    shutil.copytree(SMOKE_MODEL, broken)
    (broken / "model.tflite").write_bytes(b"not a flatbuffer")
    r = run_cli("run", "--config", str(write_config(tmp_path, port, model=broken)))
    assert r.returncode == 2 and "model.tflite: sha256" in r.stderr  # manifest disagrees

    manifest = json.loads((broken / "manifest.json").read_text())
    import hashlib

    manifest["sha256"] = hashlib.sha256(b"not a flatbuffer").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("run", "--config", str(write_config(tmp_path, port, model=broken)))
    assert r.returncode == 2 and "not a loadable TFLite model" in r.stderr

    mismatch = tmp_path / "mismatch"
    shutil.copytree(SMOKE_MODEL, mismatch)
    manifest = json.loads((mismatch / "manifest.json").read_text())
    manifest["input"]["scale"] *= 2
    (mismatch / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("run", "--config", str(write_config(tmp_path, port, model=mismatch)))
    assert r.returncode == 2 and "input tensor quantization" in r.stderr

    manifest["input"]["scale"] /= 2
    manifest["frontend"]["n_mfcc"] = 13
    (mismatch / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("run", "--config", str(write_config(tmp_path, port, model=mismatch)))
    assert r.returncode == 2 and "feature_mean/feature_std need 13 values" in r.stderr

    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("mqtt:\n  prot: 1883\n")
    r = run_cli("run", "--config", str(bad_cfg))
    assert r.returncode == 2 and "mqtt.prot: unknown key (did you mean 'port'?)" in r.stderr

    no_model = tmp_path / "nomodel.yaml"
    no_model.write_text(f"source:\n  type: stdin\nmodel:\n  path: {tmp_path / 'none'}\n")
    r = run_cli("run", "--config", str(no_model))
    assert r.returncode == 2 and "model.path:" in r.stderr and "not found" in r.stderr

    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF" + bytes(200))
    r = run_cli("run", "--config", str(write_config(tmp_path, port, source=str(garbage))))
    assert r.returncode == 2 and "not a readable WAV" in r.stderr


def test_check_config_verifies_the_files_it_names(tmp_path: Path) -> None:
    """check-config said OK to a model folder that holds nothing, a CA file that is missing or
    not a certificate, and a spool under a file; now each is a line with file, line and key,
    and `run` refuses to start without a model, naming the key too."""
    cfg = write_config(tmp_path, 1883, model=tmp_path / "nowhere", mqtt_extra=f"""\
  tls:
    enabled: true
    ca_file: {tmp_path / 'missing-ca.pem'}
""")
    text = cfg.read_text().replace(f"path: {tmp_path / 'spool.db'}",
                                   "path: /etc/hostname/spool.db")
    cfg.write_text(text)
    r = run_cli("check-config", str(cfg))
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 3, r.stderr
    line_of = {key: i + 1 for i, row in enumerate(text.splitlines())
               for key in ("path: " + str(tmp_path / "nowhere"), "ca_file", "spool.db")
               if key in row}
    assert lines[0].startswith(f"{cfg}:{line_of['path: ' + str(tmp_path / 'nowhere')]}: "
                               "model.path: ") and "manifest.json: not found" in lines[0]
    assert lines[1] == (f"{cfg}:{line_of['ca_file']}: mqtt.tls.ca_file: "
                        f"{tmp_path / 'missing-ca.pem'}: no such file")
    assert lines[2] == f"{cfg}:{line_of['spool.db']}: spool.path: /etc/hostname is not a folder"
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 2 and f"{cfg}:{line_of['path: ' + str(tmp_path / 'nowhere')]}: " \
        "model.path:" in r.stderr
    (tmp_path / "missing-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot one\n")
    r = run_cli("check-config", str(write_config(tmp_path, 1883, mqtt_extra=f"""\
  tls:
    enabled: true
    ca_file: {tmp_path / 'missing-ca.pem'}
""")))
    assert r.returncode == 2 and "mqtt.tls.ca_file: " in r.stderr \
        and "not a PEM CA certificate" in r.stderr
    r = run_cli("check-config", str(write_config(tmp_path, 1883)))
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr


@pytest.mark.parametrize(("mqtt_extra", "spool", "expected"), [
    ("  password_file: {tmp}/missing\n", None, "mqtt.password_file: {tmp}/missing: no such file"),
    ("  password_file: {tmp}/empty\n", None, "mqtt.password_file: {tmp}/empty is empty"),
    ("  password_env: LUNGEDGE_NOT_SET\n", None, "mqtt.password_env: the environment "
                                                 "variable LUNGEDGE_NOT_SET is not set"),
    ("  host: ''\n", None, "mqtt.host: empty"),
    ("", "{tmp}", "spool.path: {tmp} is a folder"),
])
def test_check_config_finds_what_run_refuses(tmp_path: Path, mqtt_extra: str,
                                             spool: str | None, expected: str) -> None:
    """check-config passed a missing or empty password file (run then said "list index out
    of range"), an unset password_env, an empty host and a spool path that is a folder; each
    failed start burned a numbering epoch. Now check-config names each, and run refuses them
    before it opens the spool (no epoch burned)."""
    (tmp_path / "empty").write_text("\n")
    cfg = write_config(tmp_path, 1883, mqtt_extra=mqtt_extra.replace("{tmp}", str(tmp_path)))
    if spool:
        cfg.write_text(cfg.read_text().replace(f"path: {tmp_path / 'spool.db'}",
                                               f"path: {spool.replace('{tmp}', str(tmp_path))}"))
    r = run_cli("check-config", "--config", str(cfg))
    assert r.returncode == 2 and expected.replace("{tmp}", str(tmp_path)) in r.stderr, r.stderr
    r = run_cli("run", "--config", str(cfg))
    assert r.returncode == 2 and expected.replace("{tmp}", str(tmp_path)) in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "spool.db").exists()


def test_the_shipped_example_config_validates_on_a_checkout() -> None:
    """Its header says to validate it, and it failed (its model path was under /opt): now its
    model is the one that ships, found wherever lungedge runs from."""
    r = run_cli("check-config", str(ROOT / "edge" / "lungedge.example.yaml"))
    assert r.returncode == 0, r.stderr


def test_a_tls_file_it_cannot_read_is_reported_and_retried(tmp_path: Path) -> None:
    """A missing CA file killed the delivery thread: the daemon stayed online and delivered
    nothing. Now the status says why delivery is down, and once the file is there every cycle
    is delivered."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl (Debian: openssl)")
    tls = make_tls(tmp_path)
    ca = tmp_path / "later" / "ca.pem"
    listener = f"cafile {tls['ca']}\ncertfile {tls['cert']}\nkeyfile {tls['key']}\n"
    with Broker(tmp_path, listener=listener) as broker:
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        received: list[int] = []
        sub.tls_set(ca_certs=str(tls["ca"]))
        sub.on_connect = lambda c, u, f, r, p: c.subscribe("lungedge/+/cycle", qos=1)
        sub.on_message = lambda c, u, m: received.append(json.loads(m.payload)["seq"])
        sub.connect("localhost", broker.port)
        sub.loop_start()
        cfg = write_config(tmp_path, broker.port, realtime=True, mqtt_extra=f"""\
  host: localhost
  tls:
    enabled: true
    ca_file: {ca}
""")
        proc = start_daemon(cfg)
        time.sleep(5)
        assert not received
        ca.parent.mkdir()
        shutil.copy(tls["ca"], ca)
        deadline = time.monotonic() + 40
        while len(received) < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out = finish(proc)
        sub.loop_stop()
    assert proc.returncode == 0, out
    assert "status degraded: broker unreachable: mqtt.tls: cannot use ca_file" in out
    assert "Traceback" not in out
    assert sorted(received)[:8] == list(range(8))


def test_a_stethoscope_hearing_only_hiss_is_poor_signal(tmp_path: Path, broker: Broker) -> None:
    """40 s of white noise: no breathing cycle, no silence either. It was reported as nothing
    at all (status online, no alert); now poor_signal opens, and the status says so."""
    import numpy as np
    import scipy.io.wavfile

    hiss = tmp_path / "hiss.wav"
    noise = np.random.default_rng(0).normal(0, 3000, 8000 * 40).clip(-32000, 32000)
    scipy.io.wavfile.write(hiss, 8000, noise.astype(np.int16))
    sub = Subscriber(broker.port)
    proc = start_daemon(write_config(tmp_path, broker.port, source=str(hiss), realtime=True,
                                     extra="  no_breathing_s: 8\n"))
    sub.wait_for(lambda: any(a["kind"] == "poor_signal" for a in sub.of("alert")), timeout=40)
    sub.wait_for(lambda: any(r.startswith("poor signal: sound but no breathing")
                             for s in sub.of("status") for r in s.get("reasons", [])),
                 timeout=10)
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    sub.close()
    assert proc.returncode == 0, out
    new = next(a for a in sub.of("alert") if a["kind"] == "poor_signal")
    assert new["event"] == "new" and new["evidence"]["no_cycle_s"] >= 8
    assert not sub.of("cycle")


# -- systemd notify -----------------------------------------------------------------------------
def test_notify_ready_status_and_watchdog_only_while_audio_flows(tmp_path: Path,
                                                                 broker: Broker) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    cfg = write_config(tmp_path, broker.port).read_text().replace(
        "  type: file\n", "  type: stdin\n")
    (tmp_path / "stdin.yaml").write_text(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                             str(tmp_path / "stdin.yaml")], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "NOTIFY_SOCKET": str(sock_path),
                                 "WATCHDOG_USEC": "400000"})
    received: list[tuple[float, str]] = []
    done = threading.Event()

    def collect() -> None:
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                received.append((time.monotonic(), sock.recv(4096).decode()))

    import numpy as np

    from edge.sources.audio_file import read_audio

    x, _ = read_audio(SAMPLE)
    pcm = (np.clip(x * 32768, -32768, 32767)).astype("<i2").tobytes()
    assert proc.stdin is not None
    t = threading.Thread(target=collect)
    t.start()
    deadline = time.monotonic() + 30  # the clock starts once the daemon says it is ready
    while not any("READY=1" in m for _, m in received):
        assert time.monotonic() < deadline, "no READY=1 from the daemon"
        time.sleep(0.02)
    feeding_until = time.monotonic() + 3
    for i in range(0, 8000 * 2 * 3, 1600):  # 3 s of audio in real time
        proc.stdin.write(pcm[i:i + 1600])
        proc.stdin.flush()
        time.sleep(0.1)
    time.sleep(3)  # then the source stalls (the pipe stays open, nothing arrives) for 3 s
    proc.stdin.close()
    proc.wait(timeout=30)
    time.sleep(0.3)  # the last datagrams
    done.set()
    t.join()
    text = [m for _, m in received]
    assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in text)
    pings = [ts for ts, m in received if "WATCHDOG=1" in m]
    assert len([p for p in pings if p < feeding_until]) >= 3  # while audio is processed
    assert not [p for p in pings if p > feeding_until + 0.5]  # a stalled loop stops pinging
    assert any("STOPPING=1" in m for m in text) and proc.returncode == 0


def test_sighup_rejects_a_bad_config_and_restarts_cleanly_on_a_good_one(
        tmp_path: Path, broker: Broker) -> None:
    sub = Subscriber(broker.port)
    cfg = write_config(tmp_path, broker.port, realtime=True, loop=True)
    good = cfg.read_text()
    proc = start_daemon(cfg)
    sub.wait_for(lambda: len(sub.of("cycle")) >= 1)
    cfg.write_text(good.replace("mqtt:\n", "mqtt:\n  prot: 1\n"))  # a typo
    proc.send_signal(signal.SIGHUP)
    time.sleep(2.5)
    assert proc.poll() is None  # still running on the old config
    cfg.write_text(good.replace("device_id: bed-7", "device_id: bed-8"))
    proc.send_signal(signal.SIGHUP)
    sub.wait_for(lambda: any(p["device_id"] == "bed-8" for _, p, _ in sub.messages))
    proc.send_signal(signal.SIGTERM)
    out = finish(proc)
    assert proc.returncode == 0, out
    assert "SIGHUP: new config rejected, keeping the running one" in out
    assert "mqtt.prot: unknown key" in out
    assert "restarting cleanly with it" in out
    # bed-7 ended its session and said goodbye before bed-8 began
    bed7 = [(k, p) for k, p, _ in sub.messages if p["device_id"] == "bed-7"]
    assert any(k == "summary" for k, _ in bed7)
    assert any(k == "status" and p["state"] == "offline" for k, p in bed7)
    sub.close()


def make_tls(tmp: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost."""
    f = {k: tmp / f"{k}.pem" for k in ("ca_key", "ca", "key", "csr", "cert")}
    run = lambda *a: subprocess.run(["openssl", *map(str, a)], check=True,  # noqa: E731
                                    capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f["ca_key"], "-out",
        f["ca"], "-days", "2", "-subj", "/CN=lungedge test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f["key"], "-out", f["csr"],
        "-subj", "/CN=localhost")
    ext = tmp / "ext.cnf"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("x509", "-req", "-in", f["csr"], "-CA", f["ca"], "-CAkey", f["ca_key"],
        "-CAcreateserial", "-out", f["cert"], "-days", "2", "-extfile", ext)
    return f


def test_tls_and_password_from_the_environment_never_logged(tmp_path: Path) -> None:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs openssl and mosquitto_passwd (Debian: openssl, mosquitto)")
    tls = make_tls(tmp_path)
    secret = "s3cret-Pa55-do-not-log"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(tmp_path / "pw"), "station-7",
                    secret], check=True)
    listener = (f"cafile {tls['ca']}\ncertfile {tls['cert']}\nkeyfile {tls['key']}\n"
                f"password_file {tmp_path / 'pw'}\n")
    with Broker(tmp_path, listener=listener, anonymous=False) as broker:
        received: list[str] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.username_pw_set("station-7", secret)
        sub.tls_set(ca_certs=str(tls["ca"]))
        sub.on_connect = lambda c, u, f, r, p: c.subscribe("lungedge/+/cycle", qos=1)
        sub.on_message = lambda c, u, m: received.append(m.topic)
        sub.connect("localhost", broker.port)
        sub.loop_start()
        cfg = write_config(tmp_path, broker.port, log_level="debug", mqtt_extra=f"""\
  username: station-7
  password_env: LUNGEDGE_TEST_PASSWORD
  tls:
    enabled: true
    ca_file: {tls['ca']}
""")
        ok = start_daemon(cfg, LUNGEDGE_TEST_PASSWORD=secret)
        out_ok = finish(ok)
        assert ok.returncode == 0, out_ok
        deadline = time.monotonic() + 10
        while len(received) < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(received) >= 8
        (tmp_path / "spool.db").unlink()
        bad = start_daemon(cfg, LUNGEDGE_TEST_PASSWORD="wrong-" + secret)
        time.sleep(4)
        bad.send_signal(signal.SIGTERM)
        out_bad = finish(bad)
        sub.loop_stop()
    assert "broker refused the connection" in out_bad
    for out in (out_ok, out_bad):
        assert secret not in out  # not even at log level debug


def test_sigterm_with_a_silent_stdin_still_shuts_down_cleanly(tmp_path: Path,
                                                               broker: Broker) -> None:
    cfg = tmp_path / "stdin.yaml"
    cfg.write_text(write_config(tmp_path, broker.port).read_text().replace(
        "  type: file\n", "  type: stdin\n"))
    log = tmp_path / "daemon.log"
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                                cwd=ROOT, stdin=subprocess.PIPE, stdout=sink,
                                stderr=subprocess.STDOUT)
        time.sleep(3)  # running; nothing is ever written to its stdin, which stays open
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.stdin is not None
    proc.stdin.close()
    out = log.read_text()
    assert proc.returncode == 0, out
    assert time.monotonic() - t < 15
    assert "stopped" in out and "Fatal" not in out

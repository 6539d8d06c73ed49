"""`lungedge demo`: the daemon on a shipped sample, with the MQTT messages shown as they arrive.

Starts a private Mosquitto on a free local port (nothing is left running afterwards), a station
subscriber that prints every message, and `lungedge run` on a sample recording played in real
time. Without Mosquitto installed it says how to get it and classifies the sample offline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from edge.dev.local_broker import LocalBroker, find_mosquitto

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "lungedge-cnnlstm"
DEFAULT_SAMPLE = ROOT / "models" / "samples" / "wheeze_65121853_1.5_0_p1_4228.wav"
# The shipped samples are SPRSound recordings, made with its Yunting II stethoscope: a package
# trained per stethoscope carries that stethoscope's calibration, and the demo uses it.
SAMPLES_STETHOSCOPE = "Yunting-II"


def samples_calibration(model: Path) -> Path | None:
    path = model / "calibrations" / f"{SAMPLES_STETHOSCOPE}.json"
    return path if path.is_file() else None


def demo(sample: Path = DEFAULT_SAMPLE, model: Path = DEFAULT_MODEL, fast: bool = False,
         station: bool = False) -> int:
    if find_mosquitto() is None:
        print("No MQTT broker here: install Mosquitto (`sudo apt-get install mosquitto`) to "
              "see the daemon publish. Meanwhile, the same recording classified offline:\n")
        from edge.cli.classify import classify_source
        from edge.pipeline.model import ModelRunner
        from edge.pipeline.tracker import TrackerConfig
        from edge.sources.file import FileSource

        classify_source(str(sample), FileSource(sample),
                        ModelRunner(model, calibration=samples_calibration(model)),
                        TrackerConfig())
        return 0
    with tempfile.TemporaryDirectory(prefix="lungedge-demo-") as tmp:
        work = Path(tmp)
        with LocalBroker(work) as broker:
            port = broker.port
            (work / "lungedge.yaml").write_text(f"""device_id: demo-bed-1
log_level: warning
source:
  type: file
  file:
    path: {sample}
    realtime: {str(not fast).lower()}
    loop: {str(station).lower()}
model:
  path: {model}
  calibration: {samples_calibration(model) or "null"}
mqtt:
  port: {port}
  stats_interval_s: 5
spool:
  path: {work / 'spool.db'}
clips:
  enabled: true
""")
            if station:
                return with_station(work, port)
            print(f"broker: private Mosquitto on 127.0.0.1:{port} (a second device: "
                  f"mqtt: {{host: 127.0.0.1, port: {port}}} in its config)\n"
                  f"daemon: lungedge run on {sample.name} "
                  f"({'as fast as possible' if fast else 'played in real time, 15 s'})\n"
                  f"station: every message the daemon publishes, as it arrives\n"
                  f"{what_to_expect(sample, model)}\n")
            from edge.cli.monitor import monitor

            printer = threading.Thread(target=monitor, args=("127.0.0.1", port, "lungedge"),
                                       kwargs={"until_offline": True}, daemon=True)
            printer.start()
            time.sleep(0.5)
            run = subprocess.run([sys.executable, "-m", "edge", "run", "--config",
                                  str(work / "lungedge.yaml")], cwd=ROOT)
            printer.join(timeout=10)
            return run.returncode


def what_to_expect(sample: Path, model: Path) -> str:
    """What the sample is, by the clinicians' annotation beside it, and what the model calls
    its cycles (a quick offline pass): the shipped model hears the wheeze sample as crackles,
    and a first-time user should read that before the alert, not 570 lines later."""
    import json as json_module

    from edge.pipeline.model import ModelRunner
    from edge.pipeline.recording import analyse_recording
    from edge.pipeline.tracker import TrackerConfig
    from edge.sources.file import FileSource

    annotation = sample.with_suffix(".json")
    said, findings = "has no annotation beside it", set()
    if annotation.is_file():
        data = json_module.loads(annotation.read_text())
        kinds = sorted({e["type"] for e in data.get("event_annotation", [])})
        findings = {f for k in kinds for f in ("crackle", "wheeze") if f in k.lower()
                    or (f == "wheeze" and k.lower() in ("rhonchi", "stridor"))}
        said = (f"is annotated by clinicians as {data.get('record_annotation', '?')} "
                f"({', '.join(kinds) or 'no events'})")
    report = analyse_recording(sample.name, FileSource(sample),
                               ModelRunner(model, calibration=samples_calibration(model)),
                               TrackerConfig())
    calls: dict[str, int] = {}
    for row in report["cycles"]:
        calls[row["label"]] = calls.get(row["label"], 0) + 1
    heard = {f for k in calls for f in ("crackle", "wheeze") if k in (f, "both")}
    verdict = "which agrees with the annotation" if heard == findings else \
        "which does not agree with the annotation: the model's mistake, not the demo's"
    return (f"what to expect: {sample.name} {said}; the model calls its cycles "
            + ", ".join(f"{k} {n}" for k, n in sorted(calls.items())) + f", {verdict}. The "
            "model is a screening aid: models/lungedge-cnnlstm/MODEL_CARD.md says where it is "
            "wrong.")


def with_station(work: Path, port: int) -> int:
    """The station on the private broker, the daemon looping the sample into it, until Ctrl-C;
    a demo nurse may log in and acknowledge."""
    import secrets
    import socket

    from station.auth import hash_password

    with socket.socket() as s:
        web = 8080 if s.connect_ex(("127.0.0.1", 8080)) else 0
    if not web:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            web = s.getsockname()[1]
    password = secrets.token_urlsafe(8)
    deliveries = work / "deliveries.jsonl"  # with the demo's other files: never the checkout
    # the demo's pager: every clinical alert appended to a file, one JSON line each
    append = f"import sys; open({str(deliveries)!r}, 'a').write(sys.stdin.read().strip() + '\\n')"
    rule = {"name": "demo pager (a file)", "category": "clinical", "events": ["new", "update"],
            "cooldown_s": 60, "command": [sys.executable, "-c", append]}
    (work / "station.yaml").write_text(f"""log_level: warning
mqtt: {{port: {port}}}
database: {{url: "sqlite:///{work / 'station.db'}"}}
web:
  port: {web}
  auth: users
  secret_file: {work / 'secret'}
  users: [{{name: demo, password_hash: "{hash_password(password)}"}}]
routing:
  rules: {json.dumps([rule])}
""")
    # Their own sessions: Ctrl-C reaches the demo only, which stops the device first (it
    # publishes `offline`), then the station, then the broker.
    station = subprocess.Popen([sys.executable, "-m", "edge", "station", "--config",
                                str(work / "station.yaml")], cwd=ROOT, start_new_session=True)
    device = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config",
                               str(work / "lungedge.yaml")], cwd=ROOT, start_new_session=True)
    print(f"\nstation: http://127.0.0.1:{web}/  (log in as demo / {password} to acknowledge)"
          f"\ndevice:  demo-bed-1, the sample looping in real time, sending the audio behind "
          f"its alerts (clips)\nbroker:  a private Mosquitto on 127.0.0.1:{port}; point a "
          f"second device at it with mqtt: {{host: 127.0.0.1, port: {port}}} in its "
          f"lungedge.yaml\nrouting: every clinical alert is delivered (a command) to "
          f"{deliveries}: see Deliveries\nCtrl-C stops both.\n", flush=True)
    try:
        device.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in (device, station):
            p.terminate()
            p.wait(20)
    return 0

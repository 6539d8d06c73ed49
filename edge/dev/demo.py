"""`lungedge demo`: the daemon on a shipped sample, with the MQTT messages shown as they arrive.

Starts a private Mosquitto on a free local port (nothing is left running afterwards), a station
subscriber that prints every message, and `lungedge run` on a sample recording played in real
time. Without Mosquitto installed it says how to get it and classifies the sample offline.
"""

from __future__ import annotations

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


def demo(sample: Path = DEFAULT_SAMPLE, model: Path = DEFAULT_MODEL, fast: bool = False) -> int:
    if find_mosquitto() is None:
        print("No MQTT broker here: install Mosquitto (`sudo apt-get install mosquitto`) to "
              "see the daemon publish. Meanwhile, the same recording classified offline:\n")
        from edge.classify import classify_source
        from edge.config import Config
        from edge.model import ModelRunner
        from edge.sources.file import FileSource

        classify_source(str(sample), FileSource(sample), ModelRunner(model), Config())
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
model:
  path: {model}
mqtt:
  port: {port}
  stats_interval_s: 5
spool:
  path: {work / 'spool.db'}
""")
            print(f"broker: private Mosquitto on 127.0.0.1:{port}\n"
                  f"daemon: lungedge run on {sample.name} "
                  f"({'as fast as possible' if fast else 'played in real time, 15 s'})\n"
                  f"station: every message the daemon publishes, as it arrives\n")
            from edge.monitor import monitor

            station = threading.Thread(target=monitor, args=("127.0.0.1", port, "lungedge"),
                                       kwargs={"until_offline": True}, daemon=True)
            station.start()
            time.sleep(0.5)
            run = subprocess.run([sys.executable, "-m", "edge", "run", "--config",
                                  str(work / "lungedge.yaml")], cwd=ROOT)
            station.join(timeout=10)
            return run.returncode

"""How long a cycle takes from its end to the broker, and how much memory the daemon uses.

Runs `lungedge run` on a shipped sample played in real time (looping, `--seconds` long) against
a private Mosquitto, with a subscriber on the same machine. The cycle's end is stamped on the
capture clock; a QoS 1 message reaches the subscriber as the broker acknowledges it, so the
subscriber's receive time stands for the PUBACK. Also prints the daemon-side part (end → spooled)
and the RSS from the daemon's own stats.

    python bench/daemon_latency.py [--seconds 60] [--model models/lungedge-cnnlstm]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.dev.local_broker import LocalBroker  # noqa: E402


def parse_ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "lungedge-cnnlstm")
    ap.add_argument("--sample", type=Path,
                    default=ROOT / "models" / "samples" / "wheeze_65121853_1.5_0_p1_4228.wav")
    args = ap.parse_args()
    received: list[tuple[float, dict]] = []
    stats: list[dict] = []
    lock = threading.Lock()

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        now = time.time()
        payload = json.loads(msg.payload)
        with lock:
            if msg.topic.endswith("/cycle"):
                received.append((now, payload))
            elif msg.topic.endswith("/stats"):
                stats.append(payload)

    with tempfile.TemporaryDirectory() as tmp, LocalBroker(Path(tmp)) as broker:
        cfg = Path(tmp) / "lungedge.yaml"
        cfg.write_text(f"""log_level: warning
source: {{type: file, file: {{path: {args.sample}, realtime: true, loop: true}}}}
model: {{path: {args.model}}}
mqtt: {{port: {broker.port}, stats_interval_s: 5}}
spool: {{path: {tmp}/spool.db}}
""")
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = on_message
        sub.connect("127.0.0.1", broker.port)
        sub.subscribe("lungedge/+/+", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                                cwd=ROOT)
        time.sleep(args.seconds)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        time.sleep(0.5)
        sub.loop_stop()
    with lock:
        end_to_broker = np.array([(t - parse_ts(p["end"])) * 1000 for t, p in received])
        spooled = np.array([p["latency_ms"] for _, p in received])
        rss = [s["rss_mb"] for s in stats]
        infer = [s["inference_ms_p50"] for s in stats if s["inference_ms_p50"] is not None]
    print(f"\n{len(received)} cycles over {args.seconds:.0f} s of real-time audio "
          f"({args.sample.name}, model {args.model.name})\n")
    print(f"{'measure':<40} {'p50':>9} {'p99':>9} {'max':>9}")
    for name, v in (("cycle end → spooled (daemon), ms", spooled),
                    ("cycle end → at the subscriber (≈PUBACK), ms", end_to_broker)):
        print(f"{name:<40} {np.percentile(v, 50):>9.1f} {np.percentile(v, 99):>9.1f} "
              f"{v.max():>9.1f}")
    print(f"{'RSS of the daemon, MB':<40} {np.median(rss):>9.1f} {'':>9} {max(rss):>9.1f}")
    print(f"{'inference per cycle p50, ms':<40} {np.median(infer):>9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A day on the device in minutes: the daemon on a looping recording played as fast as it goes,
against a private Mosquitto, until it has heard `--hours` of audio. Printed at 1 h, 6 h, 12 h
and 24 h of audio: the daemon's RSS, its CPU seconds per hour of audio since the previous line,
and the spool's depth. Flat RSS and CPU per audio hour, and a bounded spool, mean nothing grows
with time.

    .venv/bin/python bench/soak.py [--hours 24] [--model models/lungedge-cnnlstm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.dev.local_broker import LocalBroker  # noqa: E402

SAMPLE = ROOT / "models" / "samples" / "normal_41209060_4.4_1_p4_4143.wav"


def status_mb(pid: int | str, key: str) -> float:
    """A memory figure of /proc/PID/status in MB: VmRSS now, VmHWM the process's peak (its
    own, unlike ru_maxrss, which counts a vforking parent's peak: see bench/pipeline.py)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def proc_usage(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds) of a process, from /proc."""
    rss = status_mb(pid, "VmRSS")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0, help="of audio")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "lungedge-cnnlstm")
    args = ap.parse_args()
    import paho.mqtt.client as mqtt

    marks = [h for h in (1, 6, 12, 24, 48) if h <= args.hours] or [args.hours]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lungedge-soak-") as tmp, \
            LocalBroker(Path(tmp)) as broker:
        cfg = Path(tmp) / "soak.yaml"
        cfg.write_text(f"""device_id: soak
log_level: warning
source: {{type: file, file: {{path: {SAMPLE}, realtime: false, loop: true}}}}
model: {{path: {args.model}}}
mqtt: {{port: {broker.port}, stats_interval_s: 2}}
spool: {{path: {Path(tmp) / 'spool.db'}}}
""")
        latest: dict[str, Any] = {}
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_connect = lambda c, *a: c.subscribe("lungedge/soak/stats")
        sub.on_message = lambda c, u, m: latest.update(json.loads(m.payload))
        sub.connect("127.0.0.1", broker.port)
        sub.loop_start()
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(cfg)],
                                cwd=ROOT)
        last_cpu, last_audio = 0.0, 0.0
        try:
            for mark in marks:
                while latest.get("audio_s", 0) < mark * 3600:
                    if proc.poll() is not None:
                        raise SystemExit(f"the daemon exited ({proc.returncode})")
                    time.sleep(0.5)
                rss, cpu = proc_usage(proc.pid)
                audio = latest["audio_s"]
                rows.append({"audio_h": round(audio / 3600, 2), "rss_mb": round(rss, 1),
                             "cpu_s_per_audio_h": round((cpu - last_cpu)
                                                        / ((audio - last_audio) / 3600), 2),
                             "spool_depth": latest["spool_depth"],
                             "cycles": latest["cycles"],
                             "wall_s": round(time.monotonic() - started)})
                last_cpu, last_audio = cpu, audio
                print(json.dumps(rows[-1]), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
            sub.loop_stop()
    print("\n| audio h | RSS MB | CPU s per audio h | spool depth | cycles | wall s |\n"
          "|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['audio_h']} | {r['rss_mb']} | {r['cpu_s_per_audio_h']} | "
              f"{r['spool_depth']} | {r['cycles']} | {r['wall_s']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

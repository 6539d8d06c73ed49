"""`lungedge monitor`: the station side in its simplest form — one line per message from any
number of devices, with gaps and repeats in each device's `seq` pointed out."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from typing import Any


def describe(kind: str, p: dict[str, Any]) -> str:
    if kind == "cycle":
        return (f"{p['start'][11:23]} {p['duration_s']:.2f}s {p['label']:<7} "
                f"conf {p['confidence']:.2f} quality {p['quality']:.2f}")
    if kind == "alert":
        return f"{p['event'].upper():<6} {p['kind']} {p['evidence']}"
    if kind == "summary":
        return (f"session {p['session_id']}: {p['cycles']} cycles, {p['record_label']}, "
                f"burden {p['abnormal_burden']:.2f}, {p['breathing_rate_per_min']}/min")
    if kind == "status":
        return f"{p['state']}" + (f" ({p['reason']})" if p.get("reason") else "")
    if kind == "stats":
        troubles = {k: v for k, v in p.get("source_counters", {}).items() if v and k != "frames"}
        return (f"audio {p['audio_s']} s, {p['cycles']} cycles, spool {p['spool_depth']}, "
                f"inference p50 {p['inference_ms_p50']} ms, rss {p['rss_mb']} MB"
                + (f", source {troubles}" if troubles else ""))
    if kind == "clip":  # the audio itself is of no use on a terminal: what it is, and its size
        return (f"{p['label']} conf {p['confidence']:.2f} behind "
                f"{p.get('alert_kind') or 'no alert'}, {p['cycle_start'][11:23]}–"
                f"{p['cycle_end'][11:23]}, {p['encoding']} at {p['sample_rate']} Hz, "
                f"{len(p['audio_b64']) * 3 // 4 // 1024} KB")
    return json.dumps(p)


def monitor(host: str, port: int, prefix: str, *, as_json: bool = False,
            until_offline: bool = False) -> int:
    import paho.mqtt.client as mqtt

    last_seq: dict[tuple[str, str], int] = {}
    done = threading.Event()

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        client.subscribe(f"{prefix}/+/+", qos=1)

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        try:
            _, device, kind = msg.topic.split("/", 2)
            p = json.loads(msg.payload)
        except ValueError:
            print(f"?? {msg.topic}: not lungedge JSON", flush=True)
            return
        if as_json:
            print(json.dumps({"topic": msg.topic, "payload": p}), flush=True)
        else:
            key, seq = (device, kind), p.get("seq", -1)
            prev = last_seq.get(key)
            note = ""
            if prev is not None and seq <= prev:
                note = "  (repeat)"
            elif prev is not None and seq > prev + 1 and kind != "status":
                note = f"  ({seq - prev - 1} missing)"
            last_seq[key] = max(seq, prev if prev is not None else seq)
            print(f"{device:<14} {kind:<8} #{seq:<5} {describe(kind, p)}{note}", flush=True)
        if until_offline and kind == "status" and p.get("state") == "offline" \
                and not msg.retain:
            done.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_connect = on_connect
    client.on_message = on_message
    try:
        client.connect(host, port)
    except OSError as exc:
        print(f"lungedge: error: cannot reach the broker at {host}:{port}: {exc}",
              file=sys.stderr)
        return 2
    client.loop_start()
    with contextlib.suppress(KeyboardInterrupt):
        done.wait()
    client.loop_stop()
    return 0

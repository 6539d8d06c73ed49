"""The station under a hospital's load: simulated devices → a real Mosquitto → 1 or 2 ingest
workers → SQLite or PostgreSQL, with a web worker answering the ward overview meanwhile.

    .venv/bin/python bench/station_load.py [--devices 200] [--seconds 60] [--speed 1]
        [--burst N [--backlog]] [--workers 1 2] [--db sqlite postgresql] [--ui]

Each device publishes schema-valid messages as a real one does, time compressed `--speed`
times: a cycle every 1–2 s, alerts opening, updating and ending, status flaps, stats; and, on
purpose, gaps (seqs skipped) and duplicates (messages sent twice). Printed per setting: messages
per second sustained, ingest lag (message time → stored) p50/p99, the ward overview's response
time with every device in it, and the counts that must hold: every distinct message stored
once, no message lost, every injected gap recorded. `--ui` also measures, in headless
Chromium, how long an open ward page takes to show a status change after its MQTT message.
`--burst N` sends N messages as fast as the publishers can instead (twenty devices flushing an
hour of spool after an outage); the bench's publishers then share the machine's cores with the
station. `--backlog` keeps the ingest workers away while the burst is sent (their persistent
sessions queue it) and times how fast they drain it when they come back: the station's own
ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from queue import Empty as queue_empty
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.delivery.publisher import envelope  # noqa: E402
from edge.delivery.spool import new_epoch  # noqa: E402
from edge.delivery.wire import (  # noqa: E402
    Alert,
    Cycle,
    ModelRef,
    RunningModel,
    Stats,
    Status,
    body_dict,
    iso_ms,
)
from edge.dev.local_broker import LocalBroker  # noqa: E402
from edge.pipeline.tracker import CycleEvidence  # noqa: E402

MODEL = ModelRef("lungedge-cnnlstm", "0.5.0")
RUNNING = RunningModel("lungedge-cnnlstm", "0.5.0", sha256="0" * 64, note="the bench's")
EPOCH = new_epoch()  # the simulated devices' numbering (one per run, as a fresh spool)
START = time.time()  # when the simulated devices connected
GAP_P, DUPLICATE_P = 0.002, 0.005


def publish(devices: list[str], port: int, seconds: float, speed: float, seed: int,
            result: Any, burst: int = 0) -> None:
    """The devices' messages at `speed` times their real rate for `seconds`; or, with
    `burst`, that many messages as fast as they go (spools flushed after an outage)."""
    import paho.mqtt.client as mqtt

    rng = random.Random(seed)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{seed}")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    seq = {(d, k): 0 for d in devices for k in ("cycle", "alert", "status", "stats")}
    due = {d: time.monotonic() + rng.uniform(0, 1.5) / speed for d in devices}
    alert_open: dict[str, str | None] = dict.fromkeys(devices)
    sent: dict[str, int] = {"cycle": 0, "alert": 0, "status": 0, "stats": 0}
    distinct: list[tuple[str, str, int]] = []
    gaps = duplicates = 0
    infos = []

    def send(device: str, kind: str, body: Any) -> None:
        nonlocal gaps, duplicates
        key = (device, kind)
        if kind in ("cycle", "alert") and rng.random() < GAP_P:
            seq[key] += 1  # a message the device never got out: the station must see a gap
            gaps += 1
        n = seq[key]
        seq[key] += 1
        payload = json.dumps(envelope(device, n, EPOCH) | body_dict(body))
        qos = 0 if kind == "stats" else 1
        infos.append(client.publish(f"lungedge/{device}/{kind}", payload, qos=qos,
                                    retain=kind == "status"))
        sent[kind] += 1
        if qos:
            distinct.append((device, kind, n))
        if qos and rng.random() < DUPLICATE_P:  # sent again, as after a reconnect
            infos.append(client.publish(f"lungedge/{device}/{kind}", payload, qos=1))
            duplicates += 1

    end = time.monotonic() + seconds
    while (sum(sent.values()) < burst) if burst else (time.monotonic() < end):
        device = min(due, key=due.get)  # type: ignore[arg-type]
        wait = due[device] - time.monotonic()
        if wait > 0 and not burst:
            time.sleep(wait)
        t = time.time()
        label = "crackle" if rng.random() < 0.2 else "normal"
        send(device, "cycle", Cycle(session_id="s", start=iso_ms(t - 2), end=iso_ms(t),
                                    duration_s=2.0, label=label,
                                    probs={"normal": 0.7, "crackle": 0.3}, confidence=0.7,
                                    quality=round(rng.uniform(0.4, 1), 3), good=True,
                                    forced_cut=False, model=MODEL, latency_ms=380.0))
        c = seq[(device, "cycle")]
        if c % 10 == 0:  # alerts open, update and end
            open_id = alert_open[device]
            event: Literal["new", "update", "end"] = "new" if open_id is None else \
                ("update" if rng.random() < 0.5 else "end")
            alert_id = open_id or f"{device}-{c}"
            send(device, "alert", Alert(alert_id=alert_id, event=event, kind="crackle",
                                        session_id="s", evidence=CycleEvidence(3, 8, 0.375, 3),
                                        first_cycle=iso_ms(t - 20), last_cycle=iso_ms(t),
                                        end_reason="cleared" if event == "end" else None))
            alert_open[device] = None if event == "end" else alert_id
        if c % 30 == 0:  # status flaps
            state: Literal["online", "degraded"] = "degraded" if rng.random() < 1 / 3 \
                else "online"
            reasons = ["poor signal"] if state == "degraded" else []
            send(device, "status", Status(
                state=state, reason=reasons[0] if reasons else None, reasons=reasons,
                model=RUNNING, connected_at=iso_ms(START), last_will=False, heartbeat_s=3600.0,
                breathing_pause_s=30.0))
        if c % 20 == 0:
            send(device, "stats", Stats(
                uptime_s=c * 1.5, audio_s=c * 1.5, cycles=c, forced_cuts=0, gaps=0, gap_s=0.0,
                gap_reasons={}, restarts=0, dropped_blocks=0, queue_depth=0, spool_depth=0,
                spool_in_memory=0, spool_dropped=0, spool_fault=None, spool_stranded=0,
                cpu_percent=20.0,
                rss_mb=120.0, inference_ms_p50=1.5, inference_ms_p99=2.0, clips_sent=0,
                clips_dropped=0, runtime="ai_edge_litert", source="bench", source_counters={}))
        due[device] += rng.uniform(1, 2) / speed
    deadline = time.monotonic() + 60  # for the broker to acknowledge what was sent
    for info in infos:
        if info.rc == 0 and info.mid and time.monotonic() < deadline:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
    unacknowledged = sum(1 for info in infos if not info.is_published())
    client.loop_stop()
    client.disconnect()
    result.put({"sent": sent, "distinct": distinct, "gaps": gaps, "duplicates": duplicates,
                "unacknowledged": unacknowledged})


def status_body(state: str) -> Any:
    return {"state": state, "reason": None, "reasons": [], "model": None,
            "connected_at": iso_ms(START), "last_will": False, "heartbeat_s": 3600.0}


def run_setting(db: str, workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from station.schema import cycles, gaps, received
    from station.store import Store
    from station.store.station_alarms import SETTLE_S
    from tests.private_postgres import PrivatePostgres

    pg = PrivatePostgres(tmp / "pg") if db == "postgresql" else None
    url = pg.url if pg else f"sqlite:///{tmp / 'station.db'}"
    store = Store(url)
    broker = LocalBroker(tmp, listener="max_inflight_messages 500\nmax_queued_messages 0\n")
    procs: list[subprocess.Popen[bytes]] = []

    def start_workers() -> list[subprocess.Popen[bytes]]:
        started = []
        for w in range(workers):
            cfg = tmp / f"station{w}.yaml"
            cfg.write_text(f"""log_level: warning
mqtt: {{port: {broker.port}, client_id: bench-station-{w}}}
database: {{url: "{url}"}}
web: {{port: {args.web_port + w}, secret_file: {tmp / 'secret'}}}
""")
            shared = ["--shared", "bench"] if workers > 1 else []
            started.append(subprocess.Popen(
                [sys.executable, "-m", "edge", "station", "--config", str(cfg), "--no-web",
                 *shared], cwd=ROOT, stderr=(tmp / f"worker{w}.log").open("a")))
        return started

    try:
        ingest = start_workers()
        procs += ingest
        web_cfg = tmp / "web.yaml"
        web_cfg.write_text(f"""log_level: warning
mqtt: {{port: {broker.port}}}
database: {{url: "{url}"}}
web: {{port: {args.web_port + 10}, secret_file: {tmp / 'secret'}}}
""")
        procs.append(subprocess.Popen([sys.executable, "-m", "edge", "station", "--config",
                                       str(web_cfg), "--no-ingest"], cwd=ROOT,
                                      stderr=subprocess.DEVNULL))
        base = f"http://127.0.0.1:{args.web_port + 10}"
        _wait_http(base + "/healthz")
        time.sleep(2)  # the workers have subscribed
        if args.backlog:  # away while the burst arrives: their sessions queue it
            for proc in ingest:
                proc.terminate()
                proc.wait(30)
        devices = [f"bed-{i:03d}" for i in range(args.devices)]
        queue: Any = mp.Queue()
        n_pub = max(1, min(4, args.devices // 25))
        pubs = [mp.Process(target=publish, args=(devices[i::n_pub], broker.port, args.seconds,
                                                 args.speed, i, queue, args.burst // n_pub))
                for i in range(n_pub)]
        started = time.time()
        for p in pubs:
            p.start()
        overview_ms = []
        results: list[Any] = []
        # a publisher's result (~18 KB) is read as soon as it is there: a child cannot exit
        # before its queue's pipe is drained, and four results overflowed that 64 KiB pipe
        # while this loop waited for them all to exit (the runs at 3× and 10× stalled)
        while len(results) < len(pubs):
            with contextlib.suppress(queue_empty):
                results.append(queue.get(timeout=0.5))
                continue
            if not any(p.is_alive() for p in pubs):
                results.append(queue.get(timeout=60))
                continue
            t = time.perf_counter()
            urllib.request.urlopen(base + "/fragments/ward", timeout=30).read()
            overview_ms.append((time.perf_counter() - t) * 1000)
        for p in pubs:
            p.join()
        if args.backlog:  # back: the rate is how fast they drain what waited for them
            started = time.time()
            ingest = start_workers()
            procs += ingest
        expected = {tuple(d) for r in results for d in r["distinct"]}
        deadline = time.time() + 120
        while time.time() < deadline:
            with store.engine.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(received)).scalar_one()
            if stored >= len(expected):
                break
            time.sleep(0.5)
        done = time.time()
        injected = sum(r["gaps"] for r in results)
        deadline = time.time() + SETTLE_S + 20  # gaps are recorded once they have settled
        while time.time() < deadline:
            with store.engine.connect() as conn:
                n_gaps = conn.execute(select(func.count()).select_from(gaps)).scalar_one()
            if n_gaps >= injected:
                break
            time.sleep(1)
        with store.engine.connect() as conn:
            rows = conn.execute(select(received.c.device_id, received.c.kind,
                                       received.c.seq, received.c.sent, received.c.at)).all()
            n_cycles = conn.execute(select(func.count()).select_from(cycles)).scalar_one()
        got = {(r.device_id, r.kind, r.seq) for r in rows if r.kind != "stats"}
        lags = sorted((r.at - r.sent) * 1000 for r in rows)
        last = max(r.at for r in rows)
        for _ in range(5):  # the overview once all is in
            t = time.perf_counter()
            urllib.request.urlopen(base + "/fragments/ward", timeout=30).read()
            overview_ms.append((time.perf_counter() - t) * 1000)
        sent = sum(sum(r["sent"].values()) for r in results)
        cycle_keys = {k for k in expected if k[1] == "cycle"}
        return {
            "db": db, "workers": workers, "devices": args.devices, "sent": sent,
            "unacknowledged": sum(r["unacknowledged"] for r in results),
            "duplicates": sum(r["duplicates"] for r in results), "distinct": len(expected),
            "stored": len(got), "lost": len(expected - got), "extra": len(got - expected),
            "doubled": n_cycles - len({k for k in got if k[1] == "cycle"} & cycle_keys),
            "gaps_injected": injected, "gaps_recorded": n_gaps,
            "msg_per_s": round(len(rows) / max(last - started, 1e-9)),
            "drain_s": round(done - started - (0 if args.burst else args.seconds), 1),
            "backlog": args.backlog,
            "lag_ms_p50": round(lags[len(lags) // 2]),
            "lag_ms_p99": round(lags[int(len(lags) * 0.99)]),
            "overview_ms_p50": round(statistics.median(overview_ms)),
            "overview_ms_max": round(max(overview_ms))}
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        for w in range(workers):  # what a worker said is worth seeing when numbers are off
            said = (tmp / f"worker{w}.log").read_text().splitlines()
            if said:
                print(f"worker {w} said ({len(said)} lines): " + " | ".join(said[-6:]))
        broker.stop()
        store.engine.dispose()
        if pg:
            pg.stop()


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def ui_latency(args: argparse.Namespace, tmp: Path, n: int = 20) -> dict[str, Any]:
    """An open ward page: how long from a status message to the tile showing it."""
    import paho.mqtt.client as mqtt
    from playwright.sync_api import sync_playwright

    broker = LocalBroker(tmp)
    cfg = tmp / "ui.yaml"
    cfg.write_text(f"""log_level: warning
mqtt: {{port: {broker.port}}}
database: {{url: "sqlite:///{tmp / 'ui.db'}"}}
web: {{port: {args.web_port + 20}, secret_file: {tmp / 'secret'}}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "station", "--config", str(cfg)],
                            cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{args.web_port + 20}"
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    delays = []
    try:
        _wait_http(base + "/healthz")
        time.sleep(1.5)
        pub.publish("lungedge/ui-bed/status", json.dumps(
            envelope("ui-bed", 0, EPOCH) | status_body("online")), qos=1).wait_for_publish(5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_context(bypass_csp=True).new_page()
            page.goto(base + "/ward")
            page.wait_for_selector(".tile[data-device='ui-bed']")
            page.wait_for_function("document.getElementById('live-state').textContent "
                                   "=== 'live'")
            for i in range(1, n + 1):
                state = "degraded" if i % 2 else "online"
                body = envelope("ui-bed", i, EPOCH) | status_body(state) | {
                    "reasons": ["poor signal"] if i % 2 else []}
                t = time.perf_counter()
                pub.publish("lungedge/ui-bed/status", json.dumps(body), qos=1)
                page.wait_for_selector(f".tile[data-device='ui-bed'] .pill.{state}",
                                       timeout=10000)
                delays.append((time.perf_counter() - t) * 1000)
                time.sleep(0.3)
            browser.close()
    finally:
        pub.loop_stop()
        proc.terminate()
        proc.wait(20)
        broker.stop()
    delays.sort()
    return {"ui_update_ms_p50": round(statistics.median(delays)),
            "ui_update_ms_max": round(delays[-1]), "samples": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--burst", type=int, default=0,
                    help="instead of --seconds at --speed: this many messages as fast as the "
                         "publishers go (every device flushing its spool at once)")
    ap.add_argument("--backlog", action="store_true",
                    help="with --burst: the ingest workers are away while it is sent (their "
                         "persistent sessions queue it) and come back to drain it; the rate is "
                         "then the station's own ceiling, without the bench's publishers "
                         "sharing its cores")
    ap.add_argument("--seconds", type=float, default=60, help="of publishing, wall time")
    ap.add_argument("--speed", type=float, default=1,
                    help="time compression: a device sends a cycle every 1–2 s / speed")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--db", nargs="+", default=["sqlite", "postgresql"],
                    choices=("sqlite", "postgresql"))
    ap.add_argument("--web-port", type=int, default=18600)
    ap.add_argument("--ui", action="store_true", help="also the browser's update latency")
    args = ap.parse_args()
    # killed from outside, still stop the private broker and station (their `finally` blocks)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rows = []
    for db in args.db:
        for workers in args.workers:
            with tempfile.TemporaryDirectory(prefix="station-load-") as tmp:
                r = run_setting(db, workers, args, Path(tmp))
            rows.append(r)
            print(json.dumps(r), flush=True)
    cols = ["db", "workers", "devices", "sent", "unacknowledged", "duplicates", "distinct",
            "stored", "lost", "doubled", "gaps_injected", "gaps_recorded", "msg_per_s",
            "drain_s", "lag_ms_p50", "lag_ms_p99", "overview_ms_p50", "overview_ms_max"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if args.ui:
        with tempfile.TemporaryDirectory(prefix="station-ui-") as tmp:
            print("\nbrowser:", json.dumps(ui_latency(args, Path(tmp))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

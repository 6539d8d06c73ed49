"""Where a station worker's time goes, in-process (no broker, no network): reading and
validating messages, then storing them in batches as ingest does, on SQLite and on a private
PostgreSQL. `bench/station_load.py` measures the whole path; the difference between the two is
the MQTT client's receive-and-acknowledge loop and the cores the bench's publishers take.

    .venv/bin/python bench/station_ingest.py [--messages 20000] [--devices 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from station.store import Store
from station.validate import parse
from tests.messages import cycle_message
from tests.private_postgres import PrivatePostgres, find_bin

BATCH = 500  # station.ingest's


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=1000)
    args = ap.parse_args()
    n, d = args.messages, args.devices
    raw = [(f"lungedge/bed-{i % d}/cycle", cycle_message(f"bed-{i % d}", i // d))
           for i in range(n)]
    t = time.perf_counter()
    messages = [parse(topic, payload, "lungedge") for topic, payload in raw]
    rows = [("parse and validate (fastjsonschema, the numbers' bounds)", time.perf_counter() - t)]
    with tempfile.TemporaryDirectory() as tmp:
        urls = [("SQLite", f"sqlite:///{tmp}/station.db")]
        pg = PrivatePostgres(Path(tmp) / "pg") if find_bin() else None  # (started)
        if pg is not None:
            urls.append(("PostgreSQL", pg.url))
        try:
            for name, url in urls:
                store = Store(url)
                t = time.perf_counter()
                for i in range(0, n, BATCH):
                    store.intake.ingest(messages[i:i + BATCH])
                rows.append((f"store.intake.ingest, {name}, batches of {BATCH}",
                             time.perf_counter() - t))
                store.engine.dispose()
        finally:
            if pg is not None:
                pg.stop()
    print(f"\n{n:,} cycle messages from {d:,} devices\n")
    print("| step | s | msg/s | µs per message |\n|---|---|---|---|")
    for what, s in rows:
        print(f"| {what} | {s:.2f} | {n / s:,.0f} | {s / n * 1e6:.0f} |")


if __name__ == "__main__":
    main()

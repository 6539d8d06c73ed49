"""`lungedge station`: run the station (ingest and web UI), hash a password, check a config.

Registered with `lungedge` through the `lungedge.commands` entry point, so the device's CLI
offers the command without importing the station; this module imports only the standard
library until the command runs.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import time
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    s = sub.add_parser("station", help="the monitoring station: ingest, storage, web UI",
                       description="Subscribes to every device, stores what they publish and "
                                   "serves the ward view, the alert inbox and the history.")
    s.add_argument("action", nargs="?", default="run",
                   choices=("run", "hash-password", "check-config", "export-labels"),
                   help="run (default); hash-password: a hash for the config's users; "
                        "check-config: validate the config and exit; export-labels DIR: the "
                        "clips clinicians judged, as a dataset per stethoscope")
    s.add_argument("file", nargs="?", type=Path, metavar="CONFIG|DIR",
                   help="the config (the same as --config), e.g. check-config station.yaml; "
                        "for export-labels, the folder to write")
    s.add_argument("--config", type=Path, default=Path("/etc/lungedge/station.yaml"))
    s.add_argument("--shared", metavar="GROUP",
                   help="ingest as one of several workers sharing the broker's messages "
                        "(MQTT 5 shared subscription); overrides mqtt.shared_group")
    s.add_argument("--no-web", action="store_true", help="ingest only (a worker)")
    s.add_argument("--no-ingest", action="store_true",
                   help="web UI only, reading the database the ingest workers fill")
    s.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        from station import config as station_config
    except ImportError as exc:
        print(f"lungedge: error: the station needs its extra: pip install 'lungedge[station]' "
              f"({exc})", file=sys.stderr)
        return 2
    if args.action == "hash-password":
        from station.auth import hash_password

        password = getpass.getpass("password: ")
        if password != getpass.getpass("again: "):
            print("lungedge: error: the two passwords differ", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    if args.action == "export-labels":
        if not args.file:
            print("lungedge: error: export-labels needs the folder to write: lungedge station "
                  "export-labels DIR [--config FILE]", file=sys.stderr)
            return 2
        from station.export import ExportError, export, replaceable

        try:
            replaceable(args.file)  # before the database is opened: say so at once
            store = open_store(station_config.load(args.config).database.url)
            counts = export(store.views.judged_clips(), args.file)
        except ExportError as exc:
            print(f"lungedge: error: {exc}", file=sys.stderr)
            return 2
        for folder, n in sorted(counts.items()):
            print(f"{args.file / folder}: {n} recording(s)")
        print(f"{args.file / 'labels.json'}: every verdict; score a model on a folder with "
              f"`python -m convert.evaluate PACKAGE {args.file}/FOLDER --out report/`")
        return 0
    if args.file:
        args.config = args.file
    cfg = station_config.load(args.config)
    found = preflight_report(cfg, Path(args.config))
    for line in found:  # what would fail at start, found before it
        print(f"lungedge: error: {line}", file=sys.stderr)
    if found:
        return 2
    if args.action == "check-config":
        print(f"{args.config}: OK (broker {cfg.mqtt.host}:{cfg.mqtt.port}, database "
              f"{cfg.database.url.split('://')[0]}, web {cfg.web.host}:{cfg.web.port}, "
              f"auth {cfg.web.auth})")
        return 0
    if args.shared:
        import dataclasses

        cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt,
                                                                shared_group=args.shared))
    logging.getLogger().setLevel(cfg.log_level.upper())
    return run(cfg, ingest=not args.no_ingest, web=not args.no_web)


def preflight_report(cfg: Any, path: Path) -> list[str]:
    """Every problem `station.preflight` finds, as `file:line: key: message`."""
    from edge.loader import yaml_lines
    from station import preflight

    try:
        lines = yaml_lines(path.read_text())
    except OSError:
        lines = {}
    return [p.located(str(path), lines) for p in preflight.problems(cfg)]


def run(cfg: Any, *, ingest: bool = True, web: bool = True) -> int:
    """Ingest, routing and the web UI in one process; 1 if a worker died (systemd restarts
    the station), else 0."""
    import threading

    from station.ingest import Ingest
    from station.liveness import Liveness, supervised

    store = open_store(cfg.database.url)
    stop = threading.Event()
    liveness = Liveness()
    workers = []
    if ingest:
        ingestor = Ingest(cfg, store, liveness)
        workers.append(threading.Thread(
            target=supervised("ingest", lambda: ingestor.run(stop), liveness), name="ingest",
            daemon=True))
    if cfg.routing.rules:
        from station.routing.router import Router

        # made before ingest starts: an alert stored in the first second is routed too
        router = Router(cfg.routing, store.deliveries)
        workers.append(threading.Thread(
            target=supervised("routing", lambda: route(router, stop), liveness),
            name="routing", daemon=True))
    try:
        if web:
            import uvicorn

            from station.web.app import create_app

            logging.getLogger(__name__).info("web UI on http://%s:%d/", cfg.web.host,
                                             cfg.web.port)
            server = uvicorn.Server(uvicorn.Config(
                create_app(cfg, store, liveness), host=cfg.web.host, port=cfg.web.port,
                log_level=cfg.log_level, access_log=False,
                # the station reads X-Forwarded-For itself, from trusted proxies only
                # (station.auth.client_address): uvicorn's rewrite trusted the loopback
                proxy_headers=False, server_header=False))

            def exit_web() -> None:
                server.should_exit = True

            liveness.on_failure = exit_web
            for w in workers:
                w.start()
            server.run()
        else:
            import signal

            liveness.on_failure = stop.set
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            for w in workers:
                w.start()
            while not stop.wait(1.0):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
    return 1 if liveness.problem() else 0


def open_store(url: str) -> Any:
    """The store, once its database answers: a station started before its PostgreSQL (a
    reboot, a slow server) waits for it, saying which key and why, instead of failing for
    good."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from station.store import Store

    log = logging.getLogger("station")
    wait = 1.0
    while True:
        try:
            return Store(url)
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0][:200] if exc.orig else str(exc)
            log.error("database.url %s: cannot reach the database (%s); is it running? "
                      "trying again in %.0f s", make_url(url).render_as_string(
                          hide_password=True), reason, wait)
            time.sleep(wait)
            wait = min(wait * 2, 30.0)


def route(router: Any, stop: Any) -> None:
    """The routing loop: once a second, and never dies of one bad pass; while passes fail (a
    database that is away) it waits longer, up to a minute."""
    log = logging.getLogger("station.routing")
    wait = 1.0
    while True:
        try:
            router.step()
            wait = 1.0
        except Exception:  # a database hiccup: logged, and a later pass tries again
            log.exception("routing pass failed; trying again in %.0f s", wait)
            wait = min(wait * 2, 60.0)
        if stop.wait(wait):
            return

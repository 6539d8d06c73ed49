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
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    s = sub.add_parser("station", help="the monitoring station: ingest, storage, web UI",
                       description="Subscribes to every device, stores what they publish and "
                                   "serves the ward view, the alert inbox and the history.")
    s.add_argument("action", nargs="?", default="run",
                   choices=("run", "hash-password", "check-config"),
                   help="run (default); hash-password: a hash for the config's users; "
                        "check-config: validate the config and exit")
    s.add_argument("file", nargs="?", type=Path, metavar="CONFIG",
                   help="the config (the same as --config), e.g. check-config station.yaml")
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
    if args.file:
        args.config = args.file
    cfg = station_config.load(args.config)
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


def run(cfg: Any, *, ingest: bool = True, web: bool = True) -> int:
    import threading

    from station.ingest import Ingest
    from station.store import Store

    store = Store(cfg.database.url)
    stop = threading.Event()
    workers = []
    if ingest:
        ingestor = Ingest(cfg, store)
        workers.append(threading.Thread(target=ingestor.run, args=(stop,), name="ingest",
                                        daemon=True))
    if cfg.routing.rules:
        from station.routing.router import Router

        # made before ingest starts: an alert stored in the first second is routed too
        router = Router(cfg.routing, store)
        workers.append(threading.Thread(target=route, args=(router, stop), name="routing",
                                        daemon=True))
    for w in workers:
        w.start()
    try:
        if web:
            import uvicorn

            from station.web.app import create_app

            logging.getLogger(__name__).info("web UI on http://%s:%d/", cfg.web.host,
                                             cfg.web.port)
            uvicorn.run(create_app(cfg, store), host=cfg.web.host, port=cfg.web.port,
                        log_level=cfg.log_level, access_log=False)
        else:
            import signal

            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            while not stop.wait(1.0):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)
    return 0


def route(router: Any, stop: Any) -> None:
    """The routing loop: once a second, and never dies of one bad pass."""
    log = logging.getLogger("station.routing")
    while True:
        try:
            router.step()
        except Exception:  # a database hiccup: logged, and the next pass tries again
            log.exception("routing pass failed; trying again in 1 s")
        if stop.wait(1.0):
            return

"""`lungedge model`: the packages a device keeps (edge.service.model_store), installed and
rolled back by a technician (and, later, by the station's rollout) while the daemon runs.

    lungedge model install PACKAGE [--downgrade]   check, copy, self-test; current on trial
    lungedge model rollback                        back to the previous package
    lungedge model show                            what runs, what ran before, the trial

The running daemon takes the change on `systemctl reload lungedge` (SIGHUP), between two
cycles, without stopping its capture.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from edge.pipeline.model import ModelError
from edge.service.config import DEFAULT_CONFIG_PATH, ModelConfig, load_config
from edge.service.model_store import ModelStore, describe

RELOAD = "systemctl reload lungedge (or send the daemon SIGHUP)"


def add_parser(sub: Any) -> None:
    m = sub.add_parser("model", help="install or roll back the device's model package",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH,
                   help="where the store is (model.store) and whom to trust (model.trusted_keys)")
    what = m.add_subparsers(dest="action", required=True)
    i = what.add_parser("install", help="check, copy and self-test a package; it runs next")
    i.add_argument("package", type=Path)
    i.add_argument("--downgrade", action="store_true",
                   help="allow a version older than the running one")
    what.add_parser("rollback", help="back to the previous package")
    what.add_parser("show", help="print active.json")
    m.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    try:
        return _act(args, cfg.model)
    except ModelError as exc:
        print(f"lungedge: error: {exc}", file=sys.stderr)
        return 2


def _act(args: argparse.Namespace, cfg: ModelConfig) -> int:
    store = ModelStore(Path(cfg.store))
    if cfg.path is not None and args.action != "show":
        print(f"note: {args.config} pins model.path ({cfg.path}): the daemon runs that "
              "package, not the store's, until model.path is null")
    if args.action == "install":
        done = store.install(args.package, trusted_keys=cfg.trusted_keys,
                             max_window_ms=cfg.max_window_ms, downgrade=args.downgrade,
                             now=time.time())
        active = store.active()
        trial = (f"on trial for {cfg.watch_s:g} s once the daemon runs it"
                 if active is not None and active.trial_since is not None
                 else "the first package: nothing to go back to, so no trial")
        print(f"installed {done.package} as {done.folder} (manifest sha256 {done.sha256}; "
              f"self-test: {done.test}); {trial}: {RELOAD}")
    elif args.action == "rollback":
        back = store.rollback("lungedge model rollback", by_hand=True)
        print(f"current: {back.current} (was {back.previous}); {RELOAD}")
    else:
        print(json.dumps(describe(store), indent=2))
    return 0

"""The device's own model packages: the one it runs, the one before it, and the way between
them that survives a SIGKILL or a power cut at any point.

    <store>/<name>-<version>-<sha12>/   complete packages, never changed once there
    <store>/active.json                 which one runs, which ran before, and the trial

A package is installed by copying it into `.incoming-*` (every file synced), checking its
signature against the config's trusted keys and its version against the running one, loading
it beside the running package and self-testing it (`edge.pipeline.self_test`); only then is it
renamed into place and `active.json` replaced in one rename. Killed before that rename, the
device starts on the package it ran; after it, on the new one. What a killed install leaves
behind (`.incoming-*`, a package nothing points at) is removed by the next install.

A new package runs on trial: if the daemon restarts before the trial's `watch_s` is over (it
crashed, or was killed) or the device goes degraded meanwhile, it goes back to the previous
package by itself and says why; after `watch_s` in good health the trial is over.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.pipeline.model import (
    ModelError,
    ModelRunner,
    load_manifest,
    sha256_of,
    shipped_model,
    signed_by,
)
from edge.pipeline.self_test import SelfTest, self_test
from edge.pipeline.signature import UNSIGNED_FOLDERS

log = logging.getLogger(__name__)

ACTIVE = "active.json"


@dataclass(frozen=True, kw_only=True)
class Active:
    """What `active.json` says."""

    current: str  # a folder of the store
    previous: str | None = None
    trial_since: float | None = None  # wall clock; None: not on trial
    trial_starts: int = 0  # daemon starts during the trial
    why: str = ""  # how the current package came to run


@dataclass(frozen=True, kw_only=True)
class Installed:
    folder: Path
    package: str  # "name version"
    sha256: str  # of its manifest, which names every member's sha256
    test: SelfTest


def version_key(version: str) -> tuple[int, ...]:
    """"0.10.1" > "0.9.3": numbers compared as numbers."""
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        raise ModelError(f"version {version!r} is not dotted numbers (e.g. 0.7.0): the store "
                         "cannot tell whether it is newer") from None


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading ------------------------------------------------------------------------------
    def active(self) -> Active | None:
        path = self.root / ACTIVE
        try:
            return Active(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: unreadable ({exc}); `lungedge model rollback` or "
                             "installing a package again rewrites it") from None

    def current(self) -> Path | None:
        active = self.active()
        return self.root / active.current if active else None

    # -- installing ---------------------------------------------------------------------------
    def install(self, package: Path, *, trusted_keys: Sequence[str], max_window_ms: float,
                downgrade: bool = False, now: float) -> Installed:
        """Checks, copies, self-tests and makes the package the current one (on trial)."""
        manifest = load_manifest(package)
        active = self.active()
        if active is not None:
            running = load_manifest(self.root / active.current)
            if not downgrade and version_key(manifest.version) < version_key(running.version):
                raise ModelError(f"{package}: {manifest.name} {manifest.version} is older than "
                                 f"the running {running.name} {running.version}: refused "
                                 "(install with --downgrade to go back on purpose)")
        self.root.mkdir(parents=True, exist_ok=True)
        self._tidy(active)
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            _copy_synced(package, incoming)
            if trusted_keys:
                signed_by(incoming, trusted_keys)
            runner = ModelRunner(incoming)
            test = self_test(runner, incoming, max_window_ms)
            sha = sha256_of(incoming / "manifest.json")
            folder = self.root / f"{manifest.name}-{manifest.version}-{sha[:12]}"
            if folder.exists():  # the same package again: the copy there is complete
                shutil.rmtree(incoming)
            else:
                incoming.rename(folder)
                _sync_dir(self.root)
        except ModelError as exc:  # named by the package given, not its copy
            shutil.rmtree(incoming, ignore_errors=True)
            raise type(exc)(str(exc).replace(str(incoming), str(package))) from None
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        if active is None or active.current != folder.name:
            self._write(Active(current=folder.name,
                               previous=active.current if active else None,
                               trial_since=now if active else None,
                               why=f"installed ({test})"))
        self._tidy(self.active())  # the store keeps two packages: the one to go back to
        return Installed(folder=folder, package=f"{manifest.name} {manifest.version}",
                         sha256=sha, test=test)

    # -- trial and rollback -------------------------------------------------------------------
    def rollback(self, why: str, *, by_hand: bool = False) -> Active:
        """Back to the previous package (which becomes the one to go back from)."""
        active = self.active()
        if active is None or active.previous is None:
            raise ModelError(f"{self.root}: no previous package to go back to")
        back = Active(current=active.previous, previous=active.current,
                      why=f"sent back by hand: {why}" if by_hand else f"rolled back: {why}")
        self._write(back)
        return back

    def run_begins(self) -> str | None:
        """A daemon begins running the current package (at its start, or taking it in place):
        on trial, a second beginning means the last run ended without finishing the trial (a
        crash, a kill, a power cut): the reason to roll back, else None."""
        active = self.active()
        if active is None or active.trial_since is None:
            return None
        if active.trial_starts >= 1:
            return (f"the daemon restarted during the trial of {active.current} (it crashed or "
                    "was stopped before the trial ended)")
        self._write(dataclasses.replace(active, trial_starts=active.trial_starts + 1))
        return None

    def stopped_cleanly(self) -> None:
        """The daemon stopped as asked (SIGTERM, a reload, the end of a file): the next start
        is not a crash."""
        active = self.active()
        if active is not None and active.trial_starts:
            self._write(dataclasses.replace(active, trial_starts=0))

    def trial_ends(self, watch_s: float) -> float | None:
        """When the current package's trial ends (wall clock), or None: not on trial."""
        active = self.active()
        return None if active is None or active.trial_since is None \
            else active.trial_since + watch_s

    def end_trial(self, watch_s: float) -> None:
        """The trial passed: the package is the device's own, whatever happens next."""
        active = self.active()
        if active is None or active.trial_since is None:
            return
        self._write(dataclasses.replace(active, trial_since=None, trial_starts=0,
                                        why=active.why + f"; trial of {watch_s:g} s passed"))
        log.info("model %s: trial of %g s passed", active.current, watch_s)

    # -- the file -----------------------------------------------------------------------------
    def _write(self, active: Active) -> None:
        tmp = self.root / f".{ACTIVE}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(json.dumps(dataclasses.asdict(active), indent=2) + "\n")
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.root / ACTIVE)
            _sync_dir(self.root)
            self._hand_over()
        except OSError as exc:
            raise ModelError(f"{self.root / ACTIVE}: cannot write ({exc}): the store must be "
                             "writable by the daemon's user (model.store)") from None

    def _hand_over(self) -> None:
        """Run as root (`sudo lungedge model install`), what the store holds is given to the
        owner of the folder it sits in (the service's state directory), so the daemon, which
        runs as that user, can keep its trial and roll back."""
        if os.geteuid() != 0:
            return
        owner = self.root.parent.stat()
        if owner.st_uid == 0:
            return
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)

    def _tidy(self, active: Active | None) -> None:
        """What a killed install left: partial copies, packages nothing points at."""
        keep = {active.current, active.previous} if active else set()
        for path in self.root.iterdir():
            if path.is_dir() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)


def _copy_synced(src: Path, dst: Path) -> None:
    """Every file the device reads (report/ aside), each synced to the card."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] in UNSIGNED_FOLDERS:
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as r, open(target, "wb") as w:
                shutil.copyfileobj(r, w)
                w.flush()
                os.fsync(w.fileno())
    _sync_dir(dst)


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def package_to_run(path: str | None, store: ModelStore) -> Path | None:
    """model.path where the config pins one, else the store's current package, else the one
    that ships with lungedge (None: none at all)."""
    if path is not None:
        return Path(path)
    return store.current() or shipped_model()


def describe(store: ModelStore) -> dict[str, Any]:
    """What `lungedge model show` prints."""
    active = store.active()
    return dataclasses.asdict(active) if active else {"current": None}

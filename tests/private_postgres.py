"""A private PostgreSQL on a free port, for the tests and the benchmarks: `initdb` into a folder
of its own, `pg_ctl` to start and stop it. As root it runs as an unprivileged user (initdb
refuses root). Nothing is left running after `stop()`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from pathlib import Path
from types import TracebackType


def find_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    def __init__(self, root: Path) -> None:
        bindir = find_bin()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL is not installed (`apt-get install "
                                    "postgresql`)")
        root.mkdir(parents=True, exist_ok=True)
        self.bindir, self.root, self.data = bindir, root, root / "data"
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            user = "postgres" if _has_user("postgres") else "nobody"
            self.run_as = ["runuser", "-u", user, "--"]
            shutil.chown(root, user=user)
            os.chmod(root, 0o700)
            for parent in root.parents:  # the user must be able to reach it
                if parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o011)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "station", "--no-sync")
        self.start()
        self._pg("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "station",
                 "station")
        self.url = f"postgresql+psycopg://station@127.0.0.1:{self.port}/station"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run([*self.run_as, str(self.bindir / tool), *args], check=True,
                       capture_output=True)

    def start(self) -> None:
        """(Again, after stop(): the tests take the database away from the station.)"""
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                 "-c max_connections=200", "start")

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                        "-m", "fast", "stop"], capture_output=True)

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False

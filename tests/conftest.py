"""Shared fixtures: the shipped samples, ../shared/data when present, synthetic audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.messages import TEST_EPOCH  # noqa: F401  (the tests take it from here)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "models" / "samples"

SHARED_DATA = Path(os.environ.get("LUNGEDGE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def sample_wavs() -> list[Path]:
    wavs = sorted(SAMPLES.glob("*.wav"))
    assert len(wavs) == 3, f"expected the 3 shipped sample recordings in {SAMPLES}"
    return wavs


@pytest.fixture(scope="session")
def sprsound() -> Path:
    path = SHARED_DATA / "sprsound"
    if not (path / "test_inter").is_dir():
        pytest.skip(f"SPRSound not found at {path} (set LUNGEDGE_SHARED_DATA to the folder "
                    "holding sprsound/); CI has it, a fresh clone does not")
    return path


def breathing(rate: int, seconds: float, cycles: list[tuple[float, float]],
              seed: int = 0) -> np.ndarray:
    """Synthetic chest audio: quiet noise with louder band-limited noise bursts (breaths)."""
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    x = rng.standard_normal(n) * 0.002
    t = np.arange(n) / rate
    for start, end in cycles:
        inside = (t >= start) & (t < end)
        ramp = np.sin(np.pi * (t[inside] - start) / (end - start))
        x[inside] += rng.standard_normal(inside.sum()) * 0.05 * ramp
    return x.astype(np.float32)


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real Mosquitto the test may stop and start. Persistence is on, so a subscriber's
    session and queued QoS 1 messages survive a restart: what a subscriber then misses is the
    publisher's fault, not the test's."""
    from edge.dev.local_broker import LocalBroker, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto not installed (`apt-get install mosquitto`; `make test` "
                    "installs it)")
    with LocalBroker(tmp_path, persistence=True) as b:
        yield b


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A private PostgreSQL on a free port (tests may stop and start it); stopped afterwards."""
    from tests.private_postgres import PrivatePostgres, find_bin

    if find_bin() is None:
        pytest.skip("PostgreSQL is not installed (`apt-get install postgresql`; `make test` "
                    "installs it)")
    with PrivatePostgres(tmp_path_factory.mktemp("pg")) as pg:
        yield pg


@pytest.fixture(scope="session")
def postgres(postgres_server):  # type: ignore[no-untyped-def]
    """Its SQLAlchemy URL."""
    return postgres_server.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each station test that takes this runs on both databases (a fresh one each time)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'station.db'}"
    url = request.getfixturevalue("postgres")
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:  # a fresh schema per test
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


def status_fields(*, heartbeat_s: float = 3600.0, last_will: bool = False,
                  connected_at: float = 1.79e9, breathing_pause_s: float = 30.0
                  ) -> dict[str, object]:
    """What a status (schema 6 and later) says besides its state: the connection it belongs
    to, whether it is that connection's last will, the device's heartbeat and its breathing pause.
    Simulated devices here promise a message only once an hour, so the station's silence timer
    leaves them alone unless a test says otherwise."""
    from edge.delivery.wire import iso_ms

    return {"connected_at": iso_ms(connected_at), "last_will": last_will,
            "heartbeat_s": heartbeat_s, "breathing_pause_s": breathing_pause_s}

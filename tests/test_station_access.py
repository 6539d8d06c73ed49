"""Who may read and act at the station, tried as an outsider would against a real station
process: patient data and audio behind a login whenever it listens beyond the loopback,
logins that logout really ends, throttled passwords, and a proxy header believed only from
the proxy."""

from __future__ import annotations

import http.cookiejar
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")

from station.auth import hash_password
from tests.conftest import _free_port
from tests.test_daemon import ROOT
from tests.test_station_ingest import wait


class Browser:
    """Cookies, no redirects followed: what a person's browser (or a copied cookie) does."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar),
                                                  NoRedirect)

    def get(self, path: str, html: bool = True) -> tuple[int, str, dict[str, str]]:
        request = urllib.request.Request(self.base + path, headers={
            "Accept": "text/html" if html else "*/*"})
        return self._open(request)

    def post(self, path: str, form: dict[str, str],
             headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        data = urllib.parse.urlencode(form).encode()
        return self._open(urllib.request.Request(self.base + path, data=data,
                                                 headers=headers or {}))

    def _open(self, request: urllib.request.Request) -> tuple[int, str, dict[str, str]]:
        try:
            with self.opener.open(request, timeout=10) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    def csrf(self, path: str = "/login") -> str:
        _, page, _ = self.get(path)
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        assert match, page[:500]
        return match.group(1)

    def login(self, name: str, password: str) -> int:
        return self.post("/login", {"csrf": self.csrf(), "name": name,
                                    "password": password})[0]


@pytest.fixture
def station(tmp_path: Path, broker: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A station listening on every address (so login_to_read is on by default)."""
    port = _free_port()
    extra = getattr(request, "param", "")
    auth = "" if "auth:" in extra else "  auth: users\n"
    (tmp_path / "station.yaml").write_text(f"""mqtt: {{port: {broker.port}}}
database: {{url: "sqlite:///{tmp_path / 'station.db'}"}}
web:
  host: 0.0.0.0
  port: {port}
{auth}  secret_file: {tmp_path / 'secret'}
  users: [{{name: nurse.ana, password_hash: "{hash_password('s3cret!')}"}}]
{extra}""")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "station", "--config",
                             str(tmp_path / "station.yaml")], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait(up, 30, "the station answers")
    yield base
    proc.terminate()
    proc.wait(20)


PRIVATE = ["/ward", "/alerts", "/devices/bed-7", "/fragments/ward", "/events",
           "/clips/anything.flac", "/analyse", "/deliveries", "/technician",
           "/fragments/alerts/a1", "/alerts/a1"]


def test_nothing_is_readable_without_a_login(station: str) -> None:
    """Every page, fragment, live update and clip: a login first (pages send you to it)."""
    outsider = Browser(station)
    for path in PRIVATE:
        status, _, headers = outsider.get(path)
        assert status == 303 and headers["location"].startswith("/login?next="), path
        assert outsider.get(path, html=False)[0] == 401, path
    assert outsider.get("/healthz")[0] == 200 and outsider.get("/login")[0] == 200
    nurse = Browser(station)
    assert nurse.login("nurse.ana", "s3cret!") == 303
    assert nurse.get("/ward")[0] == 200 and nurse.get("/alerts")[0] == 200


@pytest.mark.parametrize("station", ["  session_idle_min: 0.03\n"], indirect=True)
def test_logout_and_idleness_end_a_login(station: str) -> None:
    """A cookie copied before logout still acknowledged for 12 h: now logout ends the login
    itself, and one left idle expires."""
    nurse = Browser(station)
    assert nurse.login("nurse.ana", "s3cret!") == 303
    copied = Browser(station)
    for cookie in nurse.jar:
        copied.jar.set_cookie(cookie)
    assert copied.get("/ward")[0] == 200
    assert nurse.post("/logout", {"csrf": nurse.csrf("/ward")})[0] == 303
    assert copied.get("/ward")[0] == 303  # the copy is worth nothing now
    idle = Browser(station)
    assert idle.login("nurse.ana", "s3cret!") == 303
    assert idle.get("/ward")[0] == 200
    time.sleep(2.5)  # 0.03 min
    assert idle.get("/ward")[0] == 303


def test_wrong_passwords_are_throttled(station: str) -> None:
    """30 wrong passwords in 1.5 s were all tried. Now after 5 for a name (or 20 from an
    address) even the right one waits."""
    guesser = Browser(station)
    codes = [guesser.login("nurse.ana", f"guess-{i}") for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    status, page, _ = guesser.post("/login", {"csrf": guesser.csrf(), "name": "nurse.ana",
                                              "password": "s3cret!"})
    assert status == 429 and "try again in" in page


@pytest.mark.parametrize("station", ["  auth: proxy\n  trusted_proxies: [10.9.9.9]\n"],
                         indirect=True)
def test_a_proxy_header_counts_only_from_the_proxy(station: str) -> None:
    """Any client could send X-Remote-User and acknowledge as anyone: only the trusted
    proxy's header is believed now."""
    anyone = Browser(station)
    status, _, _ = anyone.post("/alerts/x/ack", {"csrf": "x", "note": ""},
                               headers={"X-Remote-User": "dr.evil"})
    assert status in (303, 401)  # not logged in: the header was ignored
    assert anyone.get("/ward", html=False)[0] == 401


@pytest.mark.parametrize(("web", "message"), [
    ("  host: 0.0.0.0\n  auth: users\n  users: [{name: a, password_hash: HASH}]\n"
     "  login_to_read: false\n", "web.login_to_read: anyone who reaches 0.0.0.0 would read"),
    ("  auth: proxy\n", "web.trusted_proxies: auth is 'proxy' but no proxy is trusted"),
    ("  auth: proxy\n  trusted_proxies: [not-an-address]\n",
     "web.trusted_proxies[0]: 'not-an-address' is not an address"),
])
def test_check_config_refuses_what_exposes_data(tmp_path: Path, web: str, message: str) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("web:\n" + web.replace("HASH", hash_password("x")))
    done = subprocess.run([sys.executable, "-m", "edge", "station", "check-config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def multipart(csrf: str, name: str, content: bytes) -> tuple[bytes, str]:
    boundary = "lungedgeboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}"
            f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"recording\"; "
            f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(browser: Browser, name: str, content: bytes, chunked: bool = False
           ) -> tuple[int, str]:
    body, kind = multipart(browser.csrf("/analyse"), name, content)
    data: Any = body
    if chunked:  # no Content-Length: the limit must be counted as the bytes arrive
        data = (body[i:i + 65536] for i in range(0, len(body), 65536))
    request = urllib.request.Request(browser.base + "/analyse", data=data,
                                     headers={"Content-Type": kind})
    try:
        status, page, _ = browser._open(request)
    except urllib.error.URLError as exc:  # it answered 413 and closed before the rest came
        assert isinstance(exc.reason, ConnectionResetError | BrokenPipeError), exc
        return 413, "closed before the end of the upload"
    return status, page


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("station", ["  max_upload_mb: 40\n"], indirect=True)
def test_analyse_a_recording_cannot_take_the_station_down(station: str, tmp_path: Path
                                                          ) -> None:
    """A 46 MB WAV took the station to 4.8 GB, a 1.1 MB FLAC of 2 h of silence to 6.7 GB,
    and a chunked upload went past the size limit. Now: a login first, bytes counted as they
    arrive, the length read from the header before decoding, the plot bounded, one at a time:
    the station stays under 400 MB."""
    import numpy as np
    import scipy.io.wavfile
    import soundfile

    anonymous = Browser(station)
    assert anonymous.post("/analyse", {"csrf": "x"})[0] in (303, 401)
    nurse = Browser(station)
    assert nurse.login("nurse.ana", "s3cret!") == 303
    big = b"RIFF" + bytes(45_000_000)
    status, page = upload(nurse, "big.wav", big, chunked=True)
    assert status == 413 and ("over 40 MB" in page or "closed" in page)
    silence = tmp_path / "silence.flac"
    soundfile.write(silence, np.zeros(48000 * 7200, dtype=np.int16), 48000, subtype="PCM_16")
    assert silence.stat().st_size < 3_000_000
    status, page = upload(nurse, "silence.flac", silence.read_bytes())
    assert status == 400 and "is 120 minutes long; this station analyses up to 30" in page
    long_wav = tmp_path / "long.wav"  # 20 minutes at 16 kHz: 38 MB, allowed
    rng = np.random.default_rng(0)
    scipy.io.wavfile.write(long_wav, 16000, (rng.normal(0, 800, 16000 * 1200))
                           .astype(np.int16))
    status, page = upload(nurse, "long.wav", long_wav.read_bytes())
    assert status == 200 and "cycles in 1200.0 s" in page
    pid = int(subprocess.run(["pgrep", "-f", f"station --config {tmp_path}/station.yaml"],
                             capture_output=True, text=True).stdout.split()[0])
    assert peak_rss_mb(pid) < 400

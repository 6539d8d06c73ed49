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

    def _open(self, request: urllib.request.Request, timeout: float = 10
              ) -> tuple[int, str, dict[str, str]]:
        try:
            with self.opener.open(request, timeout=timeout) as r:
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
    """30 wrong passwords in 1.5 s were all tried. Now after 3 for a name from an address,
    every further try waits longer (1 s, 2 s, 4 s …, at most a minute), and the page says how
    long; the right password, after that wait, logs in."""
    guesser = Browser(station)
    codes = [guesser.login("nurse.ana", f"guess-{i}") for i in range(5)]
    assert codes[:3] == [401] * 3 and codes[3:] == [429, 429]
    status, page, _ = guesser.post("/login", {"csrf": guesser.csrf(), "name": "nurse.ana",
                                              "password": "s3cret!"})
    assert status == 429
    wait_s = int(re.search(r"try again in (\d+) s", page).group(1))  # type: ignore[union-attr]
    assert 0 < wait_s <= 60
    time.sleep(wait_s + 0.5)
    assert guesser.login("nurse.ana", "s3cret!") == 303


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
        status, page, _ = browser._open(request, timeout=120)  # an analysis takes its time
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


@pytest.mark.parametrize("station", ["  auth: proxy\n  trusted_proxies: [10.9.9.9]\n"],
                         indirect=True)
def test_a_forwarded_address_is_believed_only_from_a_trusted_proxy(station: str) -> None:
    """uvicorn rewrote the client's address from X-Forwarded-For for any client on the
    loopback: sending `X-Forwarded-For: <the trusted proxy>` with the user header logged in as
    anyone. Now the direct peer is the client, unless it is itself a trusted proxy."""
    anyone = Browser(station)
    headers = {"X-Forwarded-For": "10.9.9.9", "X-Remote-User": "dr.evil",
               "Accept": "*/*"}
    request = urllib.request.Request(station + "/ward", headers=headers)
    assert anyone._open(request)[0] == 401


def test_rotating_forwarded_addresses_do_not_escape_the_throttle(station: str) -> None:
    """From the loopback, a new X-Forwarded-For and a new name on every try went past the
    per-address throttle (60 of 60 tried). Now the address is the peer's, and its tries wait."""
    guesser = Browser(station)
    codes = []
    for i in range(16):
        codes.append(guesser.post("/login", {
            "csrf": guesser.csrf(), "name": f"user-{i}", "password": "guess"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"})[0])
    assert 429 in codes, codes


def test_the_right_password_waits_a_minute_at_most() -> None:
    """Five wrong passwords from anyone locked the right one out for 15 minutes. Now each
    name, address and pair waits longer after every further failure, never more than 60 s;
    the nurse at another address is not held by what the guesser does at his."""
    from station.auth import Throttle

    throttle = Throttle()
    now = 1000.0
    for _ in range(30):  # a guesser, fast, against the nurse's name
        now += 0.5
        if throttle.wait_s("nurse.ana", "203.0.113.9", now) == 0:
            throttle.failed("nurse.ana", "203.0.113.9", now)
    assert 0 < throttle.wait_s("nurse.ana", "203.0.113.9", now) <= 60
    assert throttle.wait_s("nurse.ana", "192.0.2.5", now + 60) == 0  # the ward's PC
    assert throttle.wait_s("nurse.ana", "203.0.113.9", now + 60) == 0
    throttle.succeeded("nurse.ana", "192.0.2.5")


def test_logins_are_needed_to_read_wherever_there_are_logins(tmp_path: Path) -> None:
    """With auth users behind a proxy on the same host, reads needed no login (the station
    listens on the loopback) and check-config said OK. Now logins mean a login to read,
    unless `login_to_read: false` is written."""
    from station.config import load

    path = tmp_path / "station.yaml"
    path.write_text(f"web:\n  host: 127.0.0.1\n  auth: users\n  users: [{{name: a, "
                    f"password_hash: \"{hash_password('x')}\"}}]\n")
    assert load(path).web.read_needs_login
    path.write_text(path.read_text() + "  login_to_read: false\n")
    assert not load(path).web.read_needs_login


def test_logout_ends_the_live_updates_too(station: str) -> None:
    """An open /events stream went on after logout. Now it ends with the login."""
    import threading

    nurse = Browser(station)
    assert nurse.login("nurse.ana", "s3cret!") == 303
    ended = threading.Event()

    def follow() -> None:
        request = urllib.request.Request(station + "/events", headers={"Accept": "*/*"})
        with nurse.opener.open(request, timeout=30) as stream:
            while stream.readline():
                pass
        ended.set()

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(1.5)
    assert not ended.is_set()
    assert nurse.post("/logout", {"csrf": nurse.csrf("/ward")})[0] == 303
    assert ended.wait(5), "the stream went on after logout"


def test_a_huge_body_is_refused_before_it_is_parsed(station: str, tmp_path: Path) -> None:
    """An anonymous 1 GB multipart POST to /login wrote a 1,072 MB temporary file. Now any
    body but an upload to analyse is refused past 64 kB, by its length or as it arrives."""
    import tempfile

    before = sum(f.stat().st_size for f in Path(tempfile.gettempdir()).glob("tmp*")
                 if f.is_file())
    started = time.monotonic()
    chunk = b"x" * (1 << 20)
    body = (b"--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n" + chunk
            if i == 0 else chunk for i in range(200))  # 200 MB, chunked: no length
    request = urllib.request.Request(station + "/login", data=body, headers={
        "Content-Type": "multipart/form-data; boundary=b"})
    try:
        status = Browser(station)._open(request)[0]
    except urllib.error.URLError:
        status = 413  # answered, and closed before the rest was sent
    assert status == 413 and time.monotonic() - started < 10
    after = sum(f.stat().st_size for f in Path(tempfile.gettempdir()).glob("tmp*")
                if f.is_file())
    assert after - before < 10_000_000
    declared = urllib.request.Request(station + "/login", data=b"x" * 100_000, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert Browser(station)._open(declared)[0] == 413


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_twenty_analyses_leave_the_station_as_it_was(station: str, tmp_path: Path) -> None:
    """Sixteen analyses in a row left the station at 410–506 MB at rest (peaks 510–592 MB):
    the model, the plotting library and what each analysis allocated stayed. Each analysis
    now runs in a process of its own: after twenty, the station is under 400 MB and about
    where it started."""
    nurse = Browser(station)
    assert nurse.login("nurse.ana", "s3cret!") == 303
    pid = int(subprocess.run(["pgrep", "-f", f"station --config {tmp_path}/station.yaml"],
                             capture_output=True, text=True).stdout.split()[0])
    sample = (ROOT / "models" / "samples" / "crackle_65121853_1.5_0_p4_4225.wav").read_bytes()
    status, page = upload(nurse, "crackle.wav", sample)
    assert status == 200 and "Session 1" in page
    start = rss_mb(pid)
    for i in range(19):
        status, page = upload(nurse, f"crackle-{i}.wav", sample)
        assert status == 200, page[:300]
    after = rss_mb(pid)
    print(f"station RSS {start:.0f} MB after one analysis, {after:.0f} MB after twenty, "
          f"peak {peak_rss_mb(pid):.0f} MB")
    assert after < 400 and after - start < 50


@pytest.mark.parametrize(("yaml", "message"), [
    ("mqtt: {tls: {enabled: true, ca_file: /nonexistent/ca.crt}}\n",
     "mqtt.tls.ca_file: /nonexistent/ca.crt: no such file"),
    ('database: {url: "sqlite:////dev/null/station/station.db"}\n',
     "database.url: /dev/null is not a folder"),
    ("web: {secret_file: /dev/null/station/secret}\n",
     "web.secret_file: /dev/null is not a folder"),
    ("model: /nonexistent/model\n", "model: /nonexistent/model/manifest.json: not found"),
])
def test_check_config_finds_what_would_fail_at_start(tmp_path: Path, yaml: str,
                                                     message: str) -> None:
    """check-config said OK, then the start failed with a traceback naming neither file nor
    key (a missing CA, a database folder it cannot make, a secret it cannot write). Now
    check-config names the file, line and key, and the start refuses in the same words."""
    path = tmp_path / "station.yaml"
    text = yaml
    if "secret_file" not in yaml:
        text += f"web: {{secret_file: {tmp_path / 'secret'}}}\n" if "web:" not in yaml else ""
    if "database" not in yaml:
        text += f'database: {{url: "sqlite:///{tmp_path / "station.db"}"}}\n'
    path.write_text(text)
    for command in (["check-config", str(path)], ["--config", str(path)]):
        done = subprocess.run([sys.executable, "-m", "edge", "station", *command], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert f"{path}:1: {message}" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_read_only_database_is_found_before_start(tmp_path: Path) -> None:
    """A database on a file system mounted read-only: the start retried it for ever ("is it
    running?"). Now check-config says so, with the key."""
    import os

    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    folder = tmp_path / "ro"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                   check=True)
    try:
        (folder / "station.db").write_bytes(b"")
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        path = tmp_path / "station.yaml"
        path.write_text(f'database: {{url: "sqlite:///{folder / "station.db"}"}}\n'
                        f"web: {{secret_file: {tmp_path / 'secret'}}}\n")
        done = subprocess.run([sys.executable, "-m", "edge", "station", "check-config",
                               str(path)], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and "database.url:" in done.stderr \
            and "cannot write" in done.stderr, done.stderr
    finally:
        subprocess.run(["umount", str(folder)], check=False)

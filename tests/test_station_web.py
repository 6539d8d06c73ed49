"""The station in a real browser (Debian's headless Chromium, driven by Playwright): a simulated
ward, an alert from a real `lungedge run` arriving live, acknowledged by a logged-in nurse, the
device page, a recording analysed, and hostile strings that must not script the page."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sqlalchemy", reason="the station extra: pip install 'lungedge[station]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

from edge.delivery.publisher import envelope  # noqa: E402
from edge.delivery.wire import Cycle, ModelRef, Summary, body_dict, iso_ms  # noqa: E402
from station.auth import hash_password  # noqa: E402
from tests.conftest import TEST_EPOCH, _free_port, status_fields  # noqa: E402
from tests.test_daemon import finish, start_daemon, write_config  # noqa: E402
from tests.test_station_ingest import publisher, wait  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "lungedge-cnnlstm"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOSTILE_ID = '<img src=x onerror="window.pwned=1">bed'
SCRIPT = "<script>window.pwned=1</script>"
SHOTS = Path(os.environ.get("LUNGEDGE_SCREENSHOTS", ""))


@pytest.fixture
def station(tmp_path: Path, broker: Any, request: pytest.FixtureRequest
            ) -> Iterator[dict[str, Any]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (`apt-get install chromium`; `make "
                    "test` installs it)")
    port = _free_port()
    (tmp_path / "station.yaml").write_text(f"""mqtt: {{port: {broker.port}}}
database: {{url: "sqlite:///{tmp_path / 'station.db'}"}}
web:
  port: {port}
  auth: users
  secret_file: {tmp_path / 'secret'}
  users: [{{name: nurse.ana, password_hash: "{hash_password('s3cret!')}"}}]
{getattr(request, "param", "").replace("{tmp}", str(tmp_path))}""")
    log = (tmp_path / "station.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "station", "--config",
                             str(tmp_path / "station.yaml")], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    import urllib.request

    def up() -> bool:
        try:
            return urllib.request.urlopen(base + "/healthz", timeout=1).status == 200
        except OSError:
            return False

    wait(up, 30, "the station's web UI answers")
    try:
        yield {"base": base, "broker": broker, "tmp": tmp_path}
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


@pytest.fixture
def page(station: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        # The page's Content Security Policy would stop an injected script by itself; the
        # tests switch it off so that they check the escaping alone (and so that Playwright
        # may evaluate its own probes).
        context = browser.new_context(viewport={"width": 1280, "height": 900},
                                      bypass_csp=True)
        pg = context.new_page()
        dialogs: list[str] = []
        # dismissed, unless a test says it would answer yes (Resolve, bulk acknowledge)
        pg.on("dialog", lambda d: (dialogs.append(d.message),
                                   d.accept() if getattr(pg, "accept_dialogs", False)
                                   else d.dismiss()))
        pg.dialogs = dialogs  # type: ignore[attr-defined]
        yield pg
        browser.close()


def shot(pg: Any, station: dict[str, Any], name: str) -> Path:
    path = (SHOTS if SHOTS.name else station["tmp"]) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(path), full_page=True)
    return path


def simulate_ward(port: int, beds: int = 6) -> None:
    """Devices with some history: status, a few minutes of cycles, a session summary."""
    pub = publisher(port)
    now = time.time()
    for i in range(beds):
        device = f"ward-{i + 1:02d}"
        state = ("degraded", "no audio") if i == 3 else ("online", None)
        pub.publish(f"lungedge/{device}/status", json.dumps(envelope(device, 0, TEST_EPOCH) | {
            "state": state[0], "reason": state[1], "reasons": [state[1]] if state[1] else [],
            "model": {"name": "lungedge-cnnlstm", "version": "0.5.0", "sha256": "ab" * 32,
                      "note": "installed"}} | status_fields()),
            qos=1, retain=True)
        for n in range(40):
            t = now - 300 + n * 7
            label = "wheeze" if i == 1 and n % 3 == 0 else "normal"
            body = Cycle(session_id="s", start=iso_ms(t), end=iso_ms(t + 3), duration_s=3.0,
                         label=label, probs={label: 0.9}, confidence=0.9, quality=0.8,
                         good=True, forced_cut=False,
                         model=ModelRef("lungedge-cnnlstm", "0.5.0"), latency_ms=400.0)
            pub.publish(f"lungedge/{device}/cycle",
                        json.dumps(envelope(device, n, TEST_EPOCH) | body_dict(body)), qos=1)
        summary = Summary(session_id="s", start=iso_ms(now - 300), end=iso_ms(now - 20),
                          duration_s=280.0, cycles=40,
                          cycles_by_label={"normal": 40, "crackle": 0, "wheeze": 0, "both": 0},
                          abnormal_burden=0.0, poor_quality_fraction=0.0, cycles_unjudged={},
                          record_label="normal",
                          breathing_rate_per_min=14.0, ended_by="silence",
                          model=ModelRef("lungedge-cnnlstm", "0.5.0"))
        pub.publish(f"lungedge/{device}/summary",
                    json.dumps(envelope(device, 0, TEST_EPOCH) | body_dict(summary)), qos=1)
    status = envelope(HOSTILE_ID, 0, TEST_EPOCH) | {"state": "degraded", "reason": SCRIPT,
                                        "reasons": [SCRIPT], "model": None} | status_fields()
    pub.publish(f"lungedge/{HOSTILE_ID}/status", json.dumps(status), qos=1).wait_for_publish(5)
    pub.loop_stop()


def test_ward_live_alert_acknowledge_device_page(station: dict[str, Any], page: Any) -> None:
    base = station["base"]
    simulate_ward(station["broker"].port)
    page.goto(base + "/login")
    page.fill("input[name=name]", "nurse.ana")
    page.fill("input[name=password]", "s3cret!")
    page.click("button:has-text('Log in')")
    page.wait_for_url(base + "/ward")
    page.wait_for_function("document.querySelectorAll('.tile').length === 7", timeout=15000)
    assert page.locator("#live-state").inner_text() == "live"
    degraded = page.locator(".tile[data-device='ward-04']")
    assert "degraded" in degraded.inner_text() and "no audio" in degraded.inner_text()
    shot(page, station, "ward")

    # a real device: its crackle alert appears on the open page, no reload
    updates = int(page.evaluate("document.body.dataset.updates || 0"))
    proc = start_daemon(write_config(station["tmp"], station["broker"].port, model=SHIPPED,
                                     realtime=True, extra="clips: {enabled: true}\n",
                                     source=str(ROOT / "models" / "samples" /
                                                "crackle_65121853_1.5_0_p4_4225.wav")))
    page.wait_for_selector(".tile[data-device='bed-7'] .alarm.clinical", timeout=30000)
    assert int(page.evaluate("document.body.dataset.updates")) > updates  # live, not reloaded
    assert "crackles" in page.locator(".tile[data-device='bed-7']").inner_text()
    shot(page, station, "ward-alert")
    out = finish(proc, timeout=60)
    assert proc.returncode == 0, out

    # the inbox: acknowledged with a note, stored and shown with who did it
    page.goto(base + "/alerts")  # the alert has ended with the recording, unseen: still here
    row = page.locator("tr[data-alert]").filter(has_text="crackles").first
    assert "not yet" in row.inner_text() and "(ended)" in row.inner_text()
    row.locator("input[name=note]").fill("listened again, physio called")
    actions = int(page.evaluate("document.body.dataset.actions || 0"))
    row.locator("button:has-text('Acknowledge')").click()  # sent without leaving the page
    page.wait_for_function(f"Number(document.body.dataset.actions) > {actions}")
    page.wait_for_function("!Array.from(document.querySelectorAll('tr[data-alert]'))"
                           ".some(r => r.innerText.includes('crackles'))")  # seen: gone
    shot(page, station, "alerts")
    assert page.locator("tr[data-alert]").filter(has_text="device offline").count() == 1

    # the device page: its timeline of cycles, coloured by label, and its history
    page.goto(base + "/ward")
    page.click(".tile[data-device='bed-7'] a.name")
    page.wait_for_selector("svg.timeline rect[data-label]")
    assert page.locator("svg.timeline rect[data-label='crackle']").count() > 3
    assert "listened again, physio called" in page.content()
    assert "DAS" in page.locator("#device").inner_text()  # its session summary
    assert page.locator("#device figure.clip").count() >= 1  # its latest audio
    shot(page, station, "device")

    # the audio behind the alert, played in the page beside its spectrogram
    page.locator("#device a").filter(has_text="crackles").first.click()
    page.wait_for_selector("figure.clip audio")
    duration = page.evaluate("""() => new Promise((done) => {
        const a = document.querySelector('figure.clip audio');
        a.addEventListener('loadedmetadata', () => done(a.duration));
        a.addEventListener('error', () => done(-1));
        a.load(); })""")
    assert 0.5 < duration < 5  # a breathing cycle, decoded by the browser itself
    page.wait_for_function("document.querySelector('figure.clip img').naturalWidth > 100")
    shot(page, station, "alert-clip")

    # a clinician listens and says what it was: kept with who and when, shown beside the clip
    clip_page = page.url
    first = page.locator("figure.clip").first
    heard = first.get_attribute("data-label")
    assert heard in ("crackle", "both")  # the audio behind a crackle alert
    first.locator("button[value=normal]").click()
    page.wait_for_function("document.querySelector('figure.clip').innerText"
                           ".includes('corrected to normal by nurse.ana')")
    assert page.url == clip_page
    shot(page, station, "alert-clip-judged")
    # the device page: the stethoscope it records with, and what clinicians made of its calls
    page.goto(base + "/devices/bed-7")
    page.fill("input[name=stethoscope]", "Littmann 3200, ward 4")
    with page.expect_navigation():  # the same URL again: wait for the new page itself
        page.click("button:has-text('Save')")
    assert f"{heard} calls judged: 1 — 1 corrected to normal" in page.locator(
        "#device").inner_text()
    assert "records with Littmann 3200, ward 4" in page.content()
    # and the verdicts leave as a dataset the toolchain reads
    out = subprocess.run([sys.executable, "-m", "edge", "station", "export-labels",
                          str(station["tmp"] / "labels"), "--config",
                          str(station["tmp"] / "station.yaml")], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Littmann-3200-ward-4: 1 recording(s)" in out.stdout
    (txt,) = (station["tmp"] / "labels" / "Littmann-3200-ward-4").glob("*.txt")
    assert txt.read_text().split()[2:] == ["0", "0"]  # normal: no crackle, no wheeze



@pytest.mark.parametrize("station", ["  login_to_read: false\n"], indirect=True)
def test_hostile_strings_never_script_the_page(station: dict[str, Any], page: Any) -> None:
    base = station["base"]
    simulate_ward(station["broker"].port, beds=1)
    page.goto(base + "/ward")
    page.wait_for_function("document.querySelectorAll('.tile').length === 2", timeout=15000)
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None and not page.dialogs  # type: ignore[attr-defined]
    text = page.locator("#ward").inner_text()
    assert HOSTILE_ID in text and SCRIPT in text  # shown as the text it is
    page.click(f".tile[data-device='{HOSTILE_ID}'] a.name")
    page.wait_for_selector("#device")
    assert page.evaluate("window.pwned") is None and not page.dialogs  # type: ignore[attr-defined]
    assert SCRIPT in page.locator("#device").inner_text()
    # state-changing requests need the session's CSRF token, and a login
    r = page.request.post(base + "/alerts/anything/ack", form={"note": "x"})
    assert r.status == 403 and "reload it" in r.text()
    csp = page.request.get(base + "/ward").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    page.goto(base + "/alerts")
    page.wait_for_selector("#alerts")
    # a reader who has not logged in is offered no way to act on any alert listed
    assert page.locator("form[action*='/ack']").count() == 0


@pytest.mark.parametrize("station", ["  login_to_read: false\n"], indirect=True)
def test_a_very_long_status_reason_keeps_the_ward_readable(station: dict[str, Any],
                                                          page: Any) -> None:
    """A 5,000-character reason made the ward 23,708 px tall: cut for display, the whole of
    it on hover and on the device page."""
    pub = publisher(station["broker"].port)
    reason = "spool: " + "very long reason " * 300
    pub.publish("lungedge/bed-long/status", json.dumps(
        envelope("bed-long", 0, TEST_EPOCH) | {"state": "degraded", "reason": reason,
                                               "reasons": [reason], "model": None}
        | status_fields()),
        qos=1, retain=True).wait_for_publish(5)
    page.goto(station["base"] + "/ward")
    page.wait_for_selector(".tile[data-device='bed-long'] .reason", timeout=15000)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 1500, height
    shown = page.locator(".tile[data-device='bed-long'] .reason").first
    assert len(shown.inner_text()) <= 80 and shown.get_attribute("title") == reason
    pub.loop_stop()


def test_analyse_a_recording(station: dict[str, Any], page: Any) -> None:
    page.goto(station["base"] + "/login")
    page.fill("input[name=name]", "nurse.ana")
    page.fill("input[name=password]", "s3cret!")
    page.click("button:has-text('Log in')")
    page.wait_for_url(station["base"] + "/ward")
    page.goto(station["base"] + "/analyse")
    page.set_input_files("input[name=recording]",
                         str(ROOT / "models" / "samples" / "crackle_65121853_1.5_0_p4_4225.wav"))
    page.click("button:has-text('Analyse')")
    page.wait_for_selector("img.plot", timeout=60000)
    assert page.locator("table tbody tr").count() > 5
    assert "Session 1" in page.content()
    # the device's own breathing rate, in the words `lungedge classify` uses
    assert "of the audio; breathing " in page.content() and "/min." in page.content()
    shot(page, station, "analyse")
    page.goto(station["base"] + "/analyse")
    bad = station["tmp"] / "notes.txt"
    bad.write_text("not audio")
    page.set_input_files("input[name=recording]", str(bad))
    with page.expect_navigation():
        page.click("button:has-text('Analyse')")
    assert "choose a WAV or FLAC recording" in page.content()


@pytest.mark.parametrize("station", ["""routing:
  rules:
    - name: ward-3
      webhook: http://127.0.0.1:9/nobody-listens
      retries: 0
      escalate_after_min: 0.12
      escalate_command:
        - {python}
        - -c
        - "import sys; open('{tmp}/escalated', 'a').write(sys.stdin.read() + '\\\\n')"
""".replace("{python}", sys.executable)], indirect=True)
def test_escalation_stops_when_acknowledged_and_failures_show(station: dict[str, Any],
                                                              page: Any) -> None:
    """Two wheeze alerts; the nurse acknowledges one in the browser within the escalation
    delay (7 s): only the other is escalated. The rule's webhook is down: the failure is on
    every page, and on the Deliveries page."""
    from tests.test_station_store import alert_message

    base = station["base"]
    pub = publisher(station["broker"].port)
    for device in ("bed-a", "bed-b"):
        m = alert_message(device, 0, "new", f"alert-{device}")
        pub.publish(f"lungedge/{device}/alert", json.dumps(m.body), qos=1).wait_for_publish(5)
    pub.loop_stop()
    page.goto(base + "/login")
    page.fill("input[name=name]", "nurse.ana")
    page.fill("input[name=password]", "s3cret!")
    page.click("button:has-text('Log in')")
    page.wait_for_url(base + "/ward")
    page.goto(base + "/alerts")
    row = page.locator("tr[data-alert='alert-bed-a']")
    row.locator("button:has-text('Acknowledge')").click()
    page.wait_for_function("document.body.dataset.actions === '1'")
    escalated = station["tmp"] / "escalated"
    wait(lambda: escalated.exists(), 40, "the unacknowledged alert is escalated")
    time.sleep(2)  # a late second escalation would show now
    lines = [json.loads(line) for line in escalated.read_text().splitlines() if line]
    assert [(m["alert"]["alert_id"], m["event"]) for m in lines] == [("alert-bed-b",
                                                                      "escalation")]
    # the webhooks failed at the router's first pass, seconds before the escalation
    page.goto(base + "/deliveries")
    assert "failed in the last hour" in page.locator("p.banner").inner_text()
    table = page.locator("table.deliveries").inner_text()
    assert "escalation" in table and "failed" in table and "Connection refused" in table
    shot(page, station, "deliveries")

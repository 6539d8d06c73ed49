// Live updates and the alarm sound.
//
// Live updates follow the station's server-sent events and re-fetch the fragments of this page
// (the elements with data-fragment); the server renders and escapes every fragment. A fragment
// is not replaced but morphed into the new one (idiomorph, vendored from npm), so the elements
// that did not change stay the same elements, and what a person is touching is left alone:
// a field with focus or with typed text not yet sent, an open menu, a playing clip, and the
// whole fragment while a pointer is pressed in it (a press that began on one bed's button must
// end on it). A fragment that is busy so waits, and is updated as soon as the person lets go.
//
// A press on Seen, Acknowledge, Resolve or a verdict (forms with data-inline) is sent without
// leaving the page: the page, its scroll position, a playing clip and the alarm sound stay, the
// button says it is being sent (a second press does nothing), and the page updates at once.
// Where that fails, the form is sent the ordinary way, so the server's answer is seen.
//
// The alarm sound (after IEC 60601-1-8's central stations): on by default, a pattern for a new
// clinical alert (three high pulses) apart from a new technical alarm (two low pulses); "pause
// audio" silences it for two minutes and comes back by itself; "audio off" stays off, and
// every page says so in a standing warning. A browser lets a page sound only after a click on
// it: until then the page says so.
(function () {
  "use strict";
  const parts = Array.from(document.querySelectorAll("[data-fragment]"));
  const state = document.getElementById("live-state");
  let timer = null;
  const waiting = new Set();
  let pressedIn = null;  // the fragment a pointer is pressed in

  function count(name) {
    document.body.dataset[name] = String(Number(document.body.dataset[name] || 0) + 1);
  }

  function touched(node) {
    if (!(node instanceof HTMLElement)) return false;
    if (["INPUT", "TEXTAREA", "SELECT"].includes(node.tagName)) {
      if (node === document.activeElement) return true;
      if (node.type === "hidden") return false;
      if (node.tagName === "SELECT") return Array.from(node.options).some((o) => o.selected !== o.defaultSelected);
      if (node.type === "checkbox" || node.type === "radio") return node.checked !== node.defaultChecked;
      return node.value !== node.defaultValue;
    }
    if (node.tagName === "AUDIO") return !node.paused && !node.ended;
    if (node.tagName === "DETAILS") return node.open;
    return false;
  }

  function busy(el) {
    return pressedIn === el;
  }

  const keep = {
    beforeNodeMorphed: (old) => !touched(old),
    beforeNodeRemoved: (old) => !(old instanceof HTMLElement && old.tagName === "AUDIO" && touched(old)),
    beforeAttributeUpdated: (name, el) => !(touched(el) && ["value", "checked", "selected", "open"].includes(name)),
  };

  async function refresh(el) {
    if (busy(el)) { waiting.add(el); return; }
    try {
      const r = await fetch(el.dataset.fragment, {credentials: "same-origin"});
      if (!r.ok) return;
      const html = await r.text();
      if (busy(el)) { waiting.add(el); return; }  // pressed while it loaded
      window.Idiomorph.morph(el, html, {morphStyle: "innerHTML", callbacks: keep});
      el.dataset.updated = String(Date.now());
      count("updates");
      alarms();
    } catch (e) { /* the next event tries again */ }
  }

  function schedule() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; parts.forEach(refresh); }, 100);
  }

  function retry() {
    setTimeout(() => { waiting.forEach((el) => { waiting.delete(el); refresh(el); }); }, 0);
  }
  document.addEventListener("pointerdown", (e) => {
    pressedIn = parts.find((el) => el.contains(e.target)) || null;
  }, true);
  function released() {
    // the click (and a form's submit) comes after the release: update only after it
    setTimeout(() => { pressedIn = null; retry(); }, 300);
  }
  document.addEventListener("pointerup", released, true);
  document.addEventListener("pointercancel", released, true);
  document.addEventListener("focusout", retry);
  document.addEventListener("ended", retry, true);  // media events do not bubble: capture
  document.addEventListener("pause", retry, true);

  // A form that asks first (Resolve, bulk acknowledge): its data-confirm is the question.
  document.addEventListener("submit", (e) => {
    const form = e.target;
    if (!form.dataset || form.dataset.sent === "ordinary") return;
    const question = form.dataset.confirm;
    if (question && !window.confirm(question)) { e.preventDefault(); return; }
    if (!("inline" in form.dataset)) return;
    e.preventDefault();
    if (form.dataset.sending) return;
    send(form, e.submitter);
  }, true);

  async function send(form, submitter) {
    form.dataset.sending = "1";
    if (submitter) submitter.setAttribute("aria-busy", "true");
    try {
      const r = await fetch(form.action, {method: "POST", credentials: "same-origin",
                                          body: new FormData(form, submitter)});
      if (!r.ok) throw new Error(String(r.status));
      form.querySelectorAll("input:not([type=hidden]), textarea").forEach((f) => {
        f.value = ""; f.defaultValue = "";
      });
      count("actions");
      pressedIn = null;
      parts.forEach(refresh);
    } catch (err) {
      form.dataset.sent = "ordinary";  // let the server answer in a page of its own
      if (submitter) form.requestSubmit(submitter); else form.requestSubmit();
    } finally {
      delete form.dataset.sending;
      if (submitter) submitter.removeAttribute("aria-busy");
    }
  }

  // -- the alarm sound --------------------------------------------------------------------
  const PAUSE_MS = 2 * 60 * 1000;
  const control = document.getElementById("audio-control");
  const pauseButton = document.getElementById("audio-pause");
  const offButton = document.getElementById("audio-off");
  const warning = document.getElementById("audio-warning");
  let audio = null;
  let heard = null;  // {clinical, technical}: the unseen alarms this page already knew of

  function mode() { return window.localStorage.getItem("lungedge-audio") || "on"; }
  function pausedUntil() { return Number(window.localStorage.getItem("lungedge-audio-paused") || 0); }
  function paused() { return pausedUntil() > Date.now(); }
  function sounding() { return mode() === "on" && !paused(); }

  function show() {
    if (!control) return;
    const left = Math.max(0, Math.ceil((pausedUntil() - Date.now()) / 1000));
    const blocked = audio && audio.state !== "running";
    let text, why;
    if (mode() === "off") {
      text = "Alarm audio is OFF on this screen: new alerts make no sound.";
      why = "off";
    } else if (paused()) {
      text = `Alarm audio paused: back in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}.`;
      why = "paused";
    } else if (blocked) {
      text = "Click anywhere on this page to let alarms sound (the browser holds sound until then).";
      why = "blocked";
    } else {
      text = "";
      why = "on";
    }
    control.dataset.audio = why;
    warning.textContent = text;
    warning.hidden = !text;
    pauseButton.textContent = paused() ? "Resume audio" : "Pause audio 2 min";
    pauseButton.disabled = mode() === "off";
    offButton.textContent = mode() === "off" ? "Turn audio on" : "Audio off";
    offButton.setAttribute("aria-pressed", String(mode() === "off"));
  }

  function pulses(n, hz, gap) {
    if (!audio || audio.state !== "running") return false;
    for (let i = 0; i < n; i++) {
      const at = audio.currentTime + i * gap;
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = hz;
      gain.gain.setValueAtTime(0.25, at);
      gain.gain.setValueAtTime(0, at + gap * 0.6);
      osc.connect(gain).connect(audio.destination);
      osc.start(at);
      osc.stop(at + gap * 0.65);
    }
    return true;
  }

  function alarms() {
    const el = document.querySelector("[data-unseen-clinical]");
    if (!el) return;
    const now = {
      clinical: new Set(el.dataset.unseenClinical.split(" ").filter(Boolean)),
      technical: new Set(el.dataset.unseenTechnical.split(" ").filter(Boolean)),
    };
    if (heard !== null && sounding()) {
      const fresh = (k) => Array.from(now[k]).some((id) => !heard[k].has(id));
      if (fresh("clinical")) { if (pulses(3, 880, 0.25)) count("clinicalTones"); }
      else if (fresh("technical")) { if (pulses(2, 523, 0.35)) count("technicalTones"); }
    }
    heard = now;
  }

  if (control) {
    if (window.AudioContext) {
      audio = new window.AudioContext();
      audio.onstatechange = show;
      document.addEventListener("pointerdown", () => { audio.resume(); }, true);
    }
    pauseButton.addEventListener("click", () => {
      window.localStorage.setItem("lungedge-audio-paused", String(paused() ? 0 : Date.now() + PAUSE_MS));
      show();
    });
    offButton.addEventListener("click", () => {
      window.localStorage.setItem("lungedge-audio", mode() === "off" ? "on" : "off");
      window.localStorage.setItem("lungedge-audio-paused", "0");
      show();
    });
    window.addEventListener("storage", show);  // another tab of this screen changed it
    setInterval(show, 1000);  // the pause counts down, and ends by itself
    show();
    alarms();
  }

  if (!parts.length || !window.EventSource) { state.hidden = true; return; }
  // from the change this page was rendered at: nothing stored in between is missed
  const source = new EventSource("/events?since=" + encodeURIComponent(document.body.dataset.since || ""));
  let problem = "";
  function live() {
    if (problem) { state.textContent = "not monitoring: " + problem; state.className = "live-state failed"; }
    else { state.textContent = "live"; state.className = "live-state on"; }
  }
  source.addEventListener("open", live);
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; state.className = "live-state off"; });
  source.addEventListener("health", (e) => { problem = JSON.parse(e.data).problem; live(); });
  source.addEventListener("change", schedule);
})();

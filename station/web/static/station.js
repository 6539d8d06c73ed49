// Live updates: follow the station's server-sent events and re-fetch the fragments of this
// page (the elements with data-fragment). The server renders and escapes every fragment; this
// script only swaps them in. A fragment holding the focus of a form field, or playing a clip,
// waits until the field is left or the clip stops, so a nurse typing a note or listening to a
// breath is not interrupted.
(function () {
  "use strict";
  const parts = Array.from(document.querySelectorAll("[data-fragment]"));
  const state = document.getElementById("live-state");
  let timer = null;
  let waiting = new Set();

  function busy(el) {
    const a = document.activeElement;
    if (a && el.contains(a) && ["INPUT", "TEXTAREA", "SELECT"].includes(a.tagName)) return true;
    return Array.from(el.querySelectorAll("audio")).some((m) => !m.paused && !m.ended);
  }

  async function refresh(el) {
    if (busy(el)) { waiting.add(el); return; }
    try {
      const r = await fetch(el.dataset.fragment, {credentials: "same-origin"});
      if (!r.ok) return;
      el.innerHTML = await r.text();
      el.dataset.updated = String(Date.now());
      if (toneButton) newClinical();
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (e) { /* the next event tries again */ }
  }

  function schedule() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; parts.forEach(refresh); }, 100);
  }

  function retry() {
    setTimeout(() => { waiting.forEach((el) => { waiting.delete(el); refresh(el); }); }, 0);
  }
  document.addEventListener("focusout", retry);
  document.addEventListener("ended", retry, true);  // media events do not bubble: capture
  document.addEventListener("pause", retry, true);

  // A form that asks first (Resolve, bulk acknowledge): its data-confirm is the question.
  document.addEventListener("submit", (e) => {
    const question = e.target.dataset && e.target.dataset.confirm;
    if (question && !window.confirm(question)) e.preventDefault();
  }, true);

  // The tone for a new clinical alert: off until a person turns it on on this screen (a
  // browser plays sound only after a click), and the button always says which it is.
  const toneButton = document.getElementById("tone");
  let audio = null;
  let heard = null;  // the unseen clinical alerts this page already knew of
  function toneOn() { return window.localStorage.getItem("lungedge-tone") === "on"; }
  function showTone() {
    if (!toneButton) return;
    toneButton.setAttribute("aria-pressed", String(toneOn()));
    toneButton.textContent = toneOn() ? "Tone for new clinical alerts: on (click to mute)"
                                      : "Tone for new clinical alerts: off";
  }
  function beep() {
    if (!audio) return;
    audio.resume();
    [0, 0.3].forEach((at) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.25, audio.currentTime + at);
      gain.gain.setValueAtTime(0, audio.currentTime + at + 0.2);
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + at);
      osc.stop(audio.currentTime + at + 0.22);
    });
    document.body.dataset.tones = String(Number(document.body.dataset.tones || 0) + 1);
  }
  function newClinical() {
    const el = document.querySelector("[data-unseen-clinical]");
    if (!el) return;
    const now = el.dataset.unseenClinical.split(" ").filter(Boolean);
    if (heard !== null && toneOn() && now.some((id) => !heard.has(id))) beep();
    heard = new Set(now);
  }
  if (toneButton) {
    toneButton.addEventListener("click", () => {
      window.localStorage.setItem("lungedge-tone", toneOn() ? "off" : "on");
      if (toneOn() && !audio && window.AudioContext) audio = new window.AudioContext();
      showTone();
    });
    // on again after a reload: the browser lets it sound from the first click on the page
    if (toneOn() && window.AudioContext) audio = new window.AudioContext();
    document.addEventListener("click", () => { if (audio) audio.resume(); }, {once: true});
    showTone();
    newClinical();
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

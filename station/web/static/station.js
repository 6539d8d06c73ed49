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
    if (a && el.contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA")) return true;
    return Array.from(el.querySelectorAll("audio")).some((m) => !m.paused && !m.ended);
  }

  async function refresh(el) {
    if (busy(el)) { waiting.add(el); return; }
    try {
      const r = await fetch(el.dataset.fragment, {credentials: "same-origin"});
      if (!r.ok) return;
      el.innerHTML = await r.text();
      el.dataset.updated = String(Date.now());
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

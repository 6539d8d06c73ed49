// Live updates: follow the station's server-sent events and re-fetch the fragments of this
// page (the elements with data-fragment). The server renders and escapes every fragment; this
// script only swaps them in. A fragment holding the focus of a form field waits until the
// field is left, so a nurse typing a note is not interrupted.
(function () {
  "use strict";
  const parts = Array.from(document.querySelectorAll("[data-fragment]"));
  const state = document.getElementById("live-state");
  let timer = null;
  let waiting = new Set();

  function typingIn(el) {
    const a = document.activeElement;
    return a && el.contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA");
  }

  async function refresh(el) {
    if (typingIn(el)) { waiting.add(el); return; }
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

  document.addEventListener("focusout", () => {
    setTimeout(() => { waiting.forEach((el) => { waiting.delete(el); refresh(el); }); }, 0);
  });

  if (!parts.length || !window.EventSource) { state.hidden = true; return; }
  const source = new EventSource("/events");
  source.addEventListener("open", () => { state.textContent = "live"; state.className = "live-state on"; });
  source.addEventListener("error", () => { state.textContent = "reconnecting…"; state.className = "live-state off"; });
  source.addEventListener("change", schedule);
})();

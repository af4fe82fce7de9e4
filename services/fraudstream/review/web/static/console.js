// The console's only script (the Content-Security-Policy allows no other): SLA and lease
// countdowns, keyboard shortcuts for the common verdicts, and select-all for bulk decisions.
"use strict";

(function () {
  const body = document.body;
  // Countdowns use the server's clock: the offset between it and this browser's.
  const serverNow = Date.parse(body.dataset.now || "");
  const skew = Number.isNaN(serverNow) ? 0 : serverNow - Date.now();

  function span(seconds) {
    const s = Math.abs(Math.round(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function tick() {
    const now = Date.now() + skew;
    for (const el of document.querySelectorAll("[data-due]")) {
      const left = (Date.parse(el.dataset.due) - now) / 1000;
      if (Number.isNaN(left)) continue;
      el.textContent = left >= 0 ? span(left) + " left" : "overdue " + span(left);
      el.classList.toggle("late", left < 0);
      el.classList.toggle("soon", left >= 0 && left < 900);
    }
  }
  tick();
  setInterval(tick, 1000);

  const keys = { f: "verdict-fraud", l: "verdict-legit", u: "verdict-unsure", r: "release" };
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target && ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
    const key = event.key.toLowerCase();
    if (key === "n") {
      const form = document.getElementById("next-form");
      if (form) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    const button = keys[key] && document.getElementById(keys[key]);
    if (!button) return;
    event.preventDefault();
    const note = document.getElementById("note");
    if (button.dataset.needsNote === "1" && note && !note.value.trim()) {
      document.getElementById("note-hint").hidden = false;
      note.focus();
      return;
    }
    button.click();
  });

  // A verdict that overturns the model needs a note: say so before the round trip.
  const verdictForm = document.getElementById("verdict-form");
  if (verdictForm) {
    verdictForm.addEventListener("submit", function (event) {
      const button = event.submitter;
      const note = document.getElementById("note");
      if (button && button.dataset.needsNote === "1" && !note.value.trim()) {
        event.preventDefault();
        document.getElementById("note-hint").hidden = false;
        note.focus();
      }
    });
  }

  const all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("change", function () {
      for (const box of document.querySelectorAll("input[name=ids]")) box.checked = all.checked;
    });
  }
})();

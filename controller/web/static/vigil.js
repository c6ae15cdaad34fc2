/* Vigil web UI: progressive enhancement only; every page works without it.
   - [data-countdown] <time> elements count down to their deadline;
   - [data-live] regions refresh themselves every few seconds (not counted as activity by the server);
   - forms with data-confirm ask before submitting. */
(function () {
  "use strict";
  var REFRESH_MS = 5000;

  function duration(s) {
    s = Math.floor(Math.abs(s));
    if (s < 60) return s + " s";
    if (s < 600) return Math.floor(s / 60) + " min " + String(s % 60).padStart(2, "0") + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("datetime"));
      if (isNaN(due)) return;
      var left = (due - now) / 1000;
      el.textContent = left >= 0 ? "due in " + duration(left) : "overdue by " + duration(left);
      el.classList.toggle("overdue", left < 0);
    });
  }

  function refresh() {
    var regions = document.querySelectorAll("[data-live]");
    if (!regions.length || document.hidden) return;
    fetch(window.location.href, { headers: { "X-Vigil-Background": "1" }, credentials: "same-origin",
                                  redirect: "manual" })
      .then(function (r) {
        if (r.type === "opaqueredirect" || r.status === 0) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (el) {
          var fresh = doc.querySelector('[data-live="' + el.getAttribute("data-live") + '"]');
          // Never pull the rug from under the keyboard: skip a region that holds the focus.
          if (fresh && !el.contains(document.activeElement) && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
          }
        });
        tick();
      })
      .catch(function () { /* offline for a moment: try again next time */ });
  }

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) ev.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    if (document.querySelector("[data-live]")) setInterval(refresh, REFRESH_MS);
  });
})();

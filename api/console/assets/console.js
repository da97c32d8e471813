// Prognos console: small progressive enhancement. Every page works without it.
(function () {
  "use strict";
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function local(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
      pad(d.getHours()) + ":" + pad(d.getMinutes());
  }
  // Instants in the reader's time zone.
  document.querySelectorAll("time[datetime]").forEach(function (t) {
    var d = new Date(t.getAttribute("datetime"));
    if (!isNaN(d)) { t.textContent = local(d); t.title = t.getAttribute("datetime"); }
  });
  // SLA countdowns tick every 30 s.
  function tick() {
    var now = Date.now();
    document.querySelectorAll(".sla[data-due]").forEach(function (s) {
      var due = Date.parse(s.getAttribute("data-due"));
      if (isNaN(due)) return;
      var left = Math.round((due - now) / 1000), m = Math.floor(Math.abs(left) / 60);
      var text = m < 60 ? m + " min" : (m < 2880 ? Math.floor(m / 60) + " h " + (m % 60) + " min"
        : Math.floor(m / 1440) + " d " + Math.floor((m % 1440) / 60) + " h");
      s.textContent = left < 0 ? "−" + text : text;
    });
  }
  setInterval(tick, 30000);
  // Charts: hover read-out and drag to zoom (re-queries the server for the new range).
  document.querySelectorAll("svg.chart[data-from]").forEach(function (svg) {
    var from = +svg.getAttribute("data-from"), to = +svg.getAttribute("data-to");
    var x0 = +svg.getAttribute("data-x0"), x1 = +svg.getAttribute("data-x1");
    var readout = svg.parentNode.querySelector(".readout");
    var start = null, sel = null;
    function toMs(evt) {
      var r = svg.getBoundingClientRect(), vb = svg.viewBox.baseVal;
      var x = (evt.clientX - r.left) * vb.width / r.width;
      return from + (Math.min(Math.max(x, x0), x1) - x0) / (x1 - x0) * (to - from);
    }
    function xOf(ms) { return x0 + (ms - from) / (to - from) * (x1 - x0); }
    svg.addEventListener("mousemove", function (e) {
      if (readout) readout.textContent = local(new Date(toMs(e)));
      if (start !== null && sel) {
        var a = xOf(start), b = xOf(toMs(e));
        sel.setAttribute("x", Math.min(a, b)); sel.setAttribute("width", Math.abs(b - a));
      }
    });
    svg.addEventListener("mousedown", function (e) {
      start = toMs(e);
      sel = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      sel.setAttribute("class", "sel"); sel.setAttribute("y", 0); sel.setAttribute("height", svg.viewBox.baseVal.height);
      svg.appendChild(sel);
    });
    window.addEventListener("mouseup", function (e) {
      if (start === null) return;
      var end = toMs(e), a = Math.min(start, end), b = Math.max(start, end);
      start = null;
      if (b - a > 60000) {
        var u = new URL(window.location.href);
        u.searchParams.set("from", Math.round(a)); u.searchParams.set("to", Math.round(b));
        u.searchParams.delete("range");
        window.location.assign(u.pathname + u.search);
      } else if (sel) { sel.remove(); }
    });
  });
  // Ask before actions that cannot be undone.
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) e.preventDefault();
    });
  });
  window.prognosReady = performance.now();
})();

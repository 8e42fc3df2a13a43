// Live updates for the inbox: the server says which thread changed (server-
// sent events) and the page fetches its live part again. No build step.
(function () {
  "use strict";
  var body = document.body;
  var page = body.dataset.page;

  // The approved template's preview, with the lead's values filled in.
  var select = document.getElementById("reply-template");
  var preview = document.getElementById("template-preview");
  if (select && preview) {
    var show = function () {
      var option = select.options[select.selectedIndex];
      var text = option && option.dataset.preview;
      preview.textContent = text || "";
      preview.hidden = !text;
    };
    select.addEventListener("change", show);
    show();
  }

  // Availability: while the operator uses the page, say so to the server at
  // most once a minute, so that someone marked available who walked away
  // (idle) gets no new threads, and gets them again on coming back.
  if (body.dataset.csrf && body.dataset.idle) {
    var idleMs = Number(body.dataset.idle) * 1000;
    var status = document.getElementById("presence-status");
    var lastActivity = Date.now();
    var activeSincePing = false;
    var shownIdle = !!status && status.classList.contains("idle");
    var ping = function () {
      activeSincePing = false;
      var form = new URLSearchParams();
      form.set("csrf", body.dataset.csrf);
      fetch("/inbox/presence/ping", { method: "POST", body: form, credentials: "same-origin" })
        .catch(function () { activeSincePing = true; });
    };
    var showIdle = function (idle) {
      if (!status || idle === shownIdle) return;
      if (!status.classList.contains("available") && !status.classList.contains("idle")) return;
      shownIdle = idle;
      status.classList.toggle("idle", idle);
      status.classList.toggle("available", !idle);
      status.textContent = idle ? "Available · idle" : "Available";
    };
    var noted = 0;
    var activity = function () {
      var now = Date.now();
      // Pointer moves come by the hundred: one a second is plenty.
      if (now - noted < 1000) return;
      noted = now;
      lastActivity = now;
      activeSincePing = true;
      // Back after being idle: say so now, not within the minute.
      if (shownIdle) {
        showIdle(false);
        ping();
      }
    };
    ["pointerdown", "keydown", "mousemove"].forEach(function (kind) {
      document.addEventListener(kind, activity, { passive: true });
    });
    // Scrolls do not bubble: listen while they go down to the element.
    document.addEventListener("scroll", activity, { passive: true, capture: true });
    setInterval(function () {
      if (activeSincePing) ping();
      if (idleMs > 0 && Date.now() - lastActivity >= idleMs) showIdle(true);
    }, 60000);
  }

  if (page !== "threads" && page !== "thread" && page !== "queues") return;
  var pending = false;
  function refresh() {
    if (pending) return;
    pending = true;
    fetch(location.href, { headers: { "X-Live": "1" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        pending = false;
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var old = document.getElementById("live");
        if (fresh && old) old.replaceWith(fresh);
      })
      .catch(function () { pending = false; });
  }
  // Members come, go and idle without any thread changing: the queues page
  // looks again every half minute too.
  if (page === "queues") setInterval(refresh, 30000);
  if (!window.EventSource) return;
  var events = new EventSource("/inbox/events");
  // A browser keeps only a few connections per server: let this one go
  // with the page, or the next pages wait for it.
  window.addEventListener("pagehide", function () { events.close(); });
  events.addEventListener("thread", function (e) {
    var changed = JSON.parse(e.data);
    if (page === "threads" || page === "queues" || changed.lead_id === body.dataset.lead) refresh();
  });
})();

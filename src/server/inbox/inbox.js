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

  if (page !== "threads" && page !== "thread") return;
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
  if (!window.EventSource) return;
  var events = new EventSource("/inbox/events");
  // A browser keeps only a few connections per server: let this one go
  // with the page, or the next pages wait for it.
  window.addEventListener("pagehide", function () { events.close(); });
  events.addEventListener("thread", function (e) {
    var changed = JSON.parse(e.data);
    if (page === "threads" || changed.lead_id === body.dataset.lead) refresh();
  });
})();

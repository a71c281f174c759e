// Keeps the overview current on an on-call screen: fetches the table every N seconds and swaps
// it in. Served by the app itself (no CDN). Pauses while the tab is hidden.
(function () {
  "use strict";
  function start(box) {
    var url = box.getAttribute("data-refresh-url");
    var seconds = parseInt(box.getAttribute("data-refresh-seconds") || "30", 10);
    var stamp = document.getElementById("refreshed");
    function tick() {
      if (document.hidden) return;
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (html) {
          box.innerHTML = html;
          if (stamp) stamp.textContent = "Updated " + new Date().toISOString().slice(11, 19) + " UTC";
        })
        .catch(function (error) {
          if (stamp) stamp.textContent = "Refresh failed (" + error.message + "); retrying";
        });
    }
    window.setInterval(tick, seconds * 1000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("overview-rows");
    if (box) start(box);
  });
})();

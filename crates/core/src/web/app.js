// sqlraft web interface: refreshes the cluster table and copies the install command.
// Everything it inserts was rendered (and escaped) by the server.
(function () {
  "use strict";
  var cluster = document.getElementById("cluster");
  if (cluster) {
    var refresh = function () {
      fetch("/ui/cluster", { cache: "no-store", credentials: "same-origin" })
        .then(function (r) {
          return r.text().then(function (text) { return { ok: r.ok, text: text }; });
        })
        .then(function (r) {
          cluster.innerHTML = r.text;
          cluster.classList.toggle("stale", !r.ok);
        })
        .catch(function () { cluster.classList.add("stale"); });
    };
    setInterval(refresh, 2000);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source) { return; }
    var text = source.textContent;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var range = document.createRange();
      range.selectNodeContents(source);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      try { if (document.execCommand("copy")) { done(); } } catch (e) { /* selected: copy by hand */ }
    }
  });
})();

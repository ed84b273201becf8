/* shardstats tracker (README "Tracker for web pages"). No dependencies, no build step.
 *
 *   <script defer src="https://stats.example/tracker.js"></script>
 *
 * Sends an impression per page view, and a click per click on a link (a[href], area[href];
 * a middle click too) or on an element marked data-shardstats-click (the closest such
 * element counts, once).
 * Custom events: shardstats.track("click") or shardstats.track("impression").
 *
 * The page's origin must be listed in the server's browser_origins setting.
 * Options, as attributes of the script tag:
 *   data-persist="false"  a new random user id per page load, nothing stored on the device
 *                         (default: one random id kept in localStorage["shardstats_uid"])
 *   data-api="https://stats.example"  where to send (default: the directory this script
 *                         came from, e.g. https://stats.example/stats/ for .../stats/tracker.js)
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || (window.shardstats && window.shardstats.track)) return; // loaded twice
  // Default: the directory this script came from, so a proxy's path prefix is kept
  // (https://stats.example/stats/tracker.js sends to /stats/analytics/batch).
  var api = script.getAttribute("data-api") || new URL(".", new URL(script.src, location.href)).href;
  var endpoint = api.replace(/\/+$/, "") + "/analytics/batch";
  var STORAGE_KEY = "shardstats_uid";
  var RETRIES = 2;

  function randomId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    var hex = "";
    for (var i = 0; i < bytes.length; i++) hex += (bytes[i] + 0x100).toString(16).slice(1);
    return hex;
  }

  function userId() {
    if (script.getAttribute("data-persist") === "false") return randomId();
    try {
      var id = localStorage.getItem(STORAGE_KEY);
      if (!id) {
        id = randomId();
        localStorage.setItem(STORAGE_KEY, id);
      }
      return id;
    } catch (e) {
      return randomId(); // storage blocked: an id for this page only
    }
  }

  var user = userId();

  // The body is one line of the batch format, sent as text/plain: a CORS-safelisted type, so
  // no preflight. Its event id makes a re-sent body count once (ids are kept per hour).
  function send(body, retriesLeft) {
    var queued = false;
    try {
      queued = !!(navigator.sendBeacon && navigator.sendBeacon(endpoint, body));
    } catch (e) {
      queued = false;
    }
    if (queued || !window.fetch) return;
    fetch(endpoint, {
      method: "POST", body: body, keepalive: true, mode: "cors", credentials: "omit",
      headers: {"Content-Type": "text/plain"}
    }).then(function (response) {
      if (retriesLeft <= 0) return;
      if (response.status >= 500) return retry(body, retriesLeft);
      // A 200 names a line the server could not make durable (an overloaded or failing
      // hour) as "failed": as safe to send again as a 5xx.
      if (response.ok) {
        return response.json().then(function (answer) {
          if (answer && answer.failed > 0) retry(body, retriesLeft);
        }, function () {});
      }
    }, function () {
      if (retriesLeft > 0) retry(body, retriesLeft);
    });
  }

  function retry(body, retriesLeft) {
    setTimeout(function () { send(body, retriesLeft - 1); }, 1000 * (RETRIES - retriesLeft + 1));
  }

  function track(kind) {
    if (kind !== "click" && kind !== "impression") {
      throw new TypeError('shardstats.track: the event is "click" or "impression"');
    }
    send(JSON.stringify({timestamp: Date.now(), user: user, event: kind, id: randomId()}),
         RETRIES);
  }

  window.shardstats = {track: track};

  var CLICKABLE = "a[href], area[href], [data-shardstats-click]";
  document.addEventListener("click", function (event) {
    var target = event.target;
    var clicked = target && target.closest && target.closest(CLICKABLE);
    if (!clicked) return;
    // A click on a label makes the browser click its control too: when that second click
    // lands in the same element, it is the one counted.
    var label = target.closest("label");
    var control = label && label.control;
    if (control && !control.matches(":disabled") && !control.contains(target) &&
        control.closest(CLICKABLE) === clicked) return;
    track("click");
  }, true);

  // A middle click opens a link in a new tab: an auxclick, never a click.
  document.addEventListener("auxclick", function (event) {
    var target = event.target;
    if (event.button === 1 && target && target.closest &&
        target.closest("a[href], area[href]")) {
      track("click");
    }
  }, true);

  // A page restored from the back/forward cache is another view.
  window.addEventListener("pageshow", function (event) {
    if (event.persisted) track("impression");
  });

  track("impression");
})();

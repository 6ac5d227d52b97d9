// Switchboard's supervisor wallboard (docs/records.md, "Wallboard"). No
// framework, no build step. Reads the supervisor API every few seconds and
// builds the DOM with createElement / textContent only.
(function () {
  "use strict";

  var API = "/api/v1";
  var TOKEN_KEY = "switchboard.supervisorToken";
  var REFRESH_MS = 2000;
  var SERIES_MS = 15000;
  var SVG = "http://www.w3.org/2000/svg";

  // `session` counts sign-ins: answers to an earlier one are dropped.
  var S = { token: null, timer: null, seriesTimer: null, failures: 0, seriesFailed: false, busy: false, session: 0, loaded: false };

  // Figures that could not be refreshed are shown as stale (dimmed, and
  // said so), never as live: a wall screen is read from across the room.
  // The board until its first refresh after a sign-in (it may show an
  // earlier session's figures), or after a failed one; the chart alone
  // when only its own refresh failed.
  function markStale() {
    var stale = !S.loaded || S.failures > 0;
    $("board").classList.toggle("stale", stale);
    $("board").setAttribute("data-stale", stale ? "true" : "false");
    $("chart").classList.toggle("stale", S.seriesFailed);
    $("chart").setAttribute("data-stale", S.seriesFailed ? "true" : "false");
  }

  function $(id) {
    return document.getElementById(id);
  }

  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  function status(text) {
    $("status").textContent = text;
  }

  function duration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    var h = Math.floor(s / 3600);
    var m = Math.floor((s % 3600) / 60);
    var sec = s % 60;
    var mm = (h > 0 && m < 10 ? "0" : "") + m;
    return (h > 0 ? h + ":" : "") + mm + ":" + (sec < 10 ? "0" : "") + sec;
  }

  function percent(x) {
    return x === null || x === undefined ? "–" : Math.round(x * 1000) / 10 + " %";
  }

  function seconds(x) {
    return x === null || x === undefined ? "–" : Math.round(x) + " s";
  }

  function levelClass(x) {
    if (x === null || x === undefined) return "";
    return x >= 0.8 ? "ok" : x >= 0.6 ? "warn" : "bad";
  }

  // Each request is given up after 10 s: one left hanging would hold the
  // refresh (one at a time) for ever.
  function call(path) {
    var abort = new AbortController();
    var timer = setTimeout(function () { abort.abort(); }, 10000);
    return fetch(API + path, {
      headers: { Authorization: "Bearer " + S.token },
      cache: "no-store",
      signal: abort.signal
    }).then(function (r) {
      if (r.status === 401 || r.status === 403) {
        throw { auth: true };
      }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json(); // the body too, within the 10 s
    }).finally(function () {
      clearTimeout(timer);
    });
  }

  function replace(tbody, rows) {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    rows.forEach(function (row) {
      tbody.appendChild(row);
    });
  }

  function renderQueues(queues, kpis) {
    var totalWaiting = 0;
    var longest = 0;
    var rows = queues.map(function (q) {
      var k = (kpis.queues && kpis.queues[q.queue]) || {};
      totalWaiting += q.waiting;
      longest = Math.max(longest, q.longest_wait_ms);
      var tr = document.createElement("tr");
      tr.setAttribute("data-queue", q.queue);
      var name = q.queue;
      if (q.open === false) {
        name += q.opens_at ? " (closed until " + new Date(q.opens_at).toLocaleString([], { weekday: "short", hour: "2-digit", minute: "2-digit" }) + ")" : " (closed)";
      }
      tr.appendChild(cell(name, q.open === false ? "closed" : ""));
      tr.appendChild(cell(String(q.waiting), "num"));
      tr.appendChild(cell(duration(q.longest_wait_ms), "num"));
      tr.appendChild(cell(percent(k.service_level), "num " + levelClass(k.service_level)));
      tr.appendChild(cell(seconds(k.asa_secs), "num"));
      tr.appendChild(cell(String(k.answered || 0), "num"));
      tr.appendChild(cell(String(k.abandoned || 0), "num"));
      return tr;
    });
    replace($("queues"), rows);
    var t = kpis.total || {};
    $("t-waiting").textContent = String(totalWaiting);
    $("t-longest").textContent = duration(longest);
    $("t-sl").textContent = percent(t.service_level);
    $("t-sl").className = "value " + levelClass(t.service_level);
    $("t-answered").textContent = String(t.answered || 0);
    $("t-abandoned").textContent = String(t.abandoned || 0);
  }

  function renderAgents(agents, kpis) {
    var available = 0;
    var rows = agents.map(function (a) {
      var k = (kpis.agents && kpis.agents[a.id]) || {};
      var presence = a.online ? a.presence : "offline";
      if (presence === "available") available += 1;
      var load = 0;
      var cap = 0;
      ["chat", "email", "social", "voice"].forEach(function (c) {
        load += (a.loads && a.loads[c]) || 0;
        cap += (a.capacity && a.capacity[c]) || 0;
      });
      var tr = document.createElement("tr");
      tr.setAttribute("data-agent", a.id);
      tr.appendChild(cell(a.name || a.id));
      var label = presence.replace("_", "-") + (a.reason && presence === "away" ? " (" + a.reason + ")" : "");
      tr.appendChild(cell(label, "presence-" + presence));
      tr.appendChild(cell(load + " / " + cap, "num"));
      tr.appendChild(cell(String(k.answered || 0), "num"));
      tr.appendChild(cell(percent(k.occupancy), "num"));
      return tr;
    });
    replace($("agents"), rows);
    $("t-available").textContent = String(available);
  }

  function renderChart(samples) {
    var svg = $("chart");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 600;
    var H = 160;
    var pad = 24;
    var now = Date.now();
    if (samples.length) now = Math.max(now, samples[samples.length - 1].at);
    var from = now - 3600 * 1000;
    var max = 1;
    samples.forEach(function (s) {
      max = Math.max(max, s.total);
    });
    var axis = document.createElementNS(SVG, "line");
    axis.setAttribute("x1", pad);
    axis.setAttribute("x2", W);
    axis.setAttribute("y1", H - pad);
    axis.setAttribute("y2", H - pad);
    axis.setAttribute("class", "axis");
    svg.appendChild(axis);
    [["0", H - pad], [String(max), pad]].forEach(function (l) {
      var t = document.createElementNS(SVG, "text");
      t.setAttribute("x", 2);
      t.setAttribute("y", l[1] + 4);
      t.textContent = l[0];
      svg.appendChild(t);
    });
    var label = document.createElementNS(SVG, "text");
    label.setAttribute("x", W - 40);
    label.setAttribute("y", H - 6);
    label.textContent = "now";
    svg.appendChild(label);
    var points = samples
      .filter(function (s) {
        return s.at >= from;
      })
      .map(function (s) {
        var x = pad + ((s.at - from) / (now - from)) * (W - pad);
        var y = H - pad - (s.total / max) * (H - 2 * pad);
        return x.toFixed(1) + "," + y.toFixed(1);
      });
    var line = document.createElementNS(SVG, "polyline");
    line.setAttribute("class", "line");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("data-points", String(points.length));
    svg.appendChild(line);
  }

  function refresh() {
    // One refresh at a time: a slow answer must not land after a newer one.
    if (S.busy) return;
    S.busy = true;
    var session = S.session;
    Promise.all([call("/queues"), call("/agents"), call("/kpis?window=1h")])
      .then(function (r) {
        if (session !== S.session) return;
        renderQueues(r[0].queues, r[2]);
        renderAgents(r[1].agents, r[2]);
        S.failures = 0;
        S.loaded = true;
        $("updated").textContent = "Updated " + new Date().toLocaleTimeString();
        status(S.seriesFailed ? "Live; the chart could not be refreshed (dimmed)." : "Live.");
      })
      .catch(function (e) {
        if (session !== S.session) return;
        if (e && e.auth) {
          signOut("The token was refused.");
          return;
        }
        S.failures += 1;
        status("Cannot reach Switchboard (" + S.failures + "); the figures shown are stale; retrying.");
      })
      .then(function () {
        if (session !== S.session) return;
        S.busy = false;
        markStale();
      });
  }

  function refreshSeries() {
    var session = S.session;
    call("/kpis/series")
      .then(function (r) {
        if (session !== S.session) return;
        renderChart(r.samples || []);
        S.seriesFailed = false;
      })
      .catch(function () {
        // Refused too (refresh() signs out if the token is): a frozen
        // chart is marked either way.
        if (session === S.session) S.seriesFailed = true;
      })
      .then(function () {
        if (session === S.session) markStale();
      });
  }

  function start() {
    $("signin").hidden = true;
    $("board").hidden = false;
    $("sign-out").hidden = false;
    status("Loading…");
    markStale();
    refresh();
    refreshSeries();
    S.timer = setInterval(refresh, REFRESH_MS);
    S.seriesTimer = setInterval(refreshSeries, SERIES_MS);
  }

  function signOut(why) {
    clearInterval(S.timer);
    clearInterval(S.seriesTimer);
    // A new session: answers still on their way belong to this one.
    S.session += 1;
    S.busy = false;
    S.failures = 0;
    S.seriesFailed = false;
    S.loaded = false;
    S.token = null;
    try {
      sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) {}
    $("board").hidden = true;
    $("signin").hidden = false;
    $("sign-out").hidden = true;
    status(why || "Signed out.");
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("signin-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      S.token = $("token").value.trim();
      $("token").value = "";
      try {
        sessionStorage.setItem(TOKEN_KEY, S.token);
      } catch (e) {}
      start();
    });
    $("sign-out").addEventListener("click", function () {
      signOut();
    });
    try {
      S.token = sessionStorage.getItem(TOKEN_KEY);
    } catch (e) {}
    if (S.token) start();
  });
})();

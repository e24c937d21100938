// ferry web: refresh the page's data by polling the read-only JSON views (no write ever).
(function () {
  "use strict";
  var body = document.body;
  var every = parseInt(body.dataset.refreshMs || "1000", 10);

  function text(el, value) { if (el) { el.textContent = value == null ? "" : String(value); } }
  function pct(p) { return p == null ? "" : Number(p).toFixed(0) + "%"; }
  function when(at) { return at ? new Date(at * 1000).toLocaleString() : ""; }

  function cell(tr, value) { var td = document.createElement("td"); text(td, value); tr.appendChild(td); return td; }

  function renderList(rows) {
    var tbody = document.querySelector("#migrations tbody");
    var fresh = document.createElement("tbody");
    rows.forEach(function (m) {
      var tr = document.createElement("tr");
      tr.id = "m-" + m.id;
      tr.className = "status-" + m.status;
      tr.dataset.status = m.status;
      var td = document.createElement("td");
      var a = document.createElement("a");
      a.href = "/migrations/" + encodeURIComponent(m.id);
      text(a, m.id);
      td.appendChild(a);
      tr.appendChild(td);
      cell(tr, m.status).className = "status";
      cell(tr, m.instance);
      cell(tr, m.source);
      cell(tr, m.destination);
      cell(tr, pct(m.percent)).className = "percent";
      cell(tr, when(m.created_at)).className = "created";
      fresh.appendChild(tr);
    });
    if (!rows.length) {
      var tr = document.createElement("tr");
      tr.className = "empty";
      cell(tr, "no migrations yet").colSpan = 7;
      fresh.appendChild(tr);
    }
    tbody.replaceWith(fresh);
  }

  function renderRun(run) {
    var status = document.getElementById("status");
    text(status, run.status);
    status.className = "status status-" + run.status;
    text(document.getElementById("source"), run.source);
    text(document.getElementById("destination"), run.destination);
    text(document.getElementById("runner"), run.runner);
    var bar = document.getElementById("progress-bar");
    bar.value = run.percent == null ? 0 : run.percent;
    text(document.getElementById("percent"), run.percent == null ? "" : Number(run.percent).toFixed(1) + "%");
    text(document.getElementById("progress-text"), run.progress_text);
    text(document.getElementById("error"), run.error);
    var tbody = document.querySelector("#attempts tbody");
    var fresh = document.createElement("tbody");
    run.attempts.forEach(function (a) {
      var tr = document.createElement("tr");
      tr.className = "outcome-" + a.outcome;
      cell(tr, a.host); cell(tr, a.outcome); cell(tr, a.reason);
      fresh.appendChild(tr);
    });
    tbody.replaceWith(fresh);
    text(document.getElementById("timeline"), run.timeline);
    var graph = document.getElementById("graph");
    if (graph.dataset.html !== run.graph_html) {
      graph.innerHTML = run.graph_html;  // Graphviz's SVG or the server's escaped list
      graph.dataset.html = run.graph_html;
      follow(graph);
    }
    document.title = "ferry: " + run.instance + " " + run.status;
  }

  // keep where the run is in view: the running (or failed) atom, once each time it changes
  function follow(graph) {
    var at = graph.querySelector(".kind-task.state-running, .kind-task.state-reverting, .kind-task.failed");
    var key = at ? at.id : "";
    if (at && graph.dataset.followed !== key) {
      graph.dataset.followed = key;
      var box = graph.getBoundingClientRect(), node = at.getBoundingClientRect();
      graph.scrollTop += node.top - box.top - (box.height - node.height) / 2;
    }
  }

  function poll(url, render, stopWhen) {
    function tick() {
      fetch(url, { cache: "no-store" })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          render(data);
          if (!stopWhen || !stopWhen(data)) { setTimeout(tick, every); }
        })
        .catch(function () { setTimeout(tick, every * 3); });
    }
    setTimeout(tick, every);
  }

  var graphPanel = document.getElementById("graph");
  if (graphPanel) { follow(graphPanel); }
  document.querySelectorAll("td.created").forEach(function (td) { text(td, when(parseFloat(td.dataset.at))); });
  if (body.dataset.page === "list") {
    poll("/api/migrations", renderList, null);
  } else if (body.dataset.page === "migration") {
    var id = encodeURIComponent(body.dataset.id);
    poll("/api/migrations/" + id + "/live", renderRun, function (run) { return run.done; });
  } else if (body.dataset.page === "drain" && body.dataset.done !== "yes") {
    setTimeout(function () { window.location.reload(); }, every * 2);  // until it has ended
  }
})();

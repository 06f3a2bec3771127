// GPU usage in the hub's pages: utilization timelines and sortable report tables.
//
// Timelines: every element with data-crater-timeline (data-kind, data-name, data-user) is filled
// with a small SVG line of the workload's GPU utilization over its life, read from
// /hub/api/crater/usage/timeline; it says "utilization unavailable" (and why) when the API does.
// Sortable tables: a table with data-crater-sortable sorts by a column when its header button is
// clicked (numbers by data-value), again to reverse.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var api = (window.craterUsage && window.craterUsage.api_url) || "/hub/api/crater/";

  function xsrf() {
    var m = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    return node;
  }

  function drawTimeline(box, model) {
    box.textContent = "";
    box.dataset.state = model.available ? "available" : "unavailable";
    if (!model.available || !model.points.length) {
      var note = document.createElement("span");
      note.className = "small text-body-secondary crater-timeline-note";
      note.textContent = model.note || "utilization unavailable";
      box.appendChild(note);
      return;
    }
    var w = 240, h = 40, pts = model.points;
    var t0 = pts[0][0], t1 = pts[pts.length - 1][0];
    var span = Math.max(t1 - t0, 1);
    var svg = el("svg", {viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img",
                         "class": "crater-timeline", "data-points": pts.length});
    var title = el("title");
    title.textContent = "GPU utilization over the workload's life";
    svg.appendChild(title);
    svg.appendChild(el("rect", {x: 0, y: 0, width: w, height: h, fill: "#f4f4f4"}));
    var d = pts.map(function (p, i) {
      var x = ((p[0] - t0) / span) * (w - 4) + 2, y = h - 2 - p[1] * (h - 4);
      return (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    }).join(" ");
    svg.appendChild(el("path", {d: d, fill: "none", stroke: "#0072B2", "stroke-width": 1.5}));
    pts.forEach(function (p) {
      var c = el("circle", {cx: (((p[0] - t0) / span) * (w - 4) + 2).toFixed(1),
                            cy: (h - 2 - p[1] * (h - 4)).toFixed(1), r: 1.2, fill: "#0072B2",
                            "data-ts": p[0], "data-value": p[1]});
      svg.appendChild(c);
    });
    box.appendChild(svg);
    var mean = pts.reduce(function (s, p) { return s + p[1]; }, 0) / pts.length;
    var label = document.createElement("span");
    label.className = "small ms-2";
    label.textContent = "mean " + Math.round(mean * 100) + " %";
    box.appendChild(label);
  }

  function loadTimeline(box) {
    var q = "kind=" + encodeURIComponent(box.dataset.kind) + "&name=" + encodeURIComponent(box.dataset.name || "");
    if (box.dataset.user) q += "&user=" + encodeURIComponent(box.dataset.user);
    fetch(api + "usage/timeline?" + q, {headers: {"X-XSRFToken": xsrf()}, credentials: "same-origin"})
      .then(function (r) {
        return r.json().then(function (body) { return {status: r.status, body: body}; });
      })
      .then(function (r) {
        if (r.status === 404) {
          drawTimeline(box, {available: false, points: [], note: "no GPU use recorded"});
        } else if (r.status !== 200) {
          drawTimeline(box, {available: false, points: [], note: r.body.message || "error"});
        } else {
          drawTimeline(box, r.body);
        }
      })
      .catch(function (e) { drawTimeline(box, {available: false, points: [], note: String(e)}); });
  }

  function sortable(table) {
    table.querySelectorAll("thead button[data-sort]").forEach(function (button, column) {
      button.addEventListener("click", function () {
        var numeric = button.dataset.sort === "number";
        var descending = button.dataset.order !== "desc";
        button.dataset.order = descending ? "desc" : "asc";
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return r.dataset.name !== undefined; });
        rows.sort(function (a, b) {
          var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
          var c = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
          return descending ? -c : c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function refresh() {
    document.querySelectorAll("[data-crater-timeline]").forEach(loadTimeline);
  }

  document.querySelectorAll("table[data-crater-sortable]").forEach(sortable);
  refresh();
  if (document.querySelector("[data-crater-timeline][data-live]")) {
    setInterval(refresh, 30000);
  }
})();

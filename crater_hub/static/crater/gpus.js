// The GPU heatmap (/hub/crater/gpus): draws window.crater.initial (the REST answer the page was
// rendered with), then keeps it current by polling GET {hub}/api/crater/gpus with the filters.
// Filters and paging re-fetch the answer and redraw in place (no page reload); the URL's query
// follows them (history.replaceState) so a filtered view can be bookmarked.
// Only one page of node rows is drawn at a time (the API pages them): at 5,000 nodes the DOM
// stays a few thousand cells, and the accelerator summaries still cover the whole cluster.
(function () {
  "use strict";
  var cfg = window.crater;
  var jh = window.jhdata;
  var state = {accelerator: cfg.filters.accelerator, node: cfg.filters.node, idle: cfg.filters.idle,
               offset: 0, limit: 100};
  var $ = function (id) { return document.getElementById(id); };
  var timer = null, seq = 0;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (attrs[k] !== null && attrs[k] !== undefined && attrs[k] !== false) node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
    return node;
  }

  function colour(u) {  // 0 → pale blue, 0.5 → amber, 1 → red
    if (u === null || u === undefined) return "hsl(0,0%,85%)";
    var hue = u < 0.5 ? 210 - (210 - 40) * (u / 0.5) : 40 - 40 * ((u - 0.5) / 0.5);
    var light = 92 - 30 * u;
    return "hsl(" + Math.round(hue) + ",75%," + Math.round(light) + "%)";
  }

  function gib(bytes) { return (bytes / 1073741824).toFixed(bytes >= 10 * 1073741824 ? 0 : 1); }

  function percent(u) { return u === null || u === undefined ? "—" : Math.round(u * 100) + " %"; }

  function cell(d) {
    var held = d.holders.length > 0;
    var cls = "crater-cell" + (d.instance !== null ? " crater-mig" : "") + (held ? "" : " crater-free") +
      (d.idle ? " crater-idle" : "");
    var lines = [el("div", {"class": "fw-semibold"}, [
      (d.instance !== null ? d.profile + " #" + d.instance : "GPU " + d.gpu) + " · " + percent(d.utilization)])];
    if (d.idle) lines.push(el("div", {"class": "crater-idle-badge", "data-idle-mark": ""}, ["idle"]));
    d.holders.forEach(function (h) {
      var what = h.workload === null ? h.kind : (h.kind === "server" ? (h.workload || "default server")
        : h.kind === "job" ? "job " + h.workload : h.workload);
      lines.push(el("div", {"data-owner": h.owner}, [
        h.owner, " · ", h.link ? el("a", {href: h.link}, [what]) : what]));
    });
    if (!held) lines.push(el("div", {}, ["free"]));
    if (d.memory_total) lines.push(el("div", {"data-memory": ""}, [gib(d.memory_used) + " / " + gib(d.memory_total) + " GiB"]));
    var title = d.node + " " + d.slot + (d.replicas > 1 ? " (time-sliced ×" + d.replicas + ")" : "") +
      "\nutilization " + percent(d.utilization) +
      d.holders.map(function (h) { return "\n" + h.owner + " — " + h.kind + " " + (h.workload || "") +
        (h.placement === "count" ? " (device not known, placed by count)" : ""); }).join("");
    return el("div", {"class": cls, title: title, "data-node": d.node, "data-slot": d.slot,
                      "data-accelerator": d.accelerator, "data-idle": d.idle ? "true" : "false",
                      "data-utilization": d.utilization === null ? "" : d.utilization,
                      style: held || d.utilization ? "background-color:" + colour(d.utilization) : null}, lines);
  }

  function drawSummary(answer) {
    var box = $("crater-gpus-summary");
    var parts = answer.accelerators.map(function (a) {
      return el("div", {"class": "mb-1", "data-summary": a.slug}, [
        el("strong", {}, [a.display_name]), " — ",
        el("span", {"data-free": a.slug}, [a.free === null ? "?" : a.free]), " / ",
        el("span", {"data-total": a.slug}, [a.total === null ? "?" : a.total]), " free · ",
        a.allocated + " of " + a.devices + " devices held · ",
        el("span", {"data-idle-count": a.slug}, [a.idle]), " idle · mean " + percent(a.mean_utilization) + " · ",
        el("span", {"data-queued": a.slug}, [a.queued_gpus]), " GPUs queued · " + a.nodes + " nodes",
      ]);
    });
    if (!parts.length) parts = [el("p", {"class": "alert alert-info"}, ["No GPUs found in the cluster."])];
    box.replaceChildren.apply(box, parts);
  }

  function drawGrid(answer) {
    var grid = $("crater-gpus-grid");
    var sections = [], current = null, row = null, gpuBox = null, lastKey = null, lastGpu = null;
    var names = {};
    answer.accelerators.forEach(function (a) { names[a.slug] = a.display_name; });
    answer.devices.forEach(function (d) {
      if (!current || current.slug !== d.accelerator) {
        current = {slug: d.accelerator, body: el("div", {"class": "mb-3", "data-accelerator-grid": d.accelerator}, [
          el("h2", {"class": "h6 mt-3"}, [names[d.accelerator] || d.accelerator])])};
        sections.push(current.body);
        lastKey = null;
      }
      var key = d.accelerator + "/" + d.node;
      if (key !== lastKey) {
        row = el("div", {"class": "crater-row", "data-node-row": d.node}, [el("div", {"class": "crater-node", title: d.node}, [d.node])]);
        current.body.appendChild(row);
        lastKey = key; lastGpu = null;
      }
      if (d.gpu !== lastGpu) {
        gpuBox = el("div", {"class": "crater-gpu", "data-gpu": d.gpu});
        row.appendChild(gpuBox);
        lastGpu = d.gpu;
      }
      gpuBox.appendChild(cell(d));
    });
    if (!sections.length && answer.accelerators.length) {
      sections = [el("p", {"class": "text-body-secondary"}, ["No GPUs match these filters."])];
    }
    grid.replaceChildren.apply(grid, sections);
    var first = answer.total_rows ? answer.offset + 1 : 0;
    var last = Math.min(answer.offset + answer.limit, answer.total_rows);
    $("crater-gpus-range").textContent = "node rows " + first + "–" + last + " of " + answer.total_rows;
    $("crater-gpus-prev").disabled = answer.offset <= 0;
    $("crater-gpus-next").disabled = last >= answer.total_rows;
  }

  function draw(answer) {
    var note = $("crater-gpus-note");
    note.hidden = !answer.utilization.note;
    note.textContent = answer.utilization.note || "";
    drawSummary(answer);
    drawGrid(answer);
    var time = $("crater-gpus-updated");
    time.dateTime = answer.updated;
    time.textContent = new Date(answer.updated).toLocaleTimeString();
  }

  function query() {
    var q = new URLSearchParams();
    if (state.accelerator) q.set("accelerator", state.accelerator);
    if (state.node) q.set("node", state.node);
    if (state.idle) q.set("idle", "true");
    return q;
  }

  function refresh() {
    window.clearTimeout(timer);
    var mine = ++seq;
    var q = query();
    q.set("offset", state.offset); q.set("limit", state.limit);
    return fetch(cfg.api_url + "gpus?" + q.toString(), {credentials: "same-origin", headers: {"X-XSRFToken": jh.xsrf_token}})
      .then(function (r) {
        return r.json().then(function (body) {
          if (!r.ok) throw new Error(body.message || ("HTTP " + r.status));
          return body;
        });
      })
      .then(function (answer) { if (mine === seq) { draw(answer); $("crater-gpus-error").textContent = ""; } })
      .catch(function (err) { if (mine === seq) $("crater-gpus-error").textContent = "Could not refresh: " + err.message; })
      .then(function () { if (mine === seq) timer = window.setTimeout(refresh, cfg.refresh_seconds * 1000); });
  }

  function changed() {
    state.accelerator = $("crater-filter-accelerator").value;
    state.node = $("crater-filter-node").value.trim();
    state.idle = $("crater-filter-idle").checked;
    state.offset = 0;
    var q = query().toString();
    window.history.replaceState(null, "", window.location.pathname + (q ? "?" + q : ""));
    refresh();
  }

  var select = $("crater-filter-accelerator");
  cfg.accelerators.forEach(function (a) { select.appendChild(el("option", {value: a.slug}, [a.display_name])); });
  select.value = state.accelerator;
  $("crater-filter-node").value = state.node;
  $("crater-filter-idle").checked = state.idle;
  select.addEventListener("change", changed);
  $("crater-filter-idle").addEventListener("change", changed);
  var typing = null;
  $("crater-filter-node").addEventListener("input", function () { window.clearTimeout(typing); typing = window.setTimeout(changed, 300); });
  $("crater-gpus-filters").addEventListener("submit", function (e) { e.preventDefault(); changed(); });
  $("crater-gpus-prev").addEventListener("click", function () { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
  $("crater-gpus-next").addEventListener("click", function () { state.offset += state.limit; refresh(); });
  if (cfg.is_crater_admin) {
    var link = el("a", {href: jh.base_url + "crater/nodes", id: "crater-nodes-link", "class": "small ms-3"}, ["Node load view"]);
    $("crater-gpus-filters").appendChild(el("div", {"class": "col-auto mb-1"}, [link]));
  }
  window.craterNotReloaded = true;
  state.limit = cfg.initial.limit;
  draw(cfg.initial);
  timer = window.setTimeout(refresh, cfg.refresh_seconds * 1000);
})();

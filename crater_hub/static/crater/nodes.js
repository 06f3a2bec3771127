// The node load view (/hub/crater/nodes): one table per node of the page, from
// GET {hub}/api/crater/nodes, redrawn in place on filter changes and every refresh_seconds.
(function () {
  "use strict";
  var cfg = window.crater, jh = window.jhdata;
  var state = {node: "", kind: "", offset: 0, limit: 50};
  var $ = function (id) { return document.getElementById(id); };
  var timer = null, seq = 0;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { if (attrs[k] !== null && attrs[k] !== undefined) node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      node.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    });
    return node;
  }

  function holds(h) {
    return Object.keys(h).map(function (k) { return k + " " + h[k]; }).join(", ");
  }

  function draw(answer) {
    var list = $("crater-nodes-list");
    var parts = answer.nodes.map(function (n) {
      var rows = n.pods.map(function (p) {
        var what = p.kind === "server" ? (p.workload || "default server") : p.kind === "job" ? "job " + p.workload : p.workload;
        return el("tr", {"data-pod": p.namespace + "/" + p.name, "data-kind": p.kind}, [
          el("td", {}, [el("span", {"class": "badge text-bg-secondary"}, [p.kind])]),
          el("td", {}, [p.user || "—"]),
          el("td", {}, [p.link ? el("a", {href: p.link}, [what]) : what]),
          el("td", {"class": "small"}, [p.namespace + "/" + p.name]),
          el("td", {"class": "small"}, [p.phase || ""]),
          el("td", {"class": "small", "data-holds": ""}, [holds(p.holds)]),
        ]);
      });
      var counts = Object.keys(n.counts).map(function (k) { return n.counts[k] + " " + k; }).join(" · ") || "no pods";
      return el("section", {"class": "mb-3", "data-node": n.name}, [
        el("h2", {"class": "h6"}, [n.name, " ", el("small", {"class": "text-body-secondary"}, [counts])]),
        rows.length ? el("table", {"class": "table table-sm"}, [
          el("thead", {}, [el("tr", {}, ["Kind", "User", "Workload", "Pod", "Phase", "Holds"].map(function (h) { return el("th", {scope: "col"}, [h]); }))]),
          el("tbody", {}, rows)]) : null,
      ]);
    });
    list.replaceChildren.apply(list, parts);
    var first = answer.total ? answer.offset + 1 : 0, last = Math.min(answer.offset + answer.limit, answer.total);
    $("crater-nodes-range").textContent = "nodes " + first + "–" + last + " of " + answer.total;
    $("crater-nodes-prev").disabled = answer.offset <= 0;
    $("crater-nodes-next").disabled = last >= answer.total;
  }

  function refresh() {
    window.clearTimeout(timer);
    var mine = ++seq, q = new URLSearchParams({offset: state.offset, limit: state.limit});
    if (state.node) q.set("node", state.node);
    if (state.kind) q.set("kind", state.kind);
    fetch(cfg.api_url + "nodes?" + q, {credentials: "same-origin", headers: {"X-XSRFToken": jh.xsrf_token}})
      .then(function (r) { return r.json().then(function (b) { if (!r.ok) throw new Error(b.message || r.status); return b; }); })
      .then(function (a) { if (mine === seq) { draw(a); $("crater-nodes-error").textContent = ""; } })
      .catch(function (e) { if (mine === seq) $("crater-nodes-error").textContent = "Could not refresh: " + e.message; })
      .then(function () { if (mine === seq) timer = window.setTimeout(refresh, cfg.refresh_seconds * 1000); });
  }

  var kind = $("crater-nodes-kind");
  cfg.kinds.forEach(function (k) { kind.appendChild(el("option", {value: k}, [k])); });
  function changed() { state.node = $("crater-nodes-node").value.trim(); state.kind = kind.value; state.offset = 0; refresh(); }
  kind.addEventListener("change", changed);
  var typing = null;
  $("crater-nodes-node").addEventListener("input", function () { window.clearTimeout(typing); typing = window.setTimeout(changed, 300); });
  $("crater-nodes-filters").addEventListener("submit", function (e) { e.preventDefault(); changed(); });
  $("crater-nodes-prev").addEventListener("click", function () { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
  $("crater-nodes-next").addEventListener("click", function () { state.offset += state.limit; refresh(); });
  refresh();
})();

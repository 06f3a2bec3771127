// crater_hub's Ray page (/hub/crater/ray): the caller's Ray clusters (everyone's for an admin who
// asks), from /hub/api/crater/ray/clusters, redrawn every few seconds; scale and delete in place.
// Rows are updated, not rebuilt, so a worker count being typed survives a refresh.
(function () {
  "use strict";

  var cfg = window.crater || {};
  var jh = window.jhdata || {};
  var api = cfg.api_url || (jh.base_url || "/hub/") + "api/crater/";
  var pages = cfg.pages_url || (jh.base_url || "/hub/") + "crater/";
  var every = 1000 * Number(cfg.refresh_seconds || 5);
  var root = document.getElementById("crater-ray");
  var body = root.querySelector("#crater-ray-clusters tbody");
  var everyone = document.getElementById("crater-ray-all");

  var el = window.craterCommon.el;

  function call(method, path, data) {
    return window.craterCommon.call(method, "ray/clusters" + path, data);
  }

  function showError(e) {
    root.querySelector("[data-crater-error]").textContent = e ? String(e.message || e) : "";
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 90) return seconds + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return Math.round(seconds / 86400) + " d";
  }

  function until(iso) { return (Date.parse(iso) - Date.now()) / 1000; }

  function expiry(c) {
    var why = c.expires_because === "max_lifetime" ? "(its maximum lifetime)" : "unless used";
    return "deleted in " + duration(until(c.expires_at)) + " " + why;
  }

  function act(promise) {
    return promise.then(function () { showError(null); return refresh(); }, showError);
  }

  function dashboardOf(c) { return pages + "ray/" + encodeURIComponent(c.name) + "/dashboard/"; }

  function newRow(c) {
    var row = el("tr", {"data-crater-cluster": c.name});
    ["name", "owner", "state", "workers", "gpus", "age", "lifetime"].forEach(function (k) {
      row.appendChild(el("td", {"data-crater-cell": k}));
    });
    // The dashboard's own page loads through the hub, but the hub's API policy (no scripts, XSRF
    // on reads) keeps its app from running there; its JSON API (jobs, log files) reads fine.
    var dashboard = dashboardOf(c);
    row.appendChild(el("td", {"class": "text-nowrap"}, [
      el("a", {"class": "me-2 crater-ray-dashboard", href: dashboard, target: "_blank",
               rel: "noopener", text: "dashboard"}),
      el("a", {"class": "me-2 crater-ray-jobs", href: dashboard + "api/jobs/", target: "_blank",
               rel: "noopener", text: "jobs"}),
      el("a", {"class": "crater-ray-logs", target: "_blank", rel: "noopener", text: "logs"})]));
    var count = el("input", {"type": "number", "min": "0", "max": String(cfg.max_workers || 8),
                             "class": "form-control form-control-sm d-inline-block crater-ray-count",
                             "style": "width: 5em", "aria-label": "Workers of " + c.name});
    count.value = String(c.workers);
    var scale = el("button", {"type": "button", "class": "btn btn-outline-primary btn-sm ms-1 crater-ray-scale",
                              text: "Scale"});
    scale.addEventListener("click", function () {
      act(call("PATCH", "/" + encodeURIComponent(c.name), {workers: Number(count.value)}));
    });
    var remove = el("button", {"type": "button", "class": "btn btn-outline-danger btn-sm ms-2 crater-ray-delete",
                               text: "Delete"});
    remove.addEventListener("click", function () {
      if (!window.confirm("Delete Ray cluster " + c.name + " and its pods?")) return;
      remove.disabled = true;
      act(call("DELETE", "/" + encodeURIComponent(c.name)));
    });
    row.appendChild(el("td", {"class": "text-nowrap"}, [count, scale, remove]));
    return row;
  }

  function fill(row, c) {
    function cell(k) { return row.querySelector('[data-crater-cell="' + k + '"]'); }
    cell("name").textContent = c.name;
    cell("owner").textContent = c.owner === cfg.user ? "you" : c.owner;
    cell("state").textContent = c.state;
    cell("workers").textContent = c.ready_workers + " of " + c.workers + " ready";
    cell("gpus").textContent = c.gpus ? (c.gpus * c.workers) + " × " + (c.accelerator || "GPU") +
      " (" + c.gpus + " per worker)" : "none";
    cell("age").textContent = c.created ? duration(-until(c.created)) : "";
    var life = cell("lifetime");
    life.textContent = "";
    if (c.lifetime === "idle") {
      life.appendChild(el("span", {text: "idle "}));
      life.appendChild(el("span", {"class": "badge crater-ray-expiry " +
        (c.idle_warning ? "text-bg-warning" : "text-bg-light"),
        "data-crater-warning": c.idle_warning ? "true" : "false", text: expiry(c)}));
    } else {
      life.textContent = "server " + (c.server ? c.server : "(default)");
    }
    var logs = row.querySelector(".crater-ray-logs");  // the head's log files, once it runs
    if (c.head_ip) logs.setAttribute("href", dashboardOf(c) + "api/v0/logs?node_ip=" + encodeURIComponent(c.head_ip));
    else logs.removeAttribute("href");
    row.querySelector(".crater-ray-scale").disabled = c.state === "deleting";
    row.querySelector(".crater-ray-delete").disabled = c.state === "deleting";
    var count = row.querySelector(".crater-ray-count");
    if (document.activeElement !== count && count.getAttribute("data-shown") !== String(c.workers)) {
      count.value = String(c.workers);
    }
    count.setAttribute("data-shown", String(c.workers));
  }

  function draw(clusters) {
    var seen = {};
    clusters.forEach(function (c) {
      seen[c.name] = true;
      var row = body.querySelector('tr[data-crater-cluster="' + c.name + '"]');
      if (!row) { row = newRow(c); body.appendChild(row); }
      fill(row, c);
    });
    Array.prototype.slice.call(body.querySelectorAll("tr")).forEach(function (row) {
      if (!seen[row.getAttribute("data-crater-cluster")]) row.remove();
    });
    document.getElementById("crater-ray-empty").hidden = clusters.length > 0;
    var warned = clusters.filter(function (c) { return c.idle_warning && c.owner === cfg.user; });
    var banner = document.getElementById("crater-ray-warning");
    banner.hidden = !warned.length;
    banner.textContent = warned.map(function (c) {
      return "Ray cluster " + c.name + " will be " + expiry(c) + (c.expires_because === "max_lifetime"
        ? "." : " (run a job or open its dashboard to keep it).");
    }).join(" ");
  }

  function refresh() {
    var query = everyone && everyone.checked ? "?all=1" : "";
    return call("GET", query).then(function (data) {
      draw(data.clusters);
      root.querySelector("[data-crater-updated]").textContent = new Date().toLocaleTimeString();
      return data;
    }, showError);
  }

  if (everyone) everyone.addEventListener("change", refresh);
  refresh();
  window.setInterval(refresh, every);
})();

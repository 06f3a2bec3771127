// crater_hub's dataset pages: /hub/crater/datasets (mine, my groups', shared with me, public and catalog) and
// /hub/crater/admin/datasets (every dataset). window.crater carries the API's URL, the user and
// the refresh period; everything goes through /hub/api/crater/datasets with the xsrf token.
(function () {
  "use strict";

  var cfg = window.crater || {};
  var jh = window.jhdata || {};
  var api = cfg.api_url || (jh.base_url || "/hub/") + "api/crater/";
  var every = 1000 * Number(cfg.refresh_seconds || 5);
  var root = document.getElementById("crater-datasets");
  var admin = root && root.getAttribute("data-crater-page") === "admin";

  var call = window.craterCommon.call;
  var el = window.craterCommon.el;

  function path(d) {
    return "datasets/" + encodeURIComponent(d.owner) + "/" + encodeURIComponent(d.name);
  }

  function showError(e) {
    root.querySelector("[data-crater-error]").textContent = e ? String(e.message || e) : "";
  }

  function member(d) {
    return Boolean(d.group) && (cfg.my_groups || []).indexOf(d.group) >= 0;
  }

  function manageable(d) {
    return !d.catalog && (d.owner === cfg.user || member(d) || cfg.is_crater_admin);
  }

  function sharesCell(d) {
    var cell = el("td");
    var list = el("ul", {"class": "list-unstyled mb-1"});
    var grants = d.shares.groups.map(function (g) { return ["group", g]; })
      .concat(d.shares.users.map(function (u) { return ["user", u]; }));
    grants.forEach(function (grant) {
      var item = el("li", {}, [el("span", {text: grant[0] + " " + grant[1]})]);
      if (manageable(d)) {
        var button = el("button", {"type": "button", "class": "btn btn-link btn-sm p-0 ms-2",
                                   "data-crater-unshare": grant[0] + ":" + grant[1],
                                   "aria-label": "Unshare " + d.ref + " from " + grant[0] + " " + grant[1],
                                   text: "unshare"});
        button.addEventListener("click", function () {
          act(call("DELETE", path(d) + "/shares/" + grant[0] + "/" + encodeURIComponent(grant[1])));
        });
        item.appendChild(button);
      }
      list.appendChild(item);
    });
    if (!grants.length) list.appendChild(el("li", {"class": "text-body-secondary",
      text: d.catalog ? (d.public ? "everyone" : "") : (d.public ? "everyone (public)" : "nobody")}));
    cell.appendChild(list);
    if (manageable(d)) {
      var kind = el("select", {"class": "form-select form-select-sm w-auto crater-share-kind",
                               "aria-label": "Share " + d.ref + " with a"}, [
        el("option", {value: "group", text: "group"}), el("option", {value: "user", text: "user"})]);
      var name = el("input", {"class": "form-control form-control-sm crater-share-name",
                              "list": "crater-group-names", "placeholder": "name",
                              "aria-label": "Name to share " + d.ref + " with"});
      kind.addEventListener("change", function () {
        name.setAttribute("list", kind.value === "user" ? "crater-user-names" : "crater-group-names");
      });
      var add = el("button", {"type": "submit", "class": "btn btn-outline-primary btn-sm crater-share-add",
                              text: "Share"});
      var form = el("form", {"class": "d-flex gap-1"}, [kind, name, add]);
      form.addEventListener("submit", function (ev) {
        ev.preventDefault();
        act(call("POST", path(d) + "/shares", {kind: kind.value, name: name.value.trim()}));
      });
      cell.appendChild(form);
    }
    return cell;
  }

  function row(d) {
    var where = el("ul", {"class": "list-unstyled mb-0 small"});
    (d.mounted || []).forEach(function (w) {
      where.appendChild(el("li", {text: w.what + " of " + w.user + " (" + w.pod + ")"}));
    });
    if (!(d.mounted || []).length) where.appendChild(el("li", {"class": "text-body-secondary", text: "nowhere"}));
    var actions = el("td");
    if (manageable(d)) {
      var del = el("button", {"type": "button", "class": "btn btn-outline-danger btn-sm",
                              "data-crater-delete": d.ref, text: "Delete"});
      del.addEventListener("click", function () {
        if (window.confirm("Delete the dataset " + d.ref + "? Its files stay in the owner's space.")) {
          act(call("DELETE", path(d)));
        }
      });
      actions.appendChild(del);
    }
    return el("tr", {"data-crater-ref": d.ref}, [
      el("td", {}, [el("code", {text: d.catalog ? d.name : d.ref})]),
      el("td", {text: d.catalog ? "catalog" : d.owner}),
      el("td", {text: d.kind + (d.size ? " · " + d.size : "")}),
      el("td", {text: d.description || ""}),
      el("td", {text: d.writable ? "editable" : "read-only"}),
      sharesCell(d),
      el("td", {}, [where]),
      actions,
    ]);
  }

  function section(d) {
    if (admin) return "all";
    if (d.catalog || d.public) return "public";
    if (member(d)) return "groups";
    return d.owner === cfg.user ? "mine" : "shared";
  }

  function draw(model) {
    var bodies = {};
    root.querySelectorAll("table[data-crater-section]").forEach(function (t) {
      bodies[t.getAttribute("data-crater-section")] = t.querySelector("tbody");
      t.querySelector("tbody").textContent = "";
    });
    var counts = {};
    model.datasets.forEach(function (d) {
      var key = section(d);
      if (!bodies[key]) return;
      bodies[key].appendChild(row(d));
      counts[key] = (counts[key] || 0) + 1;
    });
    Object.keys(bodies).forEach(function (key) {
      root.querySelector('[data-crater-empty="' + key + '"]').hidden = Boolean(counts[key]);
    });
    var time = root.querySelector("[data-crater-updated]");
    time.textContent = new Date().toLocaleTimeString();
    time.setAttribute("datetime", new Date().toISOString());
  }

  // an action's refusal stays on the page until the next action; a failed refresh shows until
  // the next refresh that works
  var actionError = null;

  function refresh() {
    return call("GET", "datasets" + (admin ? "?all=1" : "")).then(function (model) {
      draw(model);
      showError(actionError);
    }, showError);
  }

  function act(promise) {
    actionError = null;
    return promise.then(refresh, function (e) {
      actionError = e;
      showError(e);
    });
  }

  var create = document.getElementById("crater-create-form");
  if (create) {
    create.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var body = {name: create.name.value.trim(), description: create.description.value,
                  kind: create.kind.value, editable: create.editable.checked};
      if (create.public && create.public.checked) body.public = true;
      var space = create.space ? create.space.value : "user";
      if (space.indexOf("group:") === 0) {
        body.space = "group";
        body.group = space.slice("group:".length);
      }
      act(call("POST", "datasets", body).then(function () { create.reset(); }));
    });
  }

  refresh();
  window.setInterval(function () {
    // never redraw under someone choosing or typing a share
    var active = document.activeElement;
    var typing = active && /^(INPUT|SELECT)$/.test(active.tagName) &&
      active.closest("table[data-crater-section]");
    if (!typing) refresh();
  }, every);
})();

// crater_hub's image pages: the "Save image" dialog on the home page (data-crater-page=save-image)
// and the library page /hub/crater/images (data-crater-page=images). Everything goes through
// /hub/api/crater/images with the session cookie and the page's xsrf token.
(function () {
  "use strict";
  var cfg = window.crater || {};
  var jh = window.jhdata || {};
  var api = cfg.api_url || (jh.base_url || "/hub/") + "api/crater/";
  var FINAL = ["succeeded", "failed"];

  function call(method, path, body) {
    var init = {method: method, credentials: "same-origin",
                headers: {"X-XSRFToken": jh.xsrf_token || "", "Accept": "application/json"}};
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    return fetch(api + path, init).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!r.ok) throw new Error((data && data.message) || r.status + " " + r.statusText);
        return data;
      });
    });
  }

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function percent(p) { return Math.round(100 * (p || 0)) + "%"; }

  // ---- home page: Save image ---------------------------------------------------------------
  function saveImage(root) {
    // commits off (no registry): say why where the buttons are, and disable them
    call("GET", "images?scope=mine").then(function (lib) {
      if (lib.enabled) return;
      var note = el("p", lib.disabled_reason, "alert alert-warning");
      note.setAttribute("data-crater-disabled", "");
      root.insertBefore(note, root.children[1]);
      root.querySelectorAll("[data-crater-save]").forEach(function (b) { b.disabled = true; });
    });
    var form = document.getElementById("crater-save-form");
    var error = form.querySelector("[data-crater-error]");
    var progress = form.querySelector("[data-crater-progress]");
    var bar = progress.querySelector(".progress-bar");
    var state = progress.querySelector("[data-crater-state]");
    root.querySelectorAll("[data-crater-save]").forEach(function (button) {
      button.addEventListener("click", function () {
        form.server.value = button.getAttribute("data-crater-save");
        form.classList.remove("d-none");
        progress.classList.add("d-none");
        error.textContent = "";
        form.name.focus();
      });
    });
    function follow(id) {
      call("GET", "images/commits/" + id + "?wait=10").then(function (c) {
        bar.style.width = percent(c.progress);
        bar.textContent = percent(c.progress);
        state.textContent = c.state + (c.message ? ": " + c.message : "") +
          (c.state === "succeeded" ? " — " + c.image + " (" + c.digest + ")" : "");
        state.setAttribute("data-state", c.state);
        if (FINAL.indexOf(c.state) < 0) follow(id);
        else form.querySelector("button[type=submit]").disabled = false;
      }, function (e) { error.textContent = e.message; setTimeout(function () { follow(id); }, 2000); });
    }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      error.textContent = "";
      form.querySelector("button[type=submit]").disabled = true;
      call("POST", "images/commits", {server: form.server.value, name: form.name.value.trim(),
                                      tag: form.tag.value.trim(), description: form.description.value})
        .then(function (c) {
          progress.classList.remove("d-none");
          state.textContent = c.state;
          follow(c.id);
        }, function (e) { error.textContent = e.message; form.querySelector("button[type=submit]").disabled = false; });
    });
  }

  // ---- the library page --------------------------------------------------------------------
  function library(root) {
    var error = root.querySelector("[data-crater-error]");
    function draw() {
      return Promise.all([call("GET", "images"), call("GET", "images/commits")]).then(function (res) {
        var lib = res[0], commits = res[1].commits;
        var disabled = root.querySelector("[data-crater-disabled]");
        disabled.classList.toggle("d-none", lib.enabled);
        disabled.textContent = lib.disabled_reason || "";
        var body = root.querySelector("#crater-commits tbody");
        body.replaceChildren();
        commits.forEach(function (c) {
          var tr = el("tr");
          tr.setAttribute("data-commit", c.id);
          [c.image, c.server || "(default)", c.state, percent(c.progress), c.message || ""].forEach(function (t) {
            tr.appendChild(el("td", t));
          });
          body.appendChild(tr);
        });
        var rows = root.querySelector("#crater-library tbody");
        rows.replaceChildren();
        lib.images.forEach(function (i) {
          var tr = el("tr");
          tr.setAttribute("data-image", i.image);
          [i.image, i.kind === "admin" ? "admin" : (i.owner === jh.user ? "mine" : (i.public ? "public" : "shared")),
           (i.digest || "").slice(0, 19), i.size_display || "", i.source.type + (i.source.server !== undefined ? " of " + (i.source.server || "default") : ""),
           i.shared_with.groups.concat(i.shared_with.users).join(", ")].forEach(function (t) { tr.appendChild(el("td", t)); });
          var actions = el("td");
          if (i.kind === "user" && i.owner === jh.user) {
            var share = el("button", "Share", "btn btn-sm btn-outline-secondary me-1");
            share.addEventListener("click", function () {
              var groups = window.prompt("Share with groups (comma separated)", i.shared_with.groups.join(", "));
              if (groups === null) return;
              call("PUT", "images/" + i.id + "/shares", {groups: groups.split(",").map(function (g) { return g.trim(); })
                .filter(Boolean)}).then(draw, function (e) { error.textContent = e.message; });
            });
            var del = el("button", "Delete", "btn btn-sm btn-outline-danger");
            del.addEventListener("click", function () {
              if (window.confirm("Delete " + i.image + "?")) call("DELETE", "images/" + i.id).then(draw, function (e) { error.textContent = e.message; });
            });
            actions.appendChild(share);
            actions.appendChild(del);
          }
          tr.appendChild(actions);
          rows.appendChild(tr);
        });
        error.textContent = "";
      }, function (e) { error.textContent = e.message; });
    }
    root.querySelector("#crater-import").addEventListener("submit", function (ev) {
      ev.preventDefault();
      call("POST", "images", {image: ev.target.image.value.trim()}).then(draw, function (e) { error.textContent = e.message; });
    });
    draw();
    setInterval(draw, 5000);
  }

  var save = document.querySelector("[data-crater-page=save-image]");
  if (save) saveImage(save);
  var lib = document.querySelector("[data-crater-page=images]");
  if (lib) library(lib);
})();

// crater_hub's job pages: /hub/crater/jobs (my jobs, submit form), /hub/crater/jobs/{id} (one job)
// and /hub/crater/admin/jobs (every queue and job). The page's root element names which one
// (data-crater-page); window.crater carries the API's URL and the refresh period.
//
// Everything goes through the REST API (/hub/api/crater/...) with the session cookie and the
// page's xsrf token in X-XSRFToken, as JupyterHub requires of cookie-authenticated API calls.
(function () {
  "use strict";

  var cfg = window.crater || {};
  var jh = window.jhdata || {};
  var api = cfg.api_url || (jh.base_url || "/hub/") + "api/crater/";
  var pages = cfg.pages_url || (jh.base_url || "/hub/") + "crater/";
  var every = 1000 * Number(cfg.refresh_seconds || 5);
  var FINAL = ["succeeded", "failed", "cancelled", "preempted"];
  var BADGES = {
    queued: "text-bg-secondary", admitted: "text-bg-info", running: "text-bg-primary",
    succeeded: "text-bg-success", failed: "text-bg-danger", cancelled: "text-bg-warning",
    preempted: "text-bg-warning",
  };

  // ---- the API ------------------------------------------------------------------------------

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }
  ApiError.prototype.toString = function () { return this.message; };

  function headers(extra) {
    return Object.assign({"X-XSRFToken": jh.xsrf_token || ""}, extra || {});
  }

  // The reply's JSON message (our errors and JupyterHub's alike), else its status.
  function failure(r) {
    return r.text().then(function (text) {
      var message = "";
      try { message = JSON.parse(text).message; } catch (e) { message = ""; }
      throw new ApiError(r.status, message || r.status + " " + (r.statusText || "error"));
    });
  }

  function call(method, path, body) {
    var init = {method: method, credentials: "same-origin", headers: headers({"Accept": "application/json"})};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    return fetch(api + path, init).then(function (r) {
      if (!r.ok) return failure(r);
      return r.status === 204 ? null : r.json();
    });
  }

  function text(path) {
    return fetch(api + path, {credentials: "same-origin", headers: headers()}).then(function (r) {
      return r.ok ? r.text() : failure(r);
    });
  }

  // ---- formatting -----------------------------------------------------------------------------

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

  function isFinal(job) { return FINAL.indexOf(job.state) >= 0; }

  function when(iso) {
    if (!iso) return "—";
    return new Date(iso).toLocaleString();
  }

  function timeEl(iso) {
    return iso ? el("time", {datetime: iso, title: iso}, [when(iso)]) : "—";
  }

  function seconds(s) {
    s = Math.max(0, Math.round(s));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }

  // A time limit (the API's max_runtime, seconds) in minutes, the unit of the form.
  function minutes(s) {
    if (s === null || s === undefined) return "—";
    var m = s / 60;
    return (Number.isInteger(m) ? String(m) : m.toFixed(1)) + " min";
  }

  function duration(job) {
    if (!job.started) return "—";
    var end = job.finished ? new Date(job.finished) : new Date();
    return seconds((end - new Date(job.started)) / 1000);
  }

  function gpus(job) {
    if (!job.gpus) return "—";
    return job.gpus + (job.accelerator ? " × " + job.accelerator : "");
  }

  function stateBadge(job) {
    return el("span", {"class": "badge " + (BADGES[job.state] || "text-bg-light"), "data-state": job.state},
              [job.state]);
  }

  // The command as the user gave it: a shell line (stored as sh -c LINE) as typed, a list of
  // arguments as a shell would read it back (arguments with spaces or quotes quoted).
  function command(job) {
    if (!Array.isArray(job.command)) return String(job.command || "");
    if (job.command.length === 3 && job.command[0] === "sh" && job.command[1] === "-c") return job.command[2];
    return job.command.map(function (arg) {
      return /^[\w@%+=:,.\/-]+$/.test(arg) ? arg : "'" + String(arg).replace(/'/g, "'\\''") + "'";
    }).join(" ");
  }

  function setUpdated(root, error) {
    var time = root.querySelector("[data-crater-updated]");
    var now = new Date();
    if (!error) {
      time.dateTime = now.toISOString();
      time.textContent = now.toLocaleTimeString();
    }
    root.querySelector("[data-crater-error]").textContent =
      error ? "Could not refresh (" + error.message + "); retrying." : "";
  }

  // Polls fn (returning a promise) every `every` ms, skipping while the tab is hidden, until
  // stopped() says there is nothing more to follow.
  function poll(fn, stopped) {
    stopped = stopped || function () { return false; };
    function next() {
      if (!stopped()) window.setTimeout(tick, every);
    }
    function tick() {
      if (stopped()) return;
      (document.hidden ? Promise.resolve() : fn()).catch(function () {}).then(next);
    }
    return fn().catch(function () {}).then(next);
  }

  function cancelButton(job, onDone, onError) {
    var button = el("button", {
      type: "button", "class": "btn btn-sm btn-outline-danger", "data-cancel": job.id,
      "aria-label": "Cancel job " + job.id,
    }, ["Cancel"]);
    button.addEventListener("click", function () {
      if (!window.confirm("Cancel job " + job.id + (job.name ? " (" + job.name + ")" : "") + "?")) return;
      button.disabled = true;
      call("DELETE", "jobs/" + job.id).then(onDone, function (err) {
        button.disabled = false;
        onError(err);
      });
    });
    return button;
  }

  // The table of jobs (my jobs, or all of them with owner/queue/priority for the admin page).
  function drawJobs(root, jobs, admin, refresh) {
    var tbody = root.querySelector("#crater-jobs-table tbody");
    var rows = jobs.map(function (job) {
      var link = el("a", {href: pages + "jobs/" + job.id}, [String(job.id)]);
      var cells = [el("th", {scope: "row"}, [link])];
      if (admin) cells.push(el("td", {"data-field": "owner"}, [job.owner]));
      cells.push(el("td", {"data-field": "name"}, [job.name || ""]));
      if (admin) {
        cells.push(el("td", {"data-field": "queue"}, [job.queue || "—"]));
        cells.push(el("td", {"data-field": "priority"}, [job.priority || "—"]));
      }
      cells.push(
        el("td", {"data-field": "state", title: job.reason || null}, [stateBadge(job),
          job.reason && isFinal(job) ? el("div", {"class": "small text-body-secondary"}, [job.reason]) : null,
          job.state === "queued" && job.waiting
            ? el("div", {"class": "small text-body-secondary", "data-waiting": ""}, [job.waiting]) : null]),
        el("td", {"data-field": "position"}, [job.position === null || job.position === undefined ? "—" : job.position]),
        el("td", {"data-field": "estimated_start"}, [job.state === "queued" ? timeEl(job.estimated_start) : "—"]),
        el("td", {"data-field": "gpus"}, [gpus(job)]),
        el("td", {"data-field": "submitted"}, [timeEl(job.submitted)]),
        el("td", {"data-field": "duration"}, [duration(job)]),
        el("td", {}, [isFinal(job) ? null : cancelButton(job, refresh, function (err) {
          setUpdated(root, err);
          window.alert("Could not cancel job " + job.id + ": " + err.message);
        })])
      );
      return el("tr", {"data-job-id": job.id, "data-state": job.state}, cells);
    });
    tbody.replaceChildren.apply(tbody, rows);
    root.querySelector("#crater-jobs-empty").hidden = rows.length > 0;
  }

  // ---- /hub/crater/jobs ---------------------------------------------------------------------------

  function jobsPage(root) {
    var form = root.querySelector("#crater-submit");
    var profileSelect = form.querySelector("#crater-job-profile");
    var accSelect = form.querySelector("#crater-job-accelerator");
    var gpuSelect = form.querySelector("#crater-job-gpus");
    var prioritySelect = form.querySelector("#crater-job-priority");
    var envRows = form.querySelector("#crater-job-env");
    var submitError = form.querySelector("#crater-submit-error");
    var submitResult = form.querySelector("#crater-submit-result");
    var offer = {profiles: []};
    var NO_GPU = "";

    function profile() {
      return offer.profiles.filter(function (p) { return p.slug === profileSelect.value; })[0];
    }

    function accelerator() {
      var p = profile();
      return p && p.accelerators.filter(function (a) { return a.slug === accSelect.value; })[0];
    }

    function option(value, label, selected) {
      var o = el("option", {value: value}, [label]);
      if (selected) o.selected = true;
      return o;
    }

    // Count choices are not disabled: a job asks for what it needs and waits in the queue
    // until the cluster and the user's quota allow it. The label says what is free now.
    function fillCounts() {
      var a = accelerator();
      var keep = gpuSelect.value;
      var counts = a ? a.counts : [];
      gpuSelect.replaceChildren.apply(gpuSelect, counts.map(function (c) {
        return option(String(c.count), String(c.count) + (c.available ? "" : " (waits: " + c.reason + ")"),
                      String(c.count) === keep);
      }));
      gpuSelect.disabled = !a;
    }

    function fillAccelerators() {
      var p = profile();
      var keep = accSelect.value;
      var options = (p ? p.accelerators : []).map(function (a) {
        var label = a.display_name + (a.memory ? " (" + a.memory + ")" : "") + " — " + a.free + " / " + a.total + " free now";
        return option(a.slug, label, a.slug === keep);
      });
      if (p && (p.allow_cpu_only || !p.accelerators.length)) options.push(option(NO_GPU, "No GPU", keep === NO_GPU));
      accSelect.replaceChildren.apply(accSelect, options);
      root.querySelectorAll("[data-crater-gpu-fields]").forEach(function (box) {
        box.hidden = !(p && p.accelerators.length);
      });
      fillCounts();
    }

    function fillProfiles() {
      var keep = profileSelect.value;
      var chosen = keep || (offer.profiles.filter(function (p) { return p.default; })[0] || offer.profiles[0] || {}).slug;
      profileSelect.replaceChildren.apply(profileSelect, offer.profiles.map(function (p) {
        return option(p.slug, p.display_name, p.slug === chosen);
      }));
      fillProfileDetails();
    }

    function fillProfileDetails() {
      var p = profile();
      form.querySelector("#crater-job-profile-about").textContent = p ? p.description || "" : "";
      var images = form.querySelector("#crater-job-images");
      images.replaceChildren.apply(images, (p ? p.images : []).map(function (i) {
        return el("option", {value: i.image}, [i.display_name]);
      }));
      fillAccelerators();
    }

    // The priority classes this user may choose, as the page was given them; the hub's
    // default is preselected. Without them, only "Default" (the hub picks).
    function fillPriorities() {
      var classes = cfg.priorities || [];
      var options = classes.map(function (p) {
        return option(p.name, p.name + (p.default ? " (default)" : "") + (p.best_effort ? " — may be preempted" : ""),
                      p.default);
      });
      if (!classes.some(function (p) { return p.default; })) options.unshift(option("", "Default", true));
      prioritySelect.replaceChildren.apply(prioritySelect, options);
    }

    function loadOffer() {
      return call("GET", "profiles").then(function (model) {
        offer = model;
        fillProfiles();
        if (!model.profiles.length) {
          showError(model.note ? "No profile is available to you: " + model.note + "."
                               : "No profile is available to you. Ask an administrator to grant you one.");
        }
      });
    }

    function addEnvRow(name, value) {
      var n = envRows.children.length;
      var row = el("div", {"class": "row g-2 mb-2", "data-env-row": ""}, [
        el("div", {"class": "col-4"}, [el("input", {
          "class": "form-control form-control-sm font-monospace", name: "env-name", "aria-label": "Variable " + (n + 1) + " name",
          placeholder: "NAME", autocomplete: "off", value: name || "",
        })]),
        el("div", {"class": "col-6"}, [el("input", {
          "class": "form-control form-control-sm font-monospace", name: "env-value", "aria-label": "Variable " + (n + 1) + " value",
          placeholder: "value", autocomplete: "off", value: value || "",
        })]),
        el("div", {"class": "col-2"}, [el("button", {
          type: "button", "class": "btn btn-sm btn-outline-secondary", "data-env-remove": "",
          "aria-label": "Remove variable " + (n + 1),
        }, ["Remove"])]),
      ]);
      row.querySelector("[data-env-remove]").addEventListener("click", function () { row.remove(); });
      envRows.appendChild(row);
      return row;
    }

    function showError(message) {
      submitError.textContent = message;
      submitError.hidden = !message;
    }

    // The time limit is whole minutes in the form (the API's max_runtime is seconds): checked
    // here, and a refusal of max_runtime by the API is told in minutes too.
    var maxMinutes = cfg.max_runtime_minutes;
    function limitRule() {
      return "Time limit: enter a whole number of minutes from 1 to " + maxMinutes +
             ", or leave it empty for the default (" + minutes(cfg.default_runtime) + ")";
    }
    function checkLimit() {
      var value = form.querySelector("#crater-job-max-runtime").value.trim();
      if (!value) return "";
      if (!/^[0-9]+$/.test(value) || Number(value) < 1 || (maxMinutes && Number(value) > maxMinutes)) {
        return limitRule() + "; got " + value + ".";
      }
      return "";
    }
    function submitFailure(err) {
      return /^max_runtime\b/.test(err.message || "") ? limitRule() + "." : err.message;
    }

    function spec() {
      var body = {profile: profileSelect.value, command: form.querySelector("#crater-job-command").value.trim()};
      var p = profile();
      if (p && p.accelerators.length && accSelect.value !== NO_GPU) {
        body.accelerator = accSelect.value;
        body.gpus = Number(gpuSelect.value || 0);
      } else {
        body.accelerator = null;
        body.gpus = 0;
      }
      ["name", "image"].forEach(function (field) {
        var value = form.querySelector("#crater-job-" + field).value.trim();
        if (value) body[field] = value;
      });
      if (prioritySelect.value) body.priority = prioritySelect.value;
      var limit = form.querySelector("#crater-job-max-runtime").value.trim();
      if (limit) body.max_runtime = Number(limit) * 60;
      var env = {};
      envRows.querySelectorAll("[data-env-row]").forEach(function (row) {
        var name = row.querySelector("[name=env-name]").value.trim();
        if (name) env[name] = row.querySelector("[name=env-value]").value;
      });
      if (Object.keys(env).length) body.env = env;
      return body;
    }

    // the list comes in pages: the newest PAGE jobs, more when asked ("Load more")
    var PAGE = 50;
    var shown = PAGE;
    var more = root.querySelector("#crater-jobs-more");

    function refresh() {
      return call("GET", "jobs?limit=" + shown).then(function (model) {
        drawJobs(root, model.jobs, false, refresh);
        more.hidden = model.next_offset === null || model.next_offset === undefined;
        setUpdated(root);
      }, function (err) { setUpdated(root, err); throw err; });
    }

    more.addEventListener("click", function () {
      shown = Math.min(shown + PAGE, 1000);
      refresh().catch(function () {});
    });

    form.querySelector("#crater-job-env-add").addEventListener("click", function () {
      addEnvRow().querySelector("input").focus();
    });
    profileSelect.addEventListener("change", fillProfileDetails);
    accSelect.addEventListener("change", fillCounts);
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      showError("");
      submitResult.textContent = "";
      var body = spec();
      if (!body.command) {
        showError("command: enter the command to run.");
        return;
      }
      var limitError = checkLimit();
      if (limitError) {
        showError(limitError);
        form.querySelector("#crater-job-max-runtime").focus();
        return;
      }
      var button = form.querySelector("#crater-job-submit");
      button.disabled = true;
      call("POST", "jobs", body).then(function (job) {
        var where = job.position ? ", position " + job.position + " in the queue" : "";
        submitResult.replaceChildren(
          "Submitted ", el("a", {href: pages + "jobs/" + job.id, "data-submitted-job": job.id}, ["job " + job.id]),
          ": " + job.state + where + ".");
        return refresh();
      }).catch(function (err) {
        showError(submitFailure(err));
      }).then(function () { button.disabled = false; });
    });

    fillPriorities();
    loadOffer().catch(function (err) { showError("Could not load your profiles: " + err.message); });
    poll(refresh);
    window.setInterval(function () { if (!document.hidden) loadOffer().catch(function () {}); }, 6 * every);
  }

  // ---- /hub/crater/jobs/{id} ----------------------------------------------------------------------

  function jobPage(root) {
    var id = Number(root.dataset.jobId);
    var logs = root.querySelector("#crater-job-logs");
    var logStatus = root.querySelector("#crater-job-logs-status");
    var cancel = root.querySelector("#crater-job-cancel");
    var job = null;
    var following = false;
    var gone = false;

    function details(j) {
      var env = Object.keys(j.env || {}).map(function (k) { return k + "=" + j.env[k]; }).join("\n");
      var rows = [
        ["Owner", j.owner], ["Profile", j.profile], ["GPUs", gpus(j)], ["CPU", j.cpu], ["Memory", j.memory],
        ["Image", j.image], ["Command", command(j)], ["Environment", env || "—"], ["Priority", j.priority],
        ["Time limit", minutes(j.max_runtime)],
        ["Queue", j.queue], ["Position", j.position], ["Estimated start", j.state === "queued" ? timeEl(j.estimated_start) : "—"],
        ["Waiting", j.state === "queued" ? j.waiting : null],
        ["Submitted", timeEl(j.submitted)], ["Admitted", timeEl(j.admitted)], ["Started", timeEl(j.started)],
        ["Finished", timeEl(j.finished)], ["Duration", duration(j)], ["Exit code", j.exit_code],
        ["Kubernetes Job", j.k8s_job],
      ];
      var dl = root.querySelector("#crater-job-details");
      var items = [];
      rows.forEach(function (r) {
        var value = r[1] === null || r[1] === undefined || r[1] === "" ? "—" : r[1];
        var key = r[0].toLowerCase().replace(/ /g, "-");
        items.push(el("dt", {"class": "col-sm-4"}, [r[0]]));
        items.push(el("dd", {"class": "col-sm-8 text-break" + (r[0] === "Command" || r[0] === "Environment" ? " font-monospace" : ""),
                             "data-detail": key, style: "white-space: pre-wrap"}, [value]));
      });
      dl.replaceChildren.apply(dl, items);
      var tbody = root.querySelector("#crater-job-transitions tbody");
      tbody.replaceChildren.apply(tbody, (j.transitions || []).map(function (t) {
        return el("tr", {}, [el("td", {}, [t.state]), el("td", {}, [t.reason || ""]), el("td", {}, [timeEl(t.at)])]);
      }));
    }

    function draw(j) {
      job = j;
      root.querySelector("#crater-job-body").hidden = false;
      root.querySelector("[data-crater-field=name]").textContent = j.name ? "· " + j.name : "";
      var badge = root.querySelector("#crater-job-state");
      badge.className = "badge fs-6 " + (BADGES[j.state] || "text-bg-light");
      badge.dataset.state = j.state;
      badge.textContent = j.state;
      var summary = [];
      if (j.state === "queued") {
        if (j.position) summary.push("Position " + j.position + " in the queue");
        if (j.estimated_start) summary.push("estimated to start at " + when(j.estimated_start));
      }
      if (j.reason) summary.push(j.reason);
      if (j.exit_code !== null && j.exit_code !== undefined) summary.push("exit code " + j.exit_code);
      root.querySelector("#crater-job-summary").textContent = summary.length ? summary.join(" · ") + "." : "";
      var waiting = root.querySelector("#crater-job-waiting");
      waiting.textContent = j.state === "queued" && j.waiting ? "Waiting: " + j.waiting + "." : "";
      waiting.hidden = !waiting.textContent;
      cancel.hidden = isFinal(j);
      details(j);
    }

    function atBottom() { return logs.scrollHeight - logs.scrollTop - logs.clientHeight < 20; }
    function showLogs(textValue, append) {
      var stick = atBottom();
      if (append) logs.textContent += textValue; else logs.textContent = textValue;
      if (stick) logs.scrollTop = logs.scrollHeight;
    }

    // While the job runs: follow its output as it is written (logs?follow=1, a streamed reply),
    // starting from the last 1000 lines. When the stream ends, the job is read again; a job
    // still running is followed again, a finished one gets its final output.
    function follow() {
      if (following || gone) return;
      following = true;
      logStatus.textContent = "following";
      fetch(api + "jobs/" + id + "/logs?tail=1000&follow=1", {credentials: "same-origin", headers: headers()})
        .then(function (r) {
          if (!r.ok) return failure(r);
          var first = true;
          var decoder = new TextDecoder();
          if (!r.body || !r.body.getReader) {
            return r.text().then(function (t) { showLogs(t, false); });
          }
          var reader = r.body.getReader();
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done) return;
              showLogs(decoder.decode(chunk.value, {stream: true}), !first);
              first = false;
              return pump();
            });
          }
          return pump();
        })
        .catch(function (err) { logStatus.textContent = "could not follow the output (" + err.message + ")"; })
        .then(function () {
          // read the job again shortly: finished, its final output; still running, follow again
          window.setTimeout(function () {
            following = false;
            load().catch(function () {});
          }, 1000);
        });
    }

    function finalLogs() {
      return text("jobs/" + id + "/logs?tail=1000").then(function (t) {
        showLogs(t, false);
        logStatus.textContent = t ? "" : "no output";
      }, function (err) { logStatus.textContent = "output unavailable (" + err.message + ")"; });
    }

    function events() {
      return call("GET", "jobs/" + id + "/events").then(function (model) {
        var tbody = root.querySelector("#crater-job-events tbody");
        tbody.replaceChildren.apply(tbody, model.events.map(function (e) {
          return el("tr", {"data-event-reason": e.reason}, [
            el("td", {}, [timeEl(e.at)]), el("td", {}, [e.type]), el("td", {}, [e.reason]),
            el("td", {}, [e.object || ""]), el("td", {}, [e.message || ""]),
          ]);
        }));
        root.querySelector("#crater-job-events-empty").hidden = model.events.length > 0;
      });
    }

    var finished = false;
    function load() {
      if (gone) return Promise.resolve();
      return call("GET", "jobs/" + id).then(function (j) {
        draw(j);
        setUpdated(root);
        if (isFinal(j)) {
          if (!finished) {  // once: the final output and events
            finished = true;
            return Promise.all([finalLogs(), events().catch(function () {})]);
          }
          return null;
        }
        if (j.state === "running") follow();
        else if (!following) logStatus.textContent = "waiting for the job to start";
        return events().catch(function () {});
      }, function (err) {
        if (err.status === 404) {
          // not there (or not yours): said once, in its own box; nothing more is asked
          gone = true;
          var missing = root.querySelector("#crater-job-missing");
          missing.textContent = (err.message || "No job " + id) +
            ": it does not exist, or it is not yours. This page no longer refreshes.";
          missing.hidden = false;
          root.querySelector("#crater-job-body").hidden = true;
          root.querySelector("#crater-job-status").hidden = true;
          cancel.hidden = true;
          return null;
        }
        setUpdated(root, err);
        throw err;
      });
    }

    cancel.addEventListener("click", function () {
      if (!job || !window.confirm("Cancel job " + id + (job.name ? " (" + job.name + ")" : "") + "?")) return;
      cancel.disabled = true;
      call("DELETE", "jobs/" + id).then(draw, function (err) {
        setUpdated(root, err);
        window.alert("Could not cancel job " + id + ": " + err.message);
      }).then(function () { cancel.disabled = false; return load(); });
    });

    poll(load, function () { return finished || gone; });
  }

  // ---- /hub/crater/admin/jobs ---------------------------------------------------------------------

  function adminPage(root) {
    var filter = root.querySelector("#crater-admin-filter");
    var ACTIVE = ["queued", "admitted", "running"];

    function drawQueues(active) {
      var queues = {};
      active.forEach(function (j) {
        var name = j.queue || "default";
        var q = queues[name] = queues[name] || {queued: 0, admitted: 0, running: 0, gpusRunning: 0, gpusWaiting: 0, users: {}};
        q[j.state] += 1;
        if (j.state === "queued") q.gpusWaiting += j.gpus || 0; else q.gpusRunning += j.gpus || 0;
        q.users[j.owner] = true;
      });
      var tbody = root.querySelector("#crater-queues-table tbody");
      var rows = Object.keys(queues).sort().map(function (name) {
        var q = queues[name];
        return el("tr", {"data-queue": name}, [
          el("th", {scope: "row"}, [name]), el("td", {"data-field": "queued"}, [q.queued]),
          el("td", {"data-field": "admitted"}, [q.admitted]), el("td", {"data-field": "running"}, [q.running]),
          el("td", {}, [q.gpusRunning]), el("td", {}, [q.gpusWaiting]),
          el("td", {}, [Object.keys(q.users).length]),
        ]);
      });
      tbody.replaceChildren.apply(tbody, rows);
      root.querySelector("#crater-queues-empty").hidden = rows.length > 0;
    }

    function query(states) {
      return "jobs?all=1" + states.map(function (s) { return "&state=" + encodeURIComponent(s); }).join("");
    }

    function refresh() {
      var shown = filter.value;
      var states = shown === "active" ? ACTIVE : shown === "all" ? [] : [shown];
      var active = call("GET", query(ACTIVE));
      var listed = shown === "active" ? active : call("GET", query(states));
      return Promise.all([active, listed]).then(function (models) {
        drawQueues(models[0].jobs);
        drawJobs(root, models[1].jobs, true, refresh);
        setUpdated(root);
      }, function (err) { setUpdated(root, err); throw err; });
    }

    filter.addEventListener("change", function () { refresh().catch(function () {}); });
    poll(refresh);
  }

  var root = document.querySelector("[data-crater-page]");
  if (!root) return;
  ({jobs: jobsPage, job: jobPage, admin: adminPage})[root.dataset.craterPage](root);
})();

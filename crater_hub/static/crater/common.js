// What every crater_hub page script shares (loaded before it by crater/scripted_page.html):
// window.craterCommon.call — the REST API with the session cookie and the page's xsrf token (as
// JupyterHub requires of cookie-authenticated API calls), failing with the API's own `message` —
// and .el, a DOM element from a tag, attributes (`text` sets its text) and children.
(function () {
  "use strict";

  var cfg = window.crater || {};
  var jh = window.jhdata || {};
  var api = cfg.api_url || (jh.base_url || "/hub/") + "api/crater/";

  function call(method, path, body) {
    var init = {method: method, credentials: "same-origin",
                headers: {"X-XSRFToken": jh.xsrf_token || "", "Accept": "application/json"}};
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    return fetch(api + path, init).then(function (r) {
      if (r.ok) return r.status === 204 ? null : r.json();
      return r.text().then(function (text) {
        var message = "";
        try { message = JSON.parse(text).message; } catch (e) { message = ""; }
        throw new Error(message || r.status + " " + r.statusText);
      });
    });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  window.craterCommon = {api: api, call: call, el: el};
})();

/* Contributor pages: the upload form's progress bar (XHR upload progress) and the live status of
   an upload (polls its JSON). Without JavaScript the form posts and the status page reloads. */
(function () {
  "use strict";
  var enhancers = window.hubEnhancers = window.hubEnhancers || {};

  enhancers.upload = function (form) {
    var progress = form.querySelector("[data-progress]");
    var bar = progress.querySelector(".progress");
    var fill = bar.querySelector("span");
    var text = form.querySelector("[data-progress-text]");
    var submit = form.querySelector("[data-submit]");
    var formError = form.querySelector("[data-form-error]");
    var dropzone = form.querySelector("[data-dropzone]");

    if (dropzone) {
      ["dragenter", "dragover"].forEach(function (name) {
        dropzone.addEventListener(name, function () { dropzone.classList.add("is-over"); });
      });
      ["dragleave", "drop"].forEach(function (name) {
        dropzone.addEventListener(name, function () { dropzone.classList.remove("is-over"); });
      });
    }

    function showErrors(errors) {
      form.querySelectorAll("[data-errors-for]").forEach(function (list) { list.innerHTML = ""; });
      formError.hidden = true;
      Object.keys(errors || {}).forEach(function (field) {
        var list = form.querySelector('[data-errors-for="' + field + '"]');
        var messages = errors[field].map(function (e) { return e.message || e; });
        if (list) {
          messages.forEach(function (m) { var li = document.createElement("li"); li.textContent = m; list.appendChild(li); });
        } else {
          formError.textContent = messages.join(" ");
          formError.hidden = false;
        }
      });
      var first = form.querySelector("[data-errors-for] li, [data-form-error]:not([hidden])");
      if (first) first.scrollIntoView({ block: "center" });
    }

    function setProgress(percent, label) {
      fill.style.width = percent + "%";
      bar.setAttribute("aria-valuenow", String(Math.round(percent)));
      text.textContent = label || Math.round(percent) + "%";
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      xhr.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) setProgress((e.loaded / e.total) * 100);
      });
      xhr.upload.addEventListener("load", function () { setProgress(100, "Uploaded, validating…"); });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status === 202 && body && body.url) {
          window.location.assign(body.url);
          return;
        }
        submit.disabled = false;
        progress.hidden = true;
        if (body && body.errors) showErrors(body.errors);
        else showErrors({ __all__: ["The upload failed (HTTP " + xhr.status + "). Please try again."] });
      });
      xhr.addEventListener("error", function () {
        submit.disabled = false;
        progress.hidden = true;
        showErrors({ __all__: ["The connection was lost during the upload. Please try again."] });
      });
      submit.disabled = true;
      progress.hidden = false;
      setProgress(0);
      xhr.send(new FormData(form));
    });
  };

  enhancers["upload-status"] = function (root) {
    if (root.getAttribute("data-final") === "true") return;
    var url = root.getAttribute("data-status-url");
    var badge = document.querySelector("[data-status]");
    var list = root.querySelector("[data-checks]");
    var message = root.querySelector("[data-message]");
    var actions = root.querySelector("[data-published-actions]");
    var delay = 1000;

    function render(state) {
      badge.textContent = state.status;
      badge.className = "status status-" + state.status;
      if (state.message) message.textContent = state.message;
      list.innerHTML = "";
      state.report.forEach(function (check) {
        var li = document.createElement("li");
        li.className = check.ok === true ? "check-ok" : check.ok === false ? "check-fail" : "check-pending";
        li.setAttribute("data-check", check.name);
        var icon = document.createElement("span");
        icon.className = "check-icon";
        icon.setAttribute("aria-hidden", "true");
        icon.textContent = check.ok === true ? "✓" : check.ok === false ? "✕" : "…";
        var body = document.createElement("div");
        var name = document.createElement("div");
        name.className = "check-name";
        name.textContent = check.name;
        var detail = document.createElement("div");
        detail.className = "check-message";
        detail.textContent = check.message || "";
        body.appendChild(name);
        body.appendChild(detail);
        var time = document.createElement("span");
        time.className = "check-time";
        time.textContent = check.duration_ms ? Math.round(check.duration_ms) + " ms" : "";
        li.appendChild(icon);
        li.appendChild(body);
        li.appendChild(time);
        list.appendChild(li);
      });
      if (state.adapter_url) {
        actions.querySelector("[data-adapter-link]").href = state.adapter_url;
        actions.querySelector("[data-adapter-link]").textContent = "View " + state.adapter;
        actions.querySelector("[data-download-link]").href = state.download_url;
        actions.hidden = false;
      }
      if (state.final && window.hubAnnounce) window.hubAnnounce("Upload " + state.status);
    }

    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (state) {
          render(state);
          if (!state.final) { delay = Math.min(delay * 1.3, 5000); window.setTimeout(poll, delay); }
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    }
    window.setTimeout(poll, 500);
  };
})();

/* AdapterHub pages: progressive enhancement only. Every feature here has a plain-HTML path:
   links and GET forms that work without JavaScript and give each state its own URL. */
(function () {
  "use strict";

  var announcer = function (text) {
    var live = document.getElementById("announcer");
    if (live) { live.textContent = ""; window.setTimeout(function () { live.textContent = text; }, 30); }
  };

  /* ---- Copy buttons: data-copy="text" or data-copy-target="#id" ---- */
  function copyText(text) {
    window.hubLastCopied = text; // read by the browser tests
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return legacyCopy(text); });
    }
    return legacyCopy(text);
  }
  function legacyCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
    document.body.removeChild(area);
    return Promise.resolve();
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy], [data-copy-target]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    if (text === null) {
      var target = document.querySelector(button.getAttribute("data-copy-target"));
      text = target ? target.textContent.trim() + (target.tagName === "PRE" ? "\n" : "") : "";
    }
    copyText(text).then(function () {
      var label = button.textContent;
      button.classList.add("is-copied");
      button.textContent = "Copied";
      announcer("Copied to the clipboard");
      window.setTimeout(function () { button.classList.remove("is-copied"); button.textContent = label; }, 1600);
    });
  });

  /* ---- Tabs (the load snippets) ---- */
  function setupTabs(root) {
    var tabs = Array.prototype.slice.call(root.querySelectorAll('[role="tab"]'));
    function select(tab, focus) {
      tabs.forEach(function (t) {
        var on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        t.tabIndex = on ? 0 : -1;
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
      if (focus) tab.focus();
    }
    tabs.forEach(function (tab, i) {
      tab.addEventListener("click", function () { select(tab, false); });
      tab.addEventListener("keydown", function (e) {
        var step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
        if (step) { e.preventDefault(); select(tabs[(i + step + tabs.length) % tabs.length], true); }
      });
    });
    select(tabs[0], false);
  }

  /* ---- Listings: facet links, sort and pagination replace the list in place ---- */
  var inflight = null;
  function listingRoot() { return document.querySelector("[data-listing-root]"); }

  function loadListing(url, push, focusSelector) {
    var root = listingRoot();
    if (!root) { window.location.href = url; return; }
    var listing = root.querySelector("[data-listing]");
    if (listing) listing.setAttribute("aria-busy", "true");
    if (inflight) inflight.abort();
    inflight = new AbortController();
    fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin", signal: inflight.signal })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.querySelector("[data-listing-root]");
        if (!fresh) throw new Error("no listing in response");
        root.innerHTML = fresh.innerHTML;
        document.title = doc.title;
        if (push) history.pushState({ listing: true }, "", url);
        var total = root.querySelector("[data-total]");
        announcer((total ? total.textContent : "0") + " adapters");
        var focus = focusSelector && root.querySelector(focusSelector);
        if (focus) focus.focus();
        root.dispatchEvent(new CustomEvent("listing:updated", { bubbles: true }));
      })
      .catch(function (error) {
        if (error.name !== "AbortError") window.location.href = url;
      });
  }

  function cssEscape(value) {
    return window.CSS && CSS.escape ? CSS.escape(value) : value.replace(/"/g, '\\"');
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-nav]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    if (!listingRoot()) return;
    event.preventDefault();
    var facet = link.closest("[data-facet]");
    var focus = facet && link.hasAttribute("data-facet-value")
      ? '[data-facet="' + cssEscape(facet.getAttribute("data-facet")) + '"] a[data-facet-value="' + cssEscape(link.getAttribute("data-facet-value")) + '"]'
      : "#result-count";
    loadListing(link.href, true, focus);
  });

  function formUrl(form) {
    var params = new URLSearchParams(new FormData(form));
    var url = new URL(form.getAttribute("action") || window.location.pathname, window.location.href);
    url.search = params.toString();
    return url.toString();
  }
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-autosubmit]");
    if (!select) return;
    loadListing(formUrl(select.form), true, "#sort");
  });
  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form[data-nav-form]");
    if (!form || !listingRoot()) return;
    event.preventDefault();
    loadListing(formUrl(form), true, "#result-count");
  });
  window.addEventListener("popstate", function () {
    if (listingRoot()) loadListing(window.location.href, false, null);
  });

  /* ---- Explore: filter the task and language cards as you type ---- */
  function setupCardFilter(form) {
    var input = form.querySelector('input[type="search"]');
    function apply() {
      var term = input.value.trim().toLowerCase();
      document.querySelectorAll("[data-section]").forEach(function (section) {
        var shown = 0;
        section.querySelectorAll("[data-card]").forEach(function (card) {
          var match = !term || card.getAttribute("data-search").indexOf(term) !== -1;
          card.hidden = !match;
          if (match) shown += 1;
        });
        var empty = section.querySelector("[data-empty]");
        if (empty) {
          empty.hidden = shown > 0;
          var echo = empty.querySelector("[data-echo]");
          if (echo) echo.textContent = input.value.trim();
        }
        var count = document.querySelector('[data-section-count="' + section.getAttribute("data-section") + '"]');
        if (count) count.textContent = shown;
      });
      var url = new URL(window.location.href);
      if (term) url.searchParams.set("q", input.value.trim()); else url.searchParams.delete("q");
      history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    input.addEventListener("input", apply);
    form.addEventListener("submit", function (e) { e.preventDefault(); apply(); });
  }

  /* ---- Small screens: the facet panel starts folded (it is open for no-JS readers) ---- */
  function foldFacets() {
    if (!window.matchMedia("(max-width: 960px)").matches) return;
    document.querySelectorAll("details.facets-toggle").forEach(function (d) { d.open = false; });
  }
  document.addEventListener("listing:updated", foldFacets);

  /* ---- Boot ---- */
  function boot() {
    foldFacets();
    document.querySelectorAll("[data-tabs]").forEach(setupTabs);
    document.querySelectorAll("form[data-card-filter]").forEach(setupCardFilter);
    document.querySelectorAll("[data-enhance]").forEach(function (el) {
      var name = el.getAttribute("data-enhance");
      if (window.hubEnhancers && window.hubEnhancers[name]) window.hubEnhancers[name](el);
    });
  }
  window.hubCopyText = copyText;
  window.hubAnnounce = announcer;
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot); else boot();
})();

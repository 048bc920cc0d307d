// Marks the page as scripted before it is painted (the CSS hides no-JS fallbacks under .js).
// A file of its own, not an inline script: the Content-Security-Policy allows no inline script.
document.documentElement.className = "js";

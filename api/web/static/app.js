// csledger pages: progressive enhancement only. Every page works without this file; nothing here
// decides anything the server does not decide again.
(function () {
  "use strict";
  // Idle timeout: the server ends an idle session; this just sends the page to the login screen
  // when that time has passed, and warns a minute before.
  var body = document.body;
  var idle = parseInt(body.getAttribute("data-idle-seconds") || "0", 10);
  var loginUrl = body.getAttribute("data-login-url");
  if (idle > 0 && loginUrl) {
    var last = Date.now();
    var note = document.getElementById("idle-note");
    ["keydown", "pointerdown", "input"].forEach(function (ev) {
      document.addEventListener(ev, function () { last = Date.now(); if (note) { note.hidden = true; } }, true);
    });
    setInterval(function () {
      var gone = (Date.now() - last) / 1000;
      if (note && gone > idle - 60) { note.hidden = false; }
      if (gone > idle + 2) { window.location.assign(loginUrl); }
    }, 5000);
  }
  // Move focus to the error summary after a failed submit, so a keyboard or screen-reader user
  // lands on what to fix.
  var summary = document.getElementById("error-summary");
  if (summary) { summary.focus(); }
  var saved = document.getElementById("saved");
  if (saved && !summary) { saved.setAttribute("tabindex", "-1"); saved.focus(); }
})();
// Dose preview on the infusion form: weight x mg/kg -> mg, and mg / strength -> mL, with exact
// integer arithmetic on the typed decimals (BigInt, no binary floating point). Display only: the
// server computes the recorded figures again from what is sent.
(function () {
  "use strict";
  var form = document.getElementById("infusion-form");
  if (!form || typeof BigInt === "undefined") { return; }
  function cents(text) {  // "72.5" -> 7250n; null if not a plain decimal with at most 2 places
    var m = /^\s*(\d{1,7})(?:\.(\d{1,2}))?\s*$/.exec(text || "");
    if (!m) { return null; }
    return BigInt(m[1]) * 100n + BigInt(((m[2] || "") + "00").slice(0, 2));
  }
  function show(scaled, places) {  // scaled integer with `places` decimals -> text at 2 places, half up
    var div = 10n ** BigInt(places - 2);
    var q = (scaled + div / 2n) / div;
    var s = q.toString().padStart(3, "0");
    return s.slice(0, -2) + "." + s.slice(-2);
  }
  var out = document.getElementById("dose-preview");
  function update() {
    var w = cents(form.elements.weight_kg.value), d = cents(form.elements.ordered_mg_per_kg.value);
    var strength = cents(form.getAttribute("data-strength") || "");
    var sel = form.querySelector("input[type=checkbox][name$='-use']:checked");
    if (sel && sel.getAttribute("data-strength")) { strength = cents(sel.getAttribute("data-strength")); }
    if (w === null || d === null) { out.textContent = "Enter weight and mg/kg to see the dose."; return; }
    var mg4 = w * d;  // 4 decimals
    var text = "Dose " + show(mg4, 4) + " mg";
    if (strength) { text += " = " + show((mg4 * 10000n) / strength, 6) + " mL at " + show(strength * 100n, 4) + " mg/mL"; }
    out.textContent = text + " (preview; the server computes the recorded figures)";
  }
  form.addEventListener("input", update);
  form.addEventListener("change", update);
  update();
})();
// Enter in a one-line field of a long form (count, infusion, loss, destruction, transfer) moves
// to the next field instead of sending a half-filled form; Enter on a button still submits.
// The receiving page's scan field is not in such a form: a scanner's Enter adds the carton.
(function () {
  "use strict";
  document.querySelectorAll("form[data-enter-moves]").forEach(function (form) {
    form.addEventListener("keydown", function (ev) {
      var t = ev.target;
      if (ev.key !== "Enter" || t.tagName !== "INPUT" || /^(submit|button|checkbox|radio)$/.test(t.type)) { return; }
      ev.preventDefault();
      // a search box (the infusion's patient search) sends its own button: Enter means "find"
      var own = t.getAttribute("data-enter-button");
      if (own && document.getElementById(own)) { document.getElementById(own).click(); return; }
      var fields = Array.prototype.filter.call(form.elements, function (el) {
        return !el.disabled && el.type !== "hidden" && el.offsetParent !== null;
      });
      var next = fields[fields.indexOf(t) + 1];
      if (next) { next.focus(); }
    });
  });
})();

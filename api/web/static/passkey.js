// csledger passkeys (issue 17): runs the WebAuthn ceremonies the server asks for and sends the
// authenticator's answer back in a hidden field of the same form. The server decides everything:
// it made the options (the challenge is derived from the statement shown on the page) and checks
// the answer before anything is recorded.
//
// Markup (server-rendered, no inline script under the CSP):
//   <div data-webauthn="create|get" data-options="{JSON options, base64url}" data-field="NAME">
//     <button type="button" data-webauthn-start>...</button>
//     <p data-webauthn-error hidden></p>
//   </div>
// and, on witnessed forms, a checkbox data-passkey-toggle="PREFIX" hiding that witness's password
// and code fields while it is ticked.
(function () {
  "use strict";

  // --- base64url <-> ArrayBuffer ---------------------------------------------------------------
  function fromB64u(text) {
    var s = String(text).replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) { s += "="; }
    var bin = atob(s);
    var out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) { out[i] = bin.charCodeAt(i); }
    return out.buffer;
  }
  function toB64u(buf) {
    if (!buf) { return null; }
    var bytes = new Uint8Array(buf), bin = "";
    for (var i = 0; i < bytes.length; i++) { bin += String.fromCharCode(bytes[i]); }
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function descriptors(list) {
    return (list || []).map(function (d) {
      var out = { type: d.type || "public-key", id: fromB64u(d.id) };
      if (d.transports) { out.transports = d.transports; }
      return out;
    });
  }

  // The server's JSON options (py_webauthn's options_to_json) as the browser API wants them.
  function creationOptions(o) {
    var pk = Object.assign({}, o);
    pk.challenge = fromB64u(o.challenge);
    pk.user = Object.assign({}, o.user, { id: fromB64u(o.user.id) });
    pk.excludeCredentials = descriptors(o.excludeCredentials);
    return pk;
  }
  function requestOptions(o) {
    var pk = Object.assign({}, o);
    pk.challenge = fromB64u(o.challenge);
    pk.allowCredentials = descriptors(o.allowCredentials);
    return pk;
  }

  // RegistrationResponseJSON / AuthenticationResponseJSON (WebAuthn Level 3), written out here
  // rather than with PublicKeyCredential.toJSON, which older browsers lack.
  function credentialJSON(cred) {
    var r = cred.response;
    var out = { id: cred.id, rawId: toB64u(cred.rawId), type: cred.type, response: {
      clientDataJSON: toB64u(r.clientDataJSON) },
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {} };
    if (cred.authenticatorAttachment) { out.authenticatorAttachment = cred.authenticatorAttachment; }
    if (r.attestationObject) {
      out.response.attestationObject = toB64u(r.attestationObject);
      if (r.getTransports) { out.response.transports = r.getTransports(); }
    } else {
      out.response.authenticatorData = toB64u(r.authenticatorData);
      out.response.signature = toB64u(r.signature);
      out.response.userHandle = toB64u(r.userHandle);
    }
    return out;
  }

  function say(box, message) {
    var p = box.querySelector("[data-webauthn-error]");
    if (p) { p.textContent = message; p.hidden = !message; }
  }

  function words(err) {
    var name = err && err.name;
    if (name === "NotAllowedError") { return "The security key did not answer (cancelled or timed out). Press the button and try again."; }
    if (name === "InvalidStateError") { return "This security key is already enrolled for you."; }
    if (name === "SecurityError") { return "This page's address does not match the passkey settings of this location; tell your administrator."; }
    return "The passkey could not be used" + (name ? " (" + name + ")" : "") + ". Try again, or use a password instead.";
  }

  // Sent as if its main button was pressed (the infusion form's other button checks a patient).
  function send(form) {
    var button = form.querySelector("button[type=submit].primary");
    if (button && form.requestSubmit) { form.requestSubmit(button); return; }
    if (button) {  // requestSubmit missing: carry the button's name and value ourselves
      var hidden = document.createElement("input");
      hidden.type = "hidden"; hidden.name = button.name; hidden.value = button.value;
      form.appendChild(hidden);
    }
    form.submit();
  }

  function start(box) {
    var form = box.closest("form");
    var field = form && form.elements[box.getAttribute("data-field")];
    if (!field) { return; }
    if (!window.PublicKeyCredential || !navigator.credentials) {
      say(box, "This browser cannot use passkeys here (it needs HTTPS, or localhost).");
      return;
    }
    var options;
    try { options = JSON.parse(box.getAttribute("data-options")); } catch (e) { say(box, "The page is damaged; reload it."); return; }
    var create = box.getAttribute("data-webauthn") === "create";
    var button = box.querySelector("[data-webauthn-start]");
    if (button) { button.disabled = true; }
    say(box, "");
    var ask = create ? navigator.credentials.create({ publicKey: creationOptions(options) })
                     : navigator.credentials.get({ publicKey: requestOptions(options) });
    ask.then(function (cred) {
      if (!cred) { throw new Error("no credential"); }
      field.value = JSON.stringify(credentialJSON(cred));
      send(form);
    }).catch(function (err) {
      if (button) { button.disabled = false; }
      say(box, words(err));
    });
  }

  document.querySelectorAll("[data-webauthn]").forEach(function (box) {
    var button = box.querySelector("[data-webauthn-start]");
    if (button) { button.addEventListener("click", function () { start(box); }); }
  });

  // "Witness uses a passkey": their password and code are not asked for.
  document.querySelectorAll("[data-passkey-toggle]").forEach(function (box) {
    var prefix = box.getAttribute("data-passkey-toggle");
    var form = box.closest("form");
    if (!form) { return; }
    var others = [prefix + "_password", prefix + "_totp"].map(function (n) { return form.elements[n]; })
      .filter(Boolean);
    function update() {
      others.forEach(function (input) {
        var wrap = input.closest(".field") || input;
        wrap.hidden = box.checked;
        if (box.checked) { input.value = ""; }
      });
    }
    box.addEventListener("change", update);
    update();
  });
})();

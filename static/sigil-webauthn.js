// Sigil's hosted pages: the WebAuthn calls, nothing else. No framework, no inline script.
(function () {
  "use strict";
  function enc(buf) {
    var s = String.fromCharCode.apply(null, new Uint8Array(buf));
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function dec(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  async function post(url, body) {
    var r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json" }, body: JSON.stringify(body)
    });
    var data = {};
    try { data = await r.json(); } catch (e) { /* empty */ }
    return { ok: r.ok, data: data };
  }
  function say(el, text) { el.textContent = text; }

  async function register(button, status) {
    say(status, "Follow your device's prompt to create a passkey…");
    var opts = await post(button.dataset.options, { csrf: button.dataset.csrf });
    if (!opts.ok && opts.data.reauth) { say(status, "Confirm it's you first…"); window.location.assign(opts.data.reauth); return; }
    if (!opts.ok) { say(status, "Could not start: " + (opts.data.error || "error")); return; }
    var pk = opts.data.publicKey;
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    var cred;
    try { cred = await navigator.credentials.create({ publicKey: pk }); }
    catch (e) { say(status, "No passkey was created (" + e.name + ")."); return; }
    var res = await post(button.dataset.finish, {
      csrf: button.dataset.csrf,
      credential: {
        id: cred.id, rawId: enc(cred.rawId), type: cred.type,
        response: { attestationObject: enc(cred.response.attestationObject), clientDataJSON: enc(cred.response.clientDataJSON) },
        extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {}
      }
    });
    say(status, res.ok ? "Passkey added. You can now sign in with it." : "The passkey was not accepted: " + (res.data.error || "error"));
    if (res.ok) { button.disabled = true; button.dataset.done = "true"; }
  }

  async function signIn(button, status) {
    say(status, "Follow your device's prompt to use your passkey…");
    var opts = await post(button.dataset.options, { csrf: button.dataset.csrf, conditional: false });
    if (!opts.ok) { say(status, "Could not start: " + (opts.data.error || "error")); return; }
    var pk = opts.data.publicKey;
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    var cred;
    try { cred = await navigator.credentials.get({ publicKey: pk }); }
    catch (e) { say(status, "No passkey was used (" + e.name + ")."); return; }
    var res = await post(button.dataset.finish, {
      csrf: button.dataset.csrf,
      credential: {
        id: cred.id, rawId: enc(cred.rawId), type: cred.type,
        response: {
          authenticatorData: enc(cred.response.authenticatorData),
          clientDataJSON: enc(cred.response.clientDataJSON),
          signature: enc(cred.response.signature),
          userHandle: cred.response.userHandle ? enc(cred.response.userHandle) : null
        },
        extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {}
      }
    });
    if (res.ok && res.data.redirect) { say(status, "Signed in. Returning to the application…"); window.location.assign(res.data.redirect); }
    else { say(status, "The passkey was not accepted."); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var status = document.getElementById("passkey-status");
    var reg = document.getElementById("passkey-register");
    var signin = document.getElementById("passkey-signin");
    if (!window.PublicKeyCredential) {
      if (status) say(status, "This browser does not support passkeys.");
      return;
    }
    function guard(fn, button) {
      return function () {
        fn(button, status).catch(function () { say(status, "Something went wrong; try again."); });
      };
    }
    if (reg) reg.addEventListener("click", guard(register, reg));
    if (signin) signin.addEventListener("click", guard(signIn, signin));
  });
})();

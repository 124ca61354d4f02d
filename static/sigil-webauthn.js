// Sigil's hosted pages: passkeys (WebAuthn, with autofill where the browser offers it), busy
// states, the recovery codes' copy button and the time zone cookie. No framework, no inline
// script; every string comes from the page's catalogue (#sigil-strings).
(function () {
  "use strict";
  var S = {};
  try { S = JSON.parse(document.getElementById("sigil-strings").textContent) || {}; } catch (e) { S = {}; }
  function s(key) { return S[key] || key; }

  // The browser's time zone, so the pages can show times in it.
  try {
    var tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (tz) {
      document.cookie = "sigil_tz=" + encodeURIComponent(tz) + "; Path=/; Max-Age=31536000; SameSite=Lax" +
        (location.protocol === "https:" ? "; Secure" : "");
    }
  } catch (e) { /* no Intl: the realm's default zone applies */ }

  function enc(buf) {
    var str = String.fromCharCode.apply(null, new Uint8Array(buf));
    return btoa(str).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function dec(v) {
    v = v.replace(/-/g, "+").replace(/_/g, "/");
    while (v.length % 4) v += "=";
    var bin = atob(v), out = new Uint8Array(bin.length);
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
    return { ok: r.ok, status: r.status, data: data };
  }
  function say(el, text, isError) {
    if (!el) return;
    el.textContent = text;
    el.className = isError ? "error" : "";
  }
  function busy(button, on) {
    if (on) { button.setAttribute("aria-busy", "true"); button.disabled = true; }
    else { button.removeAttribute("aria-busy"); button.disabled = false; }
  }
  // Why a start or finish was refused, in words.
  function refusal(res, fallbackKey) {
    if (res.status === 429) return s("throttled");
    if (res.data && res.data.error === "account disabled") return s("disabled");
    if (res.data && (res.data.error === "sign-in expired" || res.data.error === "expired" || res.data.error === "ceremony expired")) return s("expired");
    return s(fallbackKey);
  }
  function assertionJson(cred) {
    return {
      id: cred.id, rawId: enc(cred.rawId), type: cred.type,
      response: {
        authenticatorData: enc(cred.response.authenticatorData),
        clientDataJSON: enc(cred.response.clientDataJSON),
        signature: enc(cred.response.signature),
        userHandle: cred.response.userHandle ? enc(cred.response.userHandle) : null
      },
      extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {}
    };
  }

  async function register(button, status) {
    say(status, s("create_prompt"));
    var opts = await post(button.dataset.options, { csrf: button.dataset.csrf });
    if (!opts.ok && opts.data.reauth) { say(status, s("reauth_first")); window.location.assign(opts.data.reauth); return; }
    if (!opts.ok) { say(status, refusal(opts, "start_failed"), true); return; }
    var pk = opts.data.publicKey;
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    var cred;
    try { cred = await navigator.credentials.create({ publicKey: pk }); }
    catch (e) { say(status, e.name === "InvalidStateError" ? s("exists") : s("create_cancelled"), true); return; }
    var nameField = button.dataset.nameField && document.getElementById(button.dataset.nameField);
    var res = await post(button.dataset.finish, {
      csrf: button.dataset.csrf,
      name: nameField && nameField.value.trim() ? nameField.value.trim() : null,
      credential: {
        id: cred.id, rawId: enc(cred.rawId), type: cred.type,
        response: { attestationObject: enc(cred.response.attestationObject), clientDataJSON: enc(cred.response.clientDataJSON) },
        extensions: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {}
      }
    });
    if (!res.ok) { say(status, refusal(res, "refused_create"), true); return; }
    say(status, s("added"));
    button.dataset.done = "true";
    if (res.data.redirect) { window.location.assign(res.data.redirect); return; }
    if (button.dataset.reload) { window.location.reload(); }
  }

  // One ceremony at a time: the autofill request is aborted when the button starts another.
  var conditional = null;

  async function signIn(button, status) {
    if (conditional) { conditional.abort(); conditional = null; }
    say(status, s("use_prompt"));
    var opts = await post(button.dataset.options, { csrf: button.dataset.csrf, conditional: false });
    if (!opts.ok) { say(status, refusal(opts, "start_failed"), true); return; }
    var pk = opts.data.publicKey;
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach(function (c) { c.id = dec(c.id); });
    var cred;
    try { cred = await navigator.credentials.get({ publicKey: pk }); }
    catch (e) { say(status, s("cancelled"), true); return; }
    await finishSignIn(button, status, cred);
  }

  async function finishSignIn(button, status, cred) {
    var res = await post(button.dataset.finish, { csrf: button.dataset.csrf, credential: assertionJson(cred) });
    if (res.ok && res.data.redirect) { say(status, s("signed_in")); window.location.assign(res.data.redirect); return true; }
    say(status, refusal(res, "refused"), true);
    return false;
  }

  // Passkey autofill: the username field offers the user's passkeys (conditional mediation).
  async function autofill(button, status) {
    var field = document.getElementById("username");
    if (!field || !window.PublicKeyCredential || !PublicKeyCredential.isConditionalMediationAvailable) return;
    if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return;
    var opts = await post(button.dataset.options, { csrf: button.dataset.csrf, conditional: true });
    if (!opts.ok) return;
    var pk = opts.data.publicKey;
    pk.challenge = dec(pk.challenge);
    pk.allowCredentials = [];
    conditional = new AbortController();
    document.documentElement.dataset.passkeyAutofill = "waiting";
    var cred;
    try {
      cred = await navigator.credentials.get({ publicKey: pk, mediation: "conditional", signal: conditional.signal });
    } catch (e) { document.documentElement.dataset.passkeyAutofill = "ended"; return; }
    conditional = null;
    document.documentElement.dataset.passkeyAutofill = "used";
    busy(button, true);
    if (!(await finishSignIn(button, status, cred))) busy(button, false);
  }

  function guarded(fn, button, status) {
    return function () {
      if (button.getAttribute("aria-busy") === "true") return;
      busy(button, true);
      fn(button, status)
        .catch(function () { say(status, s("failed"), true); })
        .finally(function () { if (button.dataset.done !== "true" || !button.dataset.reload) busy(button, false); });
    };
  }

  function copyCodes(button) {
    var list = document.getElementById("recovery-codes");
    var status = document.getElementById("copy-status");
    var text = Array.prototype.map.call(list.querySelectorAll("li"), function (li) { return li.textContent.trim(); }).join("\n");
    if (!navigator.clipboard) { say(status, button.dataset.failed, true); return; }
    navigator.clipboard.writeText(text + "\n").then(
      function () { say(status, button.dataset.done); },
      function () { say(status, button.dataset.failed, true); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var status = document.getElementById("passkey-status");
    var reg = document.getElementById("passkey-register");
    var signin = document.getElementById("passkey-signin");
    var copy = document.getElementById("copy-codes");
    if (copy) copy.addEventListener("click", function () { copyCodes(copy); });
    // Forms show a busy state once submitted (and cannot be submitted twice).
    Array.prototype.forEach.call(document.querySelectorAll("form"), function (f) {
      f.addEventListener("submit", function (ev) {
        var b = ev.submitter || f.querySelector("button[type=submit]");
        if (b) { b.setAttribute("aria-busy", "true"); setTimeout(function () { b.disabled = true; }, 0); }
      });
    });
    if (!reg && !signin) return;
    if (!window.PublicKeyCredential) {
      say(status, s("unsupported"), true);
      if (reg) reg.disabled = true;
      if (signin) signin.disabled = true;
      return;
    }
    if (reg) reg.addEventListener("click", guarded(register, reg, status));
    if (signin) {
      signin.addEventListener("click", guarded(signIn, signin, status));
      autofill(signin, status).catch(function () { /* autofill is optional */ });
    }
  });
})();

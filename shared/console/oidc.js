// Sign-in with the registry's OIDC issuer: authorization code with PKCE (S256), as a public client (no
// secret). The registry says which issuer and client id (/console/config.json); the page reads the
// issuer's discovery document, sends the browser to its authorization endpoint with a fresh state,
// nonce and code challenge (kept in sessionStorage for this tab only), and, when the issuer redirects
// back with a code, checks the state, redeems the code with the verifier at the token endpoint (the
// only other origin the Content-Security-Policy lets the page connect to), checks the ID token's
// nonce, and keeps the token whose audience the registry accepts. The registry verifies that JWT
// (signature, issuer, audience, expiry) on every call; nothing here is trusted for access.

const PENDING = "helix.oidc.pending";
// The ID token of this tab's sign-in: the hint the issuer's end_session_endpoint asks for at sign-out.
const ID_TOKEN = "helix.oidc.id_token";

let config;
export async function signInConfig() {
  if (config === undefined) {
    const resp = await fetch("/console/config.json");
    config = resp.ok ? (await resp.json()).oidc : null;
  }
  return config;
}

// Where the issuer sends the browser back: registered at the issuer as the console's redirect URI.
export const redirectUri = () => `${location.origin}/console`;

const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const random = (n) => b64url(crypto.getRandomValues(new Uint8Array(n)));

export class SignInError extends Error {}

async function discover(cfg) {
  let meta;
  try {
    const resp = await fetch(`${cfg.issuer.replace(/\/$/, "")}/.well-known/openid-configuration`);
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    meta = await resp.json();
  } catch (e) {
    throw new SignInError(`the identity provider's discovery document could not be read (${e.message})`);
  }
  if (meta.issuer !== cfg.issuer) throw new SignInError("the discovery document names another issuer");
  // The endpoints may be on other origins than the issuer's (Cognito, Google): the registry reads the
  // same document and names the token endpoint's origin in the page's connect-src; here each must be
  // https (plain http only on loopback, for local identity providers).
  for (const k of ["authorization_endpoint", "token_endpoint"]) {
    if (!webUrl(meta[k])) throw new SignInError(`the issuer's ${k} is not an https URL`);
  }
  return meta;
}

function webUrl(value) {
  if (typeof value !== "string") return false;
  try {
    const u = new URL(value);
    return u.protocol === "https:" || (u.protocol === "http:" && ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname));
  } catch {
    return false;
  }
}

// Leave for the issuer's sign-in page.
export async function start(cfg) {
  const meta = await discover(cfg);
  const pending = { state: random(24), nonce: random(24), verifier: random(48) };
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(pending.verifier));
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const url = new URL(meta.authorization_endpoint);
  for (const [k, v] of Object.entries({
    response_type: "code", client_id: cfg.client_id, redirect_uri: redirectUri(), scope: cfg.scope || "openid",
    state: pending.state, nonce: pending.nonce, code_challenge: b64url(new Uint8Array(digest)), code_challenge_method: "S256",
  })) url.searchParams.set(k, v);
  location.assign(url.href);
}

function claims(jwt) {
  try {
    const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(part), (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

// Back from the issuer with `params` (the query it redirected to): the bearer token, or a SignInError.
// The request this tab started is used once: a replayed or forged answer finds nothing to match.
export async function finish(params) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
  sessionStorage.removeItem(PENDING);
  if (params.get("error")) {
    throw new SignInError(`the identity provider refused: ${params.get("error")}${params.get("error_description") ? ` (${params.get("error_description")})` : ""}`);
  }
  if (!pending || !params.get("state") || params.get("state") !== pending.state) {
    throw new SignInError("the answer's state does not match the sign-in this tab started (a forged or replayed answer): nothing was redeemed");
  }
  const cfg = await signInConfig();
  if (!cfg) throw new SignInError("the registry has no OIDC sign-in configured");
  const meta = await discover(cfg);
  let resp, data;
  try {
    resp = await fetch(meta.token_endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "authorization_code", code: params.get("code") || "", redirect_uri: redirectUri(), client_id: cfg.client_id, code_verifier: pending.verifier }),
    });
    data = await resp.json().catch(() => ({}));
  } catch (e) {
    throw new SignInError(`the identity provider's token endpoint did not answer (${e.message})`);
  }
  if (!resp.ok) {
    throw new SignInError(`the identity provider refused the code: ${data.error || `HTTP ${resp.status}`}${data.error_description ? ` (${data.error_description})` : ""}`);
  }
  if (data.id_token) {
    const id = claims(data.id_token);
    if (!id || id.nonce !== pending.nonce) throw new SignInError("the ID token's nonce does not match the sign-in this tab started");
  }
  const forRegistry = (t) => {
    const c = t && claims(t);
    return c && (Array.isArray(c.aud) ? c.aud : [c.aud]).includes(cfg.audience);
  };
  const bearer = [data.access_token, data.id_token].find(forRegistry);
  if (!bearer) throw new SignInError(`the identity provider issued no token for the registry's audience (${cfg.audience})`);
  if (data.id_token) sessionStorage.setItem(ID_TOKEN, data.id_token);
  return bearer;
}

// Sign-out at the identity provider: forget everything this tab keeps (sessionStorage, either way),
// then, when this tab signed in with the issuer and its discovery document lists an
// end_session_endpoint (OpenID Connect RP-Initiated Logout), leave for it with the ID token as hint and
// the console as the address to come back to. Resolves to false when there is nowhere to go (a pasted
// token, no such endpoint, or the document cannot be read): the caller shows the sign-in page.
export async function signOut() {
  const idToken = sessionStorage.getItem(ID_TOKEN);
  sessionStorage.clear();
  if (!idToken) return false;
  let meta;
  try {
    const cfg = await signInConfig();
    if (!cfg) return false;
    meta = await discover(cfg);
  } catch {
    return false;
  }
  if (!webUrl(meta.end_session_endpoint)) return false;
  const url = new URL(meta.end_session_endpoint);
  url.searchParams.set("id_token_hint", idToken);
  url.searchParams.set("post_logout_redirect_uri", redirectUri());
  url.searchParams.set("client_id", config.client_id);
  location.assign(url.href);
  return true;
}

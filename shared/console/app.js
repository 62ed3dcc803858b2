// Helix Registry console: plain ES modules, no build step. The credential (a pasted API token, or the
// JWT of an OIDC sign-in: oidc.js) lives in sessionStorage only (this tab; gone when it closes or on
// sign-out); every call goes to this origin with it as a bearer token.
import { loadKeys, verifyReceipt } from "./verify.js";
import * as oidc from "./oidc.js";
import { evidencePack } from "./pack.js";

const TOKEN = "helix.token";
const main = document.getElementById("main");
const banner = document.getElementById("banner");

// The registry's refusal reasons, in plain words (the reason code is shown beside them).
const REASONS = {
  self_approval: "You registered this version, so you may not approve or waive it: another person must (separation of duties).",
  insufficient_role: "Your role does not allow this.",
  forbidden_workspace: "Your access does not cover this workspace.",
  registry_frozen: "The registry is frozen: no change is accepted until an admin unfreezes it.",
  workspace_suspended: "This workspace is suspended.",
  not_approved: "This version is not approved, and no live waiver covers its export.",
  version_rejected: "This version was rejected; a rejection is final.",
  version_exported: "This version was already exported.",
  waiver_invalid: "The waiver is not valid.",
  token_missing: "Sign in first.",
  token_invalid: "That token is not valid.",
  token_expired: "That token has expired.",
  token_revoked: "That token was revoked.",
  bundle_missing: "No such version.",
};

class Refusal extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
  words() {
    const r = this.problem.reason;
    return `${REASONS[r] || this.message} (${r || this.status})`;
  }
}

const token = () => sessionStorage.getItem(TOKEN);

async function api(method, path, body, accept) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  if (accept) headers.accept = accept;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (accept && resp.ok) return resp.text();
  const text = await resp.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { detail: text }; }
  if (!resp.ok) throw new Refusal(resp.status, data);
  return data;
}

// DOM helpers: elements built with properties, never HTML strings (no injection, CSP-clean).
function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

const when = (unix) => (unix ? new Date(unix * 1000).toISOString().replace(".000Z", "Z") : "");
const notice = (kind, text, id) => h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", id }, text);

function view(title, ...content) {
  document.title = `${title} · Helix Registry console`;
  main.replaceChildren(h("h1", {}, title), ...content);
  main.focus();
  // The first usable view, for the navigation timing the browser suite reports (docs/performance.md).
  if (!performance.getEntriesByName("helix-first-view").length) performance.mark("helix-first-view");
}

function field(label, input) {
  return h("label", {}, label, input);
}

async function refreshBanner() {
  if (!token()) { banner.replaceChildren(); return; }
  try {
    const s = await api("GET", "/v1/status");
    const parts = [];
    if (s.frozen) parts.push(h("strong", { id: "frozen-banner" }, `Registry frozen${s.freeze && s.freeze.reason ? `: ${s.freeze.reason}` : ""}`), " — no change is accepted until an admin unfreezes it. ");
    for (const w of s.suspended_workspaces || []) parts.push(h("span", {}, `Workspace ${w.workspace_id} suspended${w.reason ? `: ${w.reason}` : ""}. `));
    banner.replaceChildren(...parts);
  } catch (e) {
    banner.replaceChildren(e instanceof Refusal ? `Status unavailable: ${e.words()}` : "Status unavailable.");
  }
}

// ---------------------------------------------------------------- views

function signin(failure) {
  const input = h("input", { id: "token-input", type: "password", autocomplete: "off", required: true, size: 50 });
  const msg = h("div", { "aria-live": "polite" }, failure ? notice("error", `Sign-in failed: ${failure}`, "signin-error") : "");
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      sessionStorage.removeItem("helix.oidc.id_token");
      sessionStorage.setItem(TOKEN, input.value.trim());
      try {
        await api("GET", "/v1/whoami");
        location.hash = "#/pending";
      } catch (e) {
        sessionStorage.removeItem(TOKEN);
        msg.replaceChildren(notice("error", e instanceof Refusal ? e.words() : "The registry did not answer.", "signin-error"));
      }
    },
  }, field("API token (hlx_…)", input), h("button", { type: "submit", id: "signin-btn" }, "Sign in"));
  const sso = h("div", { id: "oidc-signin" });
  view("Sign in", msg, sso,
    h("h2", {}, "With an API token"),
    h("p", {}, "Paste an API token. It is kept in this tab only (sessionStorage) and forgotten when you sign out or close the tab."), form);
  oidc.signInConfig().then((cfg) => {
    if (!cfg) return;
    sso.replaceChildren(h("h2", {}, "With your identity provider"),
      h("p", {}, `Signs in at ${new URL(cfg.issuer).host}; the token it issues is kept in this tab only.`),
      h("button", {
        type: "button", id: "oidc-btn",
        onclick: () => oidc.start(cfg).catch((e) => msg.replaceChildren(notice("error", `Sign-in failed: ${e.message}`, "signin-error"))),
      }, "Sign in with your identity provider"));
  }).catch(() => {});
}

// Back from the identity provider (`?code=…&state=…` or `?error=…`): redeem the code, check the grant
// with the registry, and leave the code out of the address bar and the history.
async function oidcReturn(params) {
  history.replaceState(null, "", "/console/#/signin");
  try {
    const bearer = await oidc.finish(params);
    sessionStorage.setItem(TOKEN, bearer);
    await api("GET", "/v1/whoami");
    location.hash = "#/pending";
  } catch (e) {
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem("helix.oidc.id_token");
    signin(e instanceof Refusal ? `the registry refused the identity provider's token: ${e.words()}` : e.message);
  }
}

async function pending() {
  const gen = routeGen;
  view("Waiting for me", h("p", { class: "muted" }, "Loading…"));
  let page;
  try {
    page = await api("GET", "/v1/governance/pending?limit=100");
  } catch (e) {
    if (gen === routeGen) view("Waiting for me", notice("error", e.words ? e.words() : String(e)));
    return;
  }
  if (gen !== routeGen) return; // the user has gone elsewhere meanwhile
  const rows = page.versions.map((v) => h("tr", {},
    h("td", {}, v.workspace_id),
    h("td", {}, h("a", { class: "version-link", href: `#/version/${v.workspace_id}/${v.name}/${v.version}` }, `${v.name}@${v.version}`)),
    h("td", {}, h("span", { class: "state" }, v.state)),
    h("td", {}, v.registered_user, h("br"), h("span", { class: "muted" }, when(v.registered_at))),
    h("td", {}, v.actions.join(", "), ...v.refused.map((r) => h("div", { class: "muted" }, `${r.action}: ${r.reason}`)))));
  const content = page.versions.length
    ? h("table", { id: "pending-table" }, h("caption", { class: "muted" }, "Versions you may decide now"),
        h("thead", {}, h("tr", {}, ...["Workspace", "Version", "State", "Registered by", "You may"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows))
    : h("p", { id: "pending-empty" }, "Nothing is waiting for you.");
  view("Waiting for me", page.frozen ? notice("info", REASONS.registry_frozen) : "", content,
    page.next_cursor ? h("p", { class: "muted" }, "More are waiting: decide these first.") : "");
  // The first view with the registry's data in it, for `make bench` (docs/performance.md).
  if (!performance.getEntriesByName("helix-pending-ready").length) performance.mark("helix-pending-ready");
}

async function version(ws, name, ver) {
  const base = `/v1/workspaces/${ws}/bundles/${name}/versions/${ver}`;
  const gen = routeGen;
  view(`${name}@${ver}`, h("p", { class: "muted" }, "Loading…"));
  let v, gov, keys;
  try {
    [v, gov] = await Promise.all([api("GET", base), api("GET", `${base}/governance`)]);
    keys = await loadKeys(await api("GET", "/v1/governance/public-key"));
  } catch (e) {
    if (gen === routeGen) view(`${name}@${ver}`, notice("error", e.words ? e.words() : String(e)));
    return;
  }
  if (gen !== routeGen) return; // the user has gone elsewhere meanwhile
  const files = (v.manifest && v.manifest.files) || [];
  const manifest = h("table", { id: "manifest" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Path"), h("th", { scope: "col" }, "Size"), h("th", { scope: "col" }, "Digest"))),
    h("tbody", {}, files.map((f) => h("tr", {}, h("td", {}, f.path), h("td", {}, String(f.size)), h("td", { class: "mono" }, f.digest)))));
  const timeline = h("ol", { class: "timeline", id: "ledger" });
  for (const r of gov.receipts) {
    const res = await verifyReceipt(r, keys);
    const s = res.statement || {};
    timeline.append(h("li", { class: "receipt" },
      h("strong", {}, `#${s.seq ?? "?"} ${s.kind ?? "receipt"}`), ` ${s.from ?? ""} → ${s.to ?? ""} by ${s.user ?? "?"} (${s.role ?? "?"}) at ${s.time ?? "?"}`,
      s.justification ? h("div", {}, `Justification: ${s.justification}`) : "",
      s.expires_at ? h("div", {}, `Expires ${when(s.expires_at)}`) : "",
      res.ok
        ? h("div", { class: "ok verified" }, "✔ verified by key ", h("code", {}, res.keyId))
        : h("div", { class: "bad failed", role: "alert" }, `✖ not verified: ${res.why}`)));
  }
  const result = h("div", { id: "decision-result", "aria-live": "polite" });
  const decide = async (path, body, label) => {
    result.replaceChildren(notice("info", `${label}…`));
    try {
      const receipt = await api("POST", `${base}/${path}`, body);
      sessionStorage.setItem("helix.flash", `${label}: recorded (receipt #${receipt.seq ?? ""}).`);
      await version(ws, name, ver);
    } catch (e) {
      result.replaceChildren(notice("error", `${label} refused: ${e.words ? e.words() : e}`, "refusal"));
    }
  };
  const justification = h("textarea", { id: "waiver-justification", required: true });
  const expires = h("input", { id: "waiver-expires", type: "number", min: 1, max: 604800, value: "86400" });
  const scope = h("select", { id: "waiver-scope" }, h("option", { value: "export_unapproved" }, "export_unapproved"));
  const transition = h("input", { id: "waiver-transition", readOnly: true, value: gov.export_transition, size: 40 });
  const decideForm = h("section", { "aria-labelledby": "decide-h" }, h("h2", { id: "decide-h" }, "Decide"),
    h("form", { onsubmit: (e) => e.preventDefault() },
      h("button", { type: "button", id: "approve-btn", onclick: () => decide("approve", {}, "Approve") }, "Approve"),
      h("button", { type: "button", id: "reject-btn", class: "danger", onclick: () => decide("reject", {}, "Reject") }, "Reject")),
    h("form", {
      id: "waiver-form",
      onsubmit: (e) => {
        e.preventDefault();
        decide("waivers", { transition: transition.value, scope: scope.value, justification: justification.value, expires_in_seconds: Number(expires.value) }, "Waive");
      },
    }, field("Transition", transition), field("Scope", scope), field("Justification", justification), field("Expires in (seconds)", expires),
      h("button", { type: "submit", id: "waive-btn", class: "secondary" }, "Sign waiver")),
    result);
  const exportResult = h("div", { id: "export-result", "aria-live": "polite" });
  const exportSection = h("section", { "aria-labelledby": "export-h" }, h("h2", { id: "export-h" }, "Export"),
    h("button", {
      type: "button", id: "export-btn",
      onclick: async () => {
        exportResult.replaceChildren(notice("info", "Exporting…"));
        try {
          const x = await api("POST", `${base}/export`, {});
          const check = await verifyReceipt(x.receipt, keys);
          exportResult.replaceChildren(
            notice("info", `Exported (${x.governance}), receipt #${x.seq}.`, "export-done"),
            check.ok ? h("p", { class: "ok verified" }, "✔ export receipt verified by key ", h("code", {}, check.keyId)) : h("p", { class: "bad", role: "alert" }, `✖ ${check.why}`),
            h("h3", {}, "Proof URLs (valid until ", when(x.proof.expires_at), ")"),
            h("ul", { id: "proof-urls" },
              h("li", {}, h("a", { href: x.proof.manifest.url, class: "mono" }, "manifest")),
              x.proof.files.map((f) => h("li", {}, f.url ? h("a", { href: f.url, class: "mono" }, f.path) : `${f.path} (${f.digest})`))),
            h("details", {}, h("summary", {}, "Export receipt (DSSE envelope)"), h("pre", { class: "mono" }, JSON.stringify(x.receipt, null, 2))),
            packSection(x));
        } catch (e) {
          exportResult.replaceChildren(notice("error", `Export refused: ${e.words ? e.words() : e}`, "export-refusal"));
        }
      },
    }, "Run export"), exportResult);
  // The evidence pack of this export: assembled here from the registry's answers (pack.js).
  const packSection = (x) => {
    const status = h("div", { id: "pack-result", "aria-live": "polite" });
    const button = h("button", {
      type: "button", id: "pack-btn", class: "secondary",
      onclick: async () => {
        button.disabled = true;
        try {
          const blob = await evidencePack({ ws, name, ver, v, x, call: api, token: token(), progress: (t) => status.replaceChildren(notice("info", t)) });
          const file = `${ws}-${name}-${ver}-export-${x.seq}.tar`;
          const a = h("a", { href: URL.createObjectURL(blob), download: file });
          document.body.append(a);
          a.click();
          a.remove();
          status.replaceChildren(notice("info", `Downloaded ${file} (${blob.size} bytes). Check it offline: helix verify-pack ${file} --public-key KEY.pem`, "pack-done"));
        } catch (e) {
          status.replaceChildren(notice("error", `Evidence pack failed: ${e.words ? e.words() : e.message}`, "pack-error"));
        } finally {
          button.disabled = false;
        }
      },
    }, "Download evidence pack");
    return h("div", {}, h("h3", {}, "Evidence pack"),
      h("p", { class: "muted" }, "One archive with the files, the manifest, the ledger, this export receipt and the registry's keys: a partner with it and a pinned key needs nothing else."),
      button, status);
  };
  const flash = sessionStorage.getItem("helix.flash");
  sessionStorage.removeItem("helix.flash");
  view(`${ws} / ${name}@${ver}`,
    flash ? notice("info", flash, "flash") : "",
    h("p", {}, "State: ", h("span", { class: "state", id: "state" }, gov.state), " · manifest ", h("code", {}, v.manifest_digest)),
    h("p", { class: "muted" }, `Registered by ${v.registered_by} at ${when(v.registered_at)}`),
    h("h2", {}, "Manifest"), manifest,
    h("h2", {}, "Ledger"), gov.receipts.length ? timeline : h("p", {}, "No decision yet."),
    decideForm, exportSection);
}

function auditView() {
  const inputs = {
    workspace: h("input", { id: "audit-workspace", placeholder: "team-a or *" }),
    action: h("input", { id: "audit-action", placeholder: "governance.approval", list: "audit-actions" }),
    actor: h("input", { id: "audit-actor", placeholder: "user@tok_…" }),
    since: h("input", { id: "audit-since", placeholder: "2026-01-01" }),
    until: h("input", { id: "audit-until", placeholder: "2026-12-31" }),
  };
  // Suggestions for the action field; who read what is `blob.read` and `bundle.read`.
  const actions = h("datalist", { id: "audit-actions" },
    ["blob.read", "bundle.read", "blob.link", "bundle.register", "governance.approval", "governance.rejection",
      "governance.waiver", "bundle.export", "token.issue", "token.revoke"].map((a) => h("option", { value: a })));
  const results = h("div", { id: "audit-results", "aria-live": "polite" });
  let cursor = null;
  const query = (extra) => {
    const q = new URLSearchParams();
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) q.set(k, el.value.trim());
    for (const [k, v] of Object.entries(extra || {})) if (v) q.set(k, v);
    return `/v1/audit?${q}`;
  };
  const search = async (next) => {
    try {
      const page = await api("GET", query({ limit: "50", cursor: next ? cursor : null }));
      cursor = page.next_cursor;
      const table = h("table", { id: "audit-table" },
        h("thead", {}, h("tr", {}, ...["Time", "Workspace", "Action", "Actor", "Entity", "Outcome"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, page.events.map((e) => h("tr", {}, h("td", {}, e.ts), h("td", {}, e.stream), h("td", {}, e.action), h("td", {}, e.actor), h("td", { class: "mono" }, e.entity_id), h("td", {}, e.outcome)))));
      results.replaceChildren(h("p", {}, `${page.events.length} event(s)`), table,
        cursor ? h("button", { type: "button", id: "audit-next", class: "secondary", onclick: () => search(true) }, "Next page") : "");
    } catch (e) {
      results.replaceChildren(notice("error", e.words ? e.words() : String(e)));
    }
  };
  const download = async () => {
    try {
      const text = await api("GET", query({ limit: "1000" }), undefined, "application/x-ndjson");
      const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "application/x-ndjson" })), download: "audit.jsonl" });
      document.body.append(a);
      a.click();
      a.remove();
    } catch (e) {
      results.replaceChildren(notice("error", e.words ? e.words() : String(e)));
    }
  };
  view("Audit trail",
    h("form", { onsubmit: (e) => { e.preventDefault(); search(false); } },
      ...Object.entries(inputs).map(([k, el]) => field(k[0].toUpperCase() + k.slice(1), el)),
      h("button", { type: "submit", id: "audit-search" }, "Search"),
      h("button", { type: "button", id: "audit-download", class: "secondary", onclick: download }, "Download JSON Lines"),
      actions),
    results);
}

async function admin() {
  const out = h("div", { id: "admin-result", "aria-live": "polite" });
  const act = async (label, fn) => {
    try {
      await fn();
      out.replaceChildren(notice("info", `${label}: done.`, "admin-done"));
    } catch (e) {
      out.replaceChildren(notice("error", `${label} refused: ${e.words ? e.words() : e}`, "admin-refusal"));
    }
    await refreshBanner();
    await listTokens();
  };
  const user = h("input", { id: "issue-user", required: true });
  const role = h("select", { id: "issue-role" }, ["viewer", "publisher", "approver", "safety_reviewer", "admin"].map((r) => h("option", { value: r }, r)));
  const ws = h("input", { id: "issue-ws", required: true, placeholder: "team-a or *" });
  const issued = h("div", { id: "issued", "aria-live": "polite" });
  const issueForm = h("form", {
    onsubmit: async (e) => {
      e.preventDefault();
      try {
        const t = await api("POST", "/v1/tokens", { user: user.value, role: role.value, workspace_id: ws.value });
        issued.replaceChildren(h("p", {}, `Token ${t.id} for ${t.user} (${t.role}, ${t.workspace_id}). Copy the secret now: it is shown only once.`),
          h("p", { class: "secret", id: "issued-secret" }, t.token));
        await listTokens();
      } catch (err) {
        issued.replaceChildren(notice("error", `Issue refused: ${err.words ? err.words() : err}`));
      }
    },
  }, field("User", user), field("Role", role), field("Workspace", ws), h("button", { type: "submit", id: "issue-btn" }, "Issue token"));
  const tokens = h("div", { id: "tokens" });
  const listTokens = async () => {
    try {
      const list = await api("GET", "/v1/tokens");
      tokens.replaceChildren(h("table", { id: "tokens-table" },
        h("thead", {}, h("tr", {}, ...["Id", "User", "Role", "Workspace", "Created", "Status", ""].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, list.tokens.map((t) => h("tr", {}, h("td", { class: "mono" }, t.id), h("td", {}, t.user), h("td", {}, t.role), h("td", {}, t.workspace_id),
          h("td", {}, when(t.created_at)), h("td", {}, t.disabled ? "revoked" : "active"),
          h("td", {}, t.disabled ? "" : h("button", { type: "button", class: "danger revoke-btn", "data-id": t.id, "aria-label": `Revoke ${t.id} (${t.user})`, onclick: () => act(`Revoke ${t.id}`, () => api("POST", `/v1/tokens/${t.id}/revoke`, {})) }, "Revoke")))))));
    } catch (e) {
      tokens.replaceChildren(notice("error", e.words ? e.words() : String(e)));
    }
  };
  const reason = h("input", { id: "freeze-reason", size: 40 });
  const suspendWs = h("input", { id: "suspend-ws" });
  const suspendReason = h("input", { id: "suspend-reason", size: 40 });
  const workspaces = h("div", { id: "workspaces" });
  try {
    const w = await api("GET", "/v1/workspaces");
    workspaces.replaceChildren(h("table", { id: "workspaces-table" },
      h("thead", {}, h("tr", {}, ...["Workspace", "Versions", "Submitted", "Approved", "Rejected", "Exported", "Blobs", "Suspended"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, w.workspaces.map((x) => h("tr", {}, h("td", {}, x.workspace_id), h("td", {}, String(x.bundle_versions)), h("td", {}, String(x.states.submitted)),
        h("td", {}, String(x.states.approved)), h("td", {}, String(x.states.rejected)), h("td", {}, String(x.states.exported)), h("td", {}, String(x.blob_links)), h("td", {}, x.suspended ? "yes" : "no"))))));
  } catch (e) {
    workspaces.replaceChildren(notice("error", e.words ? e.words() : String(e)));
  }
  view("Admin", out,
    h("h2", {}, "Workspaces"), workspaces,
    h("h2", {}, "Tokens"), issueForm, issued, tokens,
    h("h2", {}, "Freeze"),
    h("form", { onsubmit: (e) => e.preventDefault() }, field("Reason", reason),
      h("button", { type: "button", id: "freeze-btn", class: "danger", onclick: () => act("Freeze", () => api("POST", "/v1/admin/freeze", { reason: reason.value })) }, "Freeze registry"),
      h("button", { type: "button", id: "unfreeze-btn", class: "secondary", onclick: () => act("Unfreeze", () => api("POST", "/v1/admin/unfreeze", { reason: reason.value })) }, "Unfreeze")),
    h("h2", {}, "Workspace suspension"),
    h("form", { onsubmit: (e) => e.preventDefault() }, field("Workspace", suspendWs), field("Reason", suspendReason),
      h("button", { type: "button", id: "suspend-btn", class: "danger", onclick: () => act(`Suspend ${suspendWs.value}`, () => api("POST", `/v1/admin/workspaces/${encodeURIComponent(suspendWs.value)}/suspend`, { reason: suspendReason.value })) }, "Suspend"),
      h("button", { type: "button", id: "unsuspend-btn", class: "secondary", onclick: () => act(`Unsuspend ${suspendWs.value}`, () => api("POST", `/v1/admin/workspaces/${encodeURIComponent(suspendWs.value)}/unsuspend`, { reason: suspendReason.value })) }, "Unsuspend")));
  await listTokens();
}

// ---------------------------------------------------------------- routing

// Each route() starts a generation; a view that awaited an answer renders only if no route started
// since (a slow answer for a view the user has left must not replace the one they went to).
let routeGen = 0;

async function route() {
  routeGen += 1;
  const nav = document.getElementById("nav");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const query = new URLSearchParams(location.search);
  if (query.has("code") || query.has("error") || query.has("state")) {
    nav.hidden = true;
    return oidcReturn(query);
  }
  if (!token()) {
    nav.hidden = true;
    document.getElementById("whoami").textContent = "";
    banner.replaceChildren();
    signin();
    return;
  }
  nav.hidden = false;
  refreshBanner();
  api("GET", "/v1/whoami").then((w) => {
    document.getElementById("whoami").textContent = `${w.user} · ${w.role} · ${w.workspace_id}`;
  }).catch(() => {});
  for (const a of nav.querySelectorAll("a")) {
    if (a.getAttribute("href") === `#/${parts[0]}`) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  switch (parts[0]) {
    case "version": return version(parts[1], parts[2], parts[3]);
    case "audit": return auditView();
    case "admin": return admin();
    default: return pending();
  }
}

// Sign-out forgets the credential and all this tab keeps, then ends the session at the identity
// provider when this tab signed in with it and it says how (oidc.signOut); else the sign-in page.
document.getElementById("signout-btn").addEventListener("click", async () => {
  if (await oidc.signOut()) return;
  if (location.hash === "#/signin") route();
  else location.hash = "#/signin";
});
window.addEventListener("hashchange", route);
route();

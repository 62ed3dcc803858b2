// Receipt verification in the browser: a DSSE envelope's signature (ECDSA P-256, SHA-256, DER) over
// the pre-authentication encoding, checked with WebCrypto against the registry's key history (each key
// id recomputed as sha256 of its DER public key, and the receipt dated inside the key's window).

const enc = new TextEncoder();

export function b64decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

// DSSEv1 SP len(type) SP type SP len(body) SP body
export function pae(type, body) {
  const t = enc.encode(type);
  const head = enc.encode(`DSSEv1 ${t.length} ${type} ${body.length} `);
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

// DER SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each (what WebCrypto verifies).
export function derToRaw(der) {
  let i = 0;
  const take = () => der[i++];
  const len = () => {
    let l = take();
    if (l & 0x80) {
      const n = l & 0x7f;
      l = 0;
      for (let k = 0; k < n; k++) l = (l << 8) | take();
    }
    return l;
  };
  if (take() !== 0x30) throw new Error("signature is not a DER sequence");
  len();
  const int = () => {
    if (take() !== 0x02) throw new Error("signature lacks an integer");
    const l = len();
    let v = der.slice(i, i + l);
    i += l;
    while (v.length > 32 && v[0] === 0) v = v.slice(1);
    if (v.length > 32) throw new Error("signature integer too long");
    const out = new Uint8Array(32);
    out.set(v, 32 - v.length);
    return out;
  };
  const r = int();
  const s = int();
  const raw = new Uint8Array(64);
  raw.set(r, 0);
  raw.set(s, 32);
  return raw;
}

function pemToDer(pem) {
  const body = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, "").replace(/\s+/g, "");
  return b64decode(body);
}

// The registry's key history (GET /v1/governance/public-key): current and previous keys, imported
// once, each with its key id checked against its DER.
export async function loadKeys(doc) {
  const all = [doc, ...(doc.previous || [])];
  const keys = [];
  for (const k of all) {
    const der = pemToDer(k.pem);
    const id = "sha256:" + hex(await crypto.subtle.digest("SHA-256", der));
    if (id !== k.key_id) throw new Error(`key ${k.key_id} does not hash to its id`);
    const key = await crypto.subtle.importKey("spki", der, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
    keys.push({ id, key, validFrom: k.valid_from || null, retiredAt: k.retired_at || null });
  }
  return keys;
}

// { ok: true, keyId, statement } or { ok: false, why, statement? }
export async function verifyReceipt(envelope, keys) {
  try {
    const body = b64decode(envelope.payload);
    const statement = JSON.parse(new TextDecoder().decode(body));
    const message = pae(envelope.payloadType, body);
    for (const sig of envelope.signatures || []) {
      const k = keys.find((x) => x.id === sig.keyid);
      if (!k) continue;
      const ok = await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, k.key, derToRaw(b64decode(sig.sig)), message);
      if (!ok) return { ok: false, why: `the signature by key ${sig.keyid} does not verify`, statement };
      const at = Date.parse(statement.time);
      if (k.validFrom && at < Date.parse(k.validFrom)) return { ok: false, why: `dated before key ${k.id} was valid`, statement };
      if (k.retiredAt && at >= Date.parse(k.retiredAt)) return { ok: false, why: `dated after key ${k.id} was retired`, statement };
      if (statement.key_id && statement.key_id !== k.id) return { ok: false, why: "the statement names another key", statement };
      return { ok: true, keyId: k.id, statement };
    }
    return { ok: false, why: "signed by no key of the registry's key history", statement };
  } catch (e) {
    return { ok: false, why: `unreadable receipt: ${e.message}` };
  }
}

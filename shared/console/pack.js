// The evidence pack of an export, assembled in the browser: the same archive `helix export --pack`
// writes (helix.evidence-pack.v1, shared/src/evidence_pack.rs: PACK.json, manifest.json, keys.json,
// ledger.json, export-receipt.json, then files/<path> in manifest order; GNU tar, mode 0644, owner 0,
// time 0), checked by `helix verify-pack FILE --public-key KEY.pem` offline. Every byte comes from
// the registry: the manifest and the files through the export's proof URLs (the registry's signed
// grants; files past the first 1,000 through the blob route with the signed-in token), the ledger
// and keys from the API; a file above HELIX_INLINE_MAX by the proof URL's redirect to a presigned GET
// of the bucket (whose origin the policy's connect-src names, and whose CORS rule lets this origin
// read it). Each file and the manifest are checked against their digests before they go
// in, so a pack that would not verify is never offered.

const enc = new TextEncoder();
const pretty = (v) => enc.encode(JSON.stringify(v, null, 2));

async function sha256(bytes) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return `sha256:${Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

function header(name, size, type) {
  if (size > 0o77777777777) throw new Error(`${name}: larger than 8 GiB; use helix export --pack`);
  const h = new Uint8Array(512);
  const put = (offset, length, text) => h.set(enc.encode(text).subarray(0, length), offset);
  put(0, 100, name);
  put(100, 8, "0000644\0");
  put(108, 8, "0000000\0");
  put(116, 8, "0000000\0");
  put(124, 12, `${size.toString(8).padStart(11, "0")}\0`);
  put(136, 12, "00000000000\0");
  h.fill(0x20, 148, 156);
  put(156, 1, type);
  put(257, 8, "ustar  \0");
  put(148, 8, `${h.reduce((a, b) => a + b, 0).toString(8).padStart(6, "0")}\0 `);
  return h;
}

const padding = (size) => new Uint8Array((512 - (size % 512)) % 512);

// One regular file; a name longer than the header's 100 bytes goes first as a GNU long name.
function entry(parts, name, bytes) {
  const long = enc.encode(name);
  if (long.length > 100) {
    const data = new Uint8Array(long.length + 1);
    data.set(long);
    parts.push(header("././@LongLink", data.length, "L"), data, padding(data.length));
  }
  parts.push(header(name, bytes.byteLength, "0"), bytes, padding(bytes.byteLength));
}

async function fetchChecked(url, init, digest, what) {
  let resp;
  try {
    resp = await fetch(url, init);
  } catch (e) {
    throw new Error(`${what} could not be fetched (${e.message}); a large file comes from the bucket by redirect, which the bucket's CORS rule must allow for this origin (template parameter ConsoleOrigin): else use helix export --pack`);
  }
  if (!resp.ok) throw new Error(`${what}: HTTP ${resp.status}`);
  const bytes = new Uint8Array(await resp.arrayBuffer());
  const got = await sha256(bytes);
  if (got !== digest) throw new Error(`${what} hashes to ${got}, not ${digest}`);
  return bytes;
}

// The pack of export `x` (the export answer) of `ws`/`name`@`ver`, whose version (GET …/versions/{v})
// is `v`, as a Blob. `call(method, path)` is the console's API call with the signed-in `token`.
export async function evidencePack({ ws, name, ver, v, x, call, token, progress }) {
  const base = `/v1/workspaces/${ws}/bundles/${name}/versions/${ver}`;
  const files = v.manifest.files;
  const manifest = await fetchChecked(x.proof.manifest.url, {}, v.manifest_digest, "manifest.json");
  const [ledger, keys] = await Promise.all([call("GET", `${base}/governance`), call("GET", "/v1/governance/public-key")]);
  const about = {
    format: "helix.evidence-pack.v1",
    bundle: `${ws}/${name}@${ver}`,
    registry: location.origin,
    manifest_digest: v.manifest_digest,
    export_seq: x.seq,
    made_at: new Date().toISOString(),
    made_by: "the web console",
    verify_with: "helix verify-pack FILE --public-key KEY.pem (or --key-fingerprint sha256:…, or --registry URL)",
  };
  const parts = [];
  entry(parts, "PACK.json", pretty(about));
  entry(parts, "manifest.json", manifest);
  entry(parts, "keys.json", pretty(keys));
  entry(parts, "ledger.json", pretty(ledger));
  entry(parts, "export-receipt.json", pretty(x.receipt));
  for (const [i, f] of files.entries()) {
    if (progress) progress(`Fetching ${f.path} (${i + 1} of ${files.length})…`);
    const proof = x.proof.files[i];
    const bytes = proof && proof.url
      ? await fetchChecked(proof.url, {}, f.digest, f.path)
      : await fetchChecked(`/v1/workspaces/${ws}/blobs/${f.digest}`, { headers: { authorization: `Bearer ${token}` } }, f.digest, f.path);
    entry(parts, `files/${f.path}`, bytes);
  }
  parts.push(new Uint8Array(1024));
  return new Blob(parts, { type: "application/x-tar" });
}

//! `helix audit verify`: checks exported audit days offline (SPEC §5), from a directory or a bucket.
//! Nothing is taken on trust but the public keys the auditor passes in:
//! - every event line is canonical, hashes to its `hash`, falls on its day, and follows the previous
//!   event of its stream (seq + 1, `prev` = that event's hash, `ts` not earlier): a changed,
//!   inserted, reordered or deleted event breaks this;
//! - each day's manifest and checkpoint statement are rebuilt from the events and must be byte-equal
//!   to the stored manifest and the signed payload, and the checkpoint's signature must verify;
//! - the days run from the genesis (its statement says so) without a missing date, each linking the
//!   previous day's manifest and checkpoint by SHA-256: a deleted or replaced day, or a replaced
//!   checkpoint, breaks this; every stream starts at seq 1 on the day it first appears.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use async_trait::async_trait;
use time::Date;

use crate::audit_export::{self, FILES, PAYLOAD_TYPE, StreamRun, day_string, manifest_doc, parse_day, statement_doc};
use crate::domain::{AuditEvent, DigestWriter};
use crate::ports::PublicKeyInfo;

/// Where exported days are read from: keys relative to the audit root (`2026/11/22/events.jsonl`,
/// `genesis.json`, `keys/<hex>.pem`).
#[async_trait]
pub trait Evidence: Send + Sync {
    /// Every key under the root.
    async fn list(&self) -> Result<Vec<String>, String>;
    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, String>;

    /// A file to read as a stream (a day's events may be large).
    async fn open(&self, key: &str) -> Result<Option<Box<dyn std::io::BufRead + Send>>, String>;
}

/// A directory holding the `audit/` tree (the directory itself, or its parent).
pub struct DirEvidence {
    root: PathBuf,
}

impl DirEvidence {
    pub fn open(dir: PathBuf) -> Result<DirEvidence, String> {
        let root = if dir.join("audit").is_dir() { dir.join("audit") } else { dir };
        if !root.is_dir() {
            return Err(format!("{} is not a directory", root.display()));
        }
        Ok(DirEvidence { root })
    }
}

#[async_trait]
impl Evidence for DirEvidence {
    async fn list(&self) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let path = entry.map_err(|e| e.to_string())?.path();
                let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                if meta.file_type().is_symlink() {
                    return Err(format!("{} is a symbolic link: an export holds plain files only", path.display()));
                }
                if meta.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        Ok(out)
    }

    async fn open(&self, key: &str) -> Result<Option<Box<dyn std::io::BufRead + Send>>, String> {
        match std::fs::File::open(self.root.join(key)) {
            Ok(f) => Ok(Some(Box::new(std::io::BufReader::with_capacity(256 * 1024, f)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{key}: {e}")),
        }
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        match std::fs::read(self.root.join(key)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{key}: {e}")),
        }
    }
}

/// `{prefix}audit/` in an S3 bucket.
pub struct S3Evidence {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    /// The registry's key prefix (HELIX_S3_PREFIX), `audit/` is appended.
    pub prefix: String,
}

#[async_trait]
impl Evidence for S3Evidence {
    async fn list(&self) -> Result<Vec<String>, String> {
        let root = format!("{}audit/", self.prefix);
        let mut out = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&root).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                format!("listing s3://{}/{root}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(e))
            })?;
            for o in page.contents() {
                if let Some(k) = o.key().and_then(|k| k.strip_prefix(&root)) {
                    out.push(k.to_owned());
                }
            }
        }
        Ok(out)
    }

    async fn open(&self, key: &str) -> Result<Option<Box<dyn std::io::BufRead + Send>>, String> {
        use std::io::{Seek, Write};
        // Downloaded to an unlinked temporary file, then read from disk: memory stays flat.
        let full = format!("{}audit/{key}", self.prefix);
        let mut o = match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
            Ok(o) => o,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            Err(e) => {
                return Err(format!("s3://{}/{full}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(e)));
            }
        };
        let (tmp, mut file) = crate::audit_export::TempFile::create("helix-verify").map_err(|e| e.to_string())?;
        drop(tmp);
        while let Some(chunk) = o.body.try_next().await.map_err(|e| format!("{full}: {e}"))? {
            file.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        file.rewind().map_err(|e| e.to_string())?;
        Ok(Some(Box::new(std::io::BufReader::with_capacity(256 * 1024, file))))
    }

    async fn read(&self, key: &str) -> Result<Option<Vec<u8>>, String> {
        let full = format!("{}audit/{key}", self.prefix);
        match self.client.get_object().bucket(&self.bucket).key(&full).send().await {
            Ok(o) => Ok(Some(o.body.collect().await.map_err(|e| format!("{full}: {e}"))?.into_bytes().to_vec())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(format!("s3://{}/{full}: {}", self.bucket, aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }
}

/// The longest event line read (an event is at most a DynamoDB item, 400 KB).
const MAX_LINE: usize = 1024 * 1024;

/// What a successful verification covered.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    pub days: usize,
    pub first_day: String,
    pub last_day: String,
    pub events: u64,
    pub streams: usize,
    pub key_ids: Vec<String>,
}

/// The last verified event of a stream.
struct Tip {
    seq: u64,
    hash: String,
    ts: String,
}

/// Verify every exported day in `evidence` with `keys` (the registry's current and earlier keys).
/// The error is one line naming the first thing that does not hold.
pub async fn verify(evidence: &dyn Evidence, keys: &[PublicKeyInfo]) -> Result<Summary, String> {
    let keys = &with_exported_retirements(evidence, keys).await?;
    let mut days: BTreeSet<Date> = BTreeSet::new();
    // Only what an export writes, spelled as it writes it: anything else is refused, never ignored
    // (a tool that globs the tree must not read unverified files).
    for key in evidence.list().await? {
        let parts: Vec<&str> = key.split('/').collect();
        let digits = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_digit());
        match parts[..] {
            ["genesis.json"] => {}
            ["keys", pem]
                if pem
                    .strip_suffix(".pem")
                    .or_else(|| pem.strip_suffix(".retired.json"))
                    .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())) => {}
            [y, m, d, file] if digits(y, 4) && digits(m, 2) && digits(d, 2) && FILES.contains(&file) => {
                let day = parse_day(&format!("{y}-{m}-{d}")).map_err(|_| format!("unexpected file {key}"))?;
                days.insert(day);
            }
            _ => return Err(format!("unexpected file {key}: not part of an audit export")),
        }
    }
    let (Some(&first), Some(&last)) = (days.first(), days.last()) else {
        return Err("no exported day found".into());
    };
    if let Some(doc) = evidence.read("genesis.json").await? {
        let g: serde_json::Value = serde_json::from_slice(&doc).map_err(|e| format!("genesis.json: {e}"))?;
        if g["day"].as_str() != Some(day_string(first).as_str()) {
            return Err(format!("genesis.json names {}, but the first day present is {}", g["day"], day_string(first)));
        }
    }
    let mut tips: HashMap<String, Tip> = HashMap::new();
    let mut previous: Option<(Date, Vec<u8>, Vec<u8>)> = None;
    let mut key_ids: Vec<String> = Vec::new();
    let mut events_total = 0u64;
    for &day in &days {
        let day_s = day_string(day);
        if let Some((p, _, _)) = &previous
            && p.next_day() != Some(day)
        {
            return Err(format!(
                "day {} is missing (after {})",
                day_string(p.next_day().unwrap_or(day)),
                day_string(*p)
            ));
        }
        // The export's own key layout, relative to the audit root the evidence is read from.
        let at = |file: &str| crate::audit_export::key(day, file).trim_start_matches("audit/").to_owned();
        let missing = |f: &str| format!("{day_s}: {f} is missing");
        let manifest = evidence.read(&at("manifest.json")).await?.ok_or_else(|| missing("manifest.json"))?;
        let checkpoint = evidence.read(&at("checkpoint.json")).await?.ok_or_else(|| missing("checkpoint.json"))?;
        let mut reader = evidence.open(&at("events.jsonl")).await?.ok_or_else(|| missing("events.jsonl"))?;

        // The events, line by line (never the whole file in memory), against their streams' chains.
        let mut hasher = DigestWriter::default();
        let mut runs: Vec<serde_json::Value> = Vec::new();
        let mut run: Option<StreamRun> = None;
        let mut last_key: Option<(String, u64)> = None;
        let mut count = 0u64;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            // A line is read up to a bound: a planted giant line is a refusal, not an exhausted memory.
            let mut bounded = std::io::Read::take(&mut reader, MAX_LINE as u64 + 1);
            let n = std::io::BufRead::read_until(&mut bounded, b'\n', &mut raw)
                .map_err(|e| format!("{day_s}: events.jsonl: {e}"))?;
            if n == 0 {
                break;
            }
            hasher.update(&raw);
            count += 1;
            let at = || format!("{day_s} line {count}");
            if raw.len() > MAX_LINE {
                return Err(format!("{}: longer than {MAX_LINE} bytes: no event is", at()));
            }
            let buf = std::str::from_utf8(&raw).map_err(|_| format!("{}: not UTF-8", at()))?;
            let Some(line) = buf.strip_suffix('\n') else {
                return Err(format!("{day_s}: events.jsonl does not end with a newline (truncated?)"));
            };
            let e = AuditEvent::from_canonical(line).map_err(|_| format!("{}: not an audit event", at()))?;
            let (canonical, hash) = e.canonical_and_hash().map_err(|_| format!("{}: not an audit event", at()))?;
            if canonical != line {
                return Err(format!("{}: not the canonical form of its event", at()));
            }
            let name = format!("{}#{}", e.stream, e.seq);
            if hash != e.hash {
                return Err(format!("{}: event {name} does not hash to its hash (changed)", at()));
            }
            if e.day() != day_s {
                return Err(format!("{}: event {name} is dated {}, not {day_s}", at(), e.ts));
            }
            let key = (e.stream.clone(), e.seq);
            if last_key.as_ref().is_some_and(|k| *k >= key) {
                return Err(format!("{}: event {name} is out of (stream, seq) order (reordered or duplicated)", at()));
            }
            last_key = Some(key);
            match tips.get(&e.stream) {
                Some(tip) if e.seq != tip.seq + 1 => {
                    return Err(format!(
                        "{}: {} seq {} follows seq {}: events are missing or inserted",
                        at(),
                        e.stream,
                        e.seq,
                        tip.seq
                    ));
                }
                Some(tip) if e.prev.as_deref() != Some(tip.hash.as_str()) => {
                    return Err(format!("{}: event {name} does not link to the previous event of its stream", at()));
                }
                Some(tip) if e.ts < tip.ts => {
                    return Err(format!("{}: event {name} is dated before the previous event of its stream", at()));
                }
                None if e.seq != 1 || e.prev.is_some() => {
                    return Err(format!(
                        "{}: stream {} starts at seq {}: its earlier events are in no verified day",
                        at(),
                        e.stream,
                        e.seq
                    ));
                }
                _ => {}
            }
            tips.insert(e.stream.clone(), Tip { seq: e.seq, hash: e.hash.clone(), ts: e.ts.clone() });
            match run.as_mut() {
                Some(r) if r.stream == e.stream => r.push(&e),
                _ => {
                    if let Some(done) = run.replace(StreamRun::start(&e)) {
                        runs.push(done.entry());
                    }
                }
            }
        }
        if let Some(done) = run.take() {
            runs.push(done.entry());
        }
        events_total += count;

        // The manifest and the statement, rebuilt, must be what was stored and signed.
        let is_genesis = previous.is_none();
        let prev_manifest = previous.as_ref().map(|(_, m, _)| audit_export::sha256(m));
        let prev_checkpoint = previous.as_ref().map(|(_, _, c)| audit_export::sha256(c));
        let (payload, key_id) =
            open_checkpoint(&checkpoint, keys).map_err(|e| format!("{day_s}: checkpoint.json: {e}"))?;
        // A day is signed after it ends: a key retired before the end of the day cannot have signed it.
        let key = keys.iter().find(|k| k.key_id == key_id).expect("the key that verified");
        let day_end = day.next_day().unwrap_or(day).midnight().assume_utc();
        if let Some(why) = key.outside_window(day_end, false) {
            return Err(format!("{day_s}: checkpoint.json: {why}"));
        }
        let statement: serde_json::Value =
            serde_json::from_slice(&payload).map_err(|e| format!("{day_s}: checkpoint statement: {e}"))?;
        if is_genesis && statement["genesis"] != true {
            return Err(format!(
                "{day_s} is the first day present but not the genesis: the days before it are missing"
            ));
        }
        let expected_manifest = manifest_doc(&day_s, count, &hasher.finish().to_string(), runs, prev_manifest)
            .map_err(|e| e.to_string())?;
        if manifest != expected_manifest.as_bytes() {
            return Err(format!("{day_s}: manifest.json does not match the day's events and the previous day"));
        }
        let expected = statement_doc(&day_s, is_genesis, &audit_export::sha256(&manifest), count, prev_checkpoint)
            .map_err(|e| e.to_string())?;
        if payload != expected.as_bytes() {
            return Err(format!(
                "{day_s}: the signed statement does not match the manifest and the previous checkpoint"
            ));
        }
        if !key_ids.contains(&key_id) {
            key_ids.push(key_id);
        }
        previous = Some((day, manifest, checkpoint));
    }
    Ok(Summary {
        days: days.len(),
        first_day: day_string(first),
        last_day: day_string(last),
        events: events_total,
        streams: tips.len(),
        key_ids,
    })
}

/// `keys`, each with the earlier of its own retirement and the one the export records for it
/// (`keys/<hex>.retired.json`). A retirement file can only narrow a pinned key's window; one that does
/// not name its key is refused. (Deleting the file widens nothing the registry's key history, pinned
/// with `--registry`, already bounds.)
async fn with_exported_retirements(
    evidence: &dyn Evidence,
    keys: &[PublicKeyInfo],
) -> Result<Vec<PublicKeyInfo>, String> {
    let mut out = keys.to_vec();
    for key in &mut out {
        let file = crate::keys::retired_file(&key.key_id).trim_start_matches("audit/").to_owned();
        let Some(doc) = evidence.read(&file).await? else { continue };
        let v: serde_json::Value = serde_json::from_slice(&doc).map_err(|e| format!("{file}: {e}"))?;
        let at = v["retired_at"].as_str().filter(|_| v["key_id"] == key.key_id.as_str());
        let at = at.ok_or_else(|| format!("{file}: not the retirement of key {}", key.key_id))?;
        if key.retired_at.as_deref().is_none_or(|mine| at < mine) {
            key.retired_at = Some(at.to_owned());
        }
    }
    Ok(out)
}

/// The payload of a checkpoint whose signature verifies with one of `keys`, and the id of the key
/// that verified it (not merely one the envelope names).
fn open_checkpoint(envelope: &[u8], keys: &[PublicKeyInfo]) -> Result<(Vec<u8>, String), String> {
    let (payload, key) = crate::dsse::verify_by(envelope, PAYLOAD_TYPE, keys)?;
    Ok((payload, key.key_id.clone()))
}

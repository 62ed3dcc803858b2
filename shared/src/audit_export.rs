//! The daily audit export (SPEC §5): for one UTC day, `{prefix}audit/YYYY/MM/DD/` gets
//! `events.jsonl` (canonical events ordered by stream, seq), `manifest.json` (counts, SHA-256 of the
//! JSONL, first/last seq and hash per stream, SHA-256 of the previous day's manifest) and
//! `checkpoint.json` (a DSSE envelope signed by the registry's key over a small statement), all
//! put-if-absent. Re-running a day rewrites nothing: events and manifest must be byte-identical, the
//! checkpoint must carry the same statement under a valid signature (ECDSA signatures are randomised,
//! so a fresh one would differ). Anything else fails loudly and is audited as `audit.export_mismatch`.
//!
//! The days form one unbroken chain from the genesis, the first exported day, recorded once in
//! `audit/genesis.json`: its statement says `"genesis": true` and links to nothing; every later day
//! links to the day before it, which must be exported first. A run for day D exports every missing
//! day before D oldest first (at most `MAX_DAYS_PER_RUN`), then D; a day that cannot be exported
//! stops the run with an `audit.export_failed` event and nothing signed for it or any later day.
//! Before a day is written it must add up: every stream's events that day are one gapless run whose
//! first event follows the last one of the stream in an earlier exported day (or is seq 1), and the
//! stream's next event (if any) falls on a later day. Only a settled day is exported: `SETTLE` after
//! its end, so no event can still land on it (a stream's `ts` never goes back).
//! The signing key's PEM goes to `audit/keys/{hex}.pem`, and into the registry's key history, so a
//! day signed before a key rotation still verifies after it.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Value, json};
use time::{Date, OffsetDateTime};

use crate::App;
use crate::domain::{AuditDraft, AuditEvent, Digest, DigestWriter, Outcome, canonical};
use crate::error::{Error, Result};
use crate::ports::{PublicKeyInfo, PutOutcome};

pub use crate::keys::{CHECKPOINT_PAYLOAD_TYPE as PAYLOAD_TYPE, key_file};
const ACTOR: &str = "audit-export";
/// The files of one exported day, in the order they are written.
pub const FILES: [&str; 3] = ["events.jsonl", "manifest.json", "checkpoint.json"];
/// Where the first exported day is recorded, once.
pub const GENESIS_KEY: &str = "audit/genesis.json";
/// How long after a day's end it is exported at the earliest. Commits retry for at most 12 s and
/// instance clocks are within a second or so; 5 minutes is ample, and the schedule runs at 00:15.
pub const SETTLE: time::Duration = time::Duration::minutes(5);
/// Most days one scheduled run exports (the missing ones before the asked day included); a failed
/// run is retried twice by Lambda, each retry going on from where the last one stopped.
pub const MAX_DAYS_PER_RUN: usize = 31;
/// Events read per index page.
const PAGE: usize = 1000;

/// What one run did for the day it was asked for.
#[derive(Debug, serde::Serialize)]
pub struct ExportReport {
    pub day: String,
    pub event_count: u64,
    pub manifest_sha256: String,
    pub genesis: bool,
    /// Files this run created; the others were already there, identical.
    pub written: Vec<String>,
    pub unchanged: Vec<String>,
    /// Missing earlier days this run exported first, oldest first.
    pub backfilled: Vec<String>,
}

/// `audit/YYYY/MM/DD/<file>`.
pub fn key(day: Date, file: &str) -> String {
    format!("audit/{:04}/{:02}/{:02}/{file}", day.year(), u8::from(day.month()), day.day())
}

pub use crate::domain::time::{day_string, parse_day};

/// `sha256:` + hex, as manifests and statements name files.
pub fn sha256(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

fn previous(day: Date) -> Result<Date> {
    day.previous_day().ok_or_else(|| Error::BadRequest("no day before this one".into()))
}

/// The events of one day, of every stream, in (stream, seq) order, a page per shard at a time: the
/// index shards, each in that order and holding whole streams, merged. Memory: one page per shard.
pub struct DayReader<'a> {
    app: &'a App,
    day: String,
    shards: Vec<ShardCursor>,
}

#[derive(Default)]
struct ShardCursor {
    buf: std::collections::VecDeque<AuditEvent>,
    after: Option<String>,
    done: bool,
}

impl<'a> DayReader<'a> {
    pub fn new(app: &'a App, day: &str) -> DayReader<'a> {
        let shards = (0..app.audit.day_shards()).map(|_| ShardCursor::default()).collect();
        DayReader { app, day: day.to_owned(), shards }
    }

    /// The next event of the day, or None after the last.
    pub async fn next(&mut self) -> Result<Option<AuditEvent>> {
        for (i, c) in self.shards.iter_mut().enumerate() {
            if c.buf.is_empty() && !c.done {
                let page = self.app.audit.read_day_shard(&self.day, i as u8, c.after.as_deref(), PAGE).await?;
                c.done = page.len() < PAGE;
                c.after = page.last().map(AuditEvent::ord_key);
                c.buf.extend(page);
            }
        }
        let first = self
            .shards
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|e| (i, (e.stream.as_str(), e.seq))))
            .min_by(|a, b| a.1.cmp(&b.1))
            .map(|(i, _)| i);
        Ok(first.and_then(|i| self.shards[i].buf.pop_front()))
    }
}

/// Every event of `day`, of every stream, in (stream, seq) order (in memory: for tests and small days).
pub async fn read_day(app: &App, day: &str) -> Result<Vec<AuditEvent>> {
    let mut reader = DayReader::new(app, day);
    let mut events = Vec::new();
    while let Some(e) = reader.next().await? {
        events.push(e);
    }
    Ok(events)
}

/// The recorded genesis day, if any.
pub async fn genesis(app: &App) -> Result<Option<Date>> {
    let Some(doc) = app.blobs.get_document(GENESIS_KEY).await? else { return Ok(None) };
    let v: Value = serde_json::from_slice(&doc).map_err(|e| Error::Internal(format!("{GENESIS_KEY}: {e}")))?;
    let day = v["day"].as_str().ok_or_else(|| Error::Internal(format!("{GENESIS_KEY} names no day")))?;
    Ok(Some(parse_day(day)?))
}

async fn exported(app: &App, day: Date) -> Result<bool> {
    Ok(app.blobs.get_document(&key(day, "checkpoint.json")).await?.is_some())
}

/// Export `day`, after every missing day before it, at most `MAX_DAYS_PER_RUN` days in one run; `now`
/// is the caller's clock (the function passes the real one).
pub async fn export_day(app: &App, day: Date, now: OffsetDateTime, request_id: &str) -> Result<ExportReport> {
    export_through(app, day, now, request_id, MAX_DAYS_PER_RUN).await
}

/// `export_day` with another bound on the days one run exports (`helix audit export` has none).
pub async fn export_through(
    app: &App,
    day: Date,
    now: OffsetDateTime,
    request_id: &str,
    max_days: usize,
) -> Result<ExportReport> {
    let day_s = day_string(day);
    let settled = OffsetDateTime::new_utc(day.next_day().unwrap_or(day), time::Time::MIDNIGHT) + SETTLE;
    if now < settled {
        return Err(Error::BadRequest(format!(
            "{day_s} is not settled yet: a day is exported from {} minutes after its end (UTC)",
            SETTLE.whole_minutes()
        )));
    }
    let genesis = match genesis(app).await? {
        Some(g) if day < g => {
            return Err(Error::BadRequest(format!("{day_s} is before the first exported day, {}", day_string(g))));
        }
        Some(g) => Some(g),
        None => None,
    };
    // The first day to export: the genesis to be (the day of the trail's earliest event, if before
    // the asked day), or the day after the last exported one.
    let mut start = day;
    match genesis {
        None => {
            if let Some(first) = app.audit.first_event_day().await? {
                start = start.min(parse_day(&first)?);
            }
        }
        Some(g) => {
            while start > g && !exported(app, previous(start)?).await? {
                start = previous(start)?;
            }
        }
    }
    let genesis = genesis.unwrap_or(start);
    // The signing key, once per run: recorded before any day is read (recording appends an event,
    // which must not land on a day after it was read), and the key history re-runs are checked with.
    let signing = match signing_key(app, request_id).await {
        Ok(k) => k,
        Err(e) => return Err(fail(app, start, day, request_id, e).await),
    };
    let mut backfilled = Vec::new();
    let mut d = start;
    loop {
        if backfilled.len() + 1 >= max_days && d < day {
            // Progress, not a failure: no audit.export_failed event; the caller (or Lambda's retry) goes on.
            let upto = backfilled.last().cloned().unwrap_or_default();
            let detail =
                format!("exported {} missing days up to {upto}; run again to go on to {day_s}", backfilled.len());
            tracing::warn!(%detail, "audit export backlog");
            return Err(Error::AuditExportBlocked(detail));
        }
        let report = match export_one(app, d, genesis, &signing, request_id).await {
            Ok(r) => r,
            Err(e) => return Err(fail(app, d, day, request_id, e).await),
        };
        if d == day {
            return Ok(ExportReport { backfilled, ..report });
        }
        backfilled.push(report.day);
        d = d.next_day().ok_or_else(|| Error::Internal("calendar overflow".into()))?;
    }
}

/// Record that `failed` could not be exported (and so neither `asked`), then hand the error back.
async fn fail(app: &App, failed: Date, asked: Date, request_id: &str, e: Error) -> Error {
    tracing::error!(day = %day_string(failed), asked = %day_string(asked), error = %e, "audit export failed");
    let draft = AuditDraft {
        stream: "*".into(),
        actor: ACTOR.into(),
        action: "audit.export_failed".into(),
        entity_type: "audit_day".into(),
        entity_id: day_string(failed),
        outcome: Outcome::Failed,
        request_id: request_id.to_owned(),
        details: json!({"asked": day_string(asked), "reason": crate::http::problem::classify(&e).1, "error": e.to_string()}),
    };
    if let Err(audit_err) = app.audit.append(draft).await {
        tracing::error!(error = %audit_err, "could not audit the failed export");
    }
    e
}

/// A day's files, ready to store: the events in a temporary file (removed when dropped), the
/// manifest and the statement in memory (they are small).
struct Prepared {
    genesis: bool,
    event_count: u64,
    jsonl: TempFile,
    jsonl_sha256: String,
    manifest: String,
    statement: String,
}

/// A file in the temporary directory, removed when dropped.
pub struct TempFile {
    pub path: std::path::PathBuf,
}

impl TempFile {
    pub fn create(prefix: &str) -> Result<(TempFile, std::fs::File)> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", crate::domain::random_hex::<8>()));
        // Readable by this user only: a day of every workspace's events.
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path).map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        Ok((TempFile { path }, file))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Remove day files an interrupted export left behind (older than a day; a crash skips `Drop`).
fn remove_stale_temp_files() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for e in entries.flatten() {
        let stale = e
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(86_400));
        if stale && e.file_name().to_string_lossy().starts_with("helix-audit-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A stream's run of events within one day: its entry in the day's manifest.
pub struct StreamRun {
    pub stream: String,
    pub count: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_hash: String,
    pub last_hash: String,
}

impl StreamRun {
    pub fn start(e: &AuditEvent) -> StreamRun {
        StreamRun {
            stream: e.stream.clone(),
            count: 1,
            first_seq: e.seq,
            last_seq: e.seq,
            first_hash: e.hash.clone(),
            last_hash: e.hash.clone(),
        }
    }

    pub fn push(&mut self, e: &AuditEvent) {
        self.count += 1;
        self.last_seq = e.seq;
        self.last_hash = e.hash.clone();
    }

    pub fn entry(&self) -> Value {
        json!({
            "stream": self.stream, "count": self.count,
            "first_seq": self.first_seq, "last_seq": self.last_seq,
            "first_hash": self.first_hash, "last_hash": self.last_hash,
        })
    }
}

/// Read `day` a page at a time, check that it adds up (each stream a gapless run continuing its last
/// exported event; nothing of the day missing from the index), write its JSONL to a temporary file
/// while hashing it, and build its manifest and statement. Memory stays at a page per index shard and
/// a line per stream, whatever the day's size.
async fn prepare(app: &App, day: Date, genesis: Date) -> Result<Prepared> {
    use std::io::Write;
    let day_s = day_string(day);
    let blocked = |detail: String| Error::AuditExportBlocked(format!("{day_s}: {detail}"));
    let is_genesis = day == genesis;
    remove_stale_temp_files();
    let (jsonl, file) = TempFile::create(&format!("helix-audit-{day_s}"))?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
    let io = |e: std::io::Error| Error::Internal(format!("writing the day's events: {e}"));
    let mut hasher = DigestWriter::default();
    let mut manifests: HashMap<String, Value> = HashMap::new();
    let mut streams: Vec<Value> = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut run: Option<StreamRun> = None;
    let mut prev: Option<AuditEvent> = None;
    let mut count = 0u64;
    let mut reader = DayReader::new(app, &day_s);
    while let Some(e) = reader.next().await? {
        if run.as_ref().is_none_or(|r| r.stream != e.stream) {
            if let Some(done) = run.take() {
                end_of_run(app, &done, &day_s, &blocked).await?;
                streams.push(done.entry());
            }
            prev = before_run(app, &e, day, genesis, &mut manifests, &blocked).await?;
            seen.insert(e.stream.clone());
            run = Some(StreamRun::start(&e));
        } else if let Some(r) = run.as_mut() {
            r.push(&e);
        }
        e.verify_after(prev.as_ref()).map_err(|err| blocked(err.to_string()))?;
        let line = e.canonical()?;
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
        out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n")).map_err(io)?;
        count += 1;
        prev = Some(e);
    }
    if let Some(done) = run.take() {
        end_of_run(app, &done, &day_s, &blocked).await?;
        streams.push(done.entry());
    }
    out.flush().map_err(io)?;
    out.get_ref().sync_all().map_err(io)?;
    drop(out);

    let (prev_manifest, prev_checkpoint) = if is_genesis {
        (None, None)
    } else {
        let p = previous(day)?;
        let missing = || blocked(format!("the day before, {}, is not exported", day_string(p)));
        let m = app.blobs.get_document(&key(p, "manifest.json")).await?.ok_or_else(missing)?;
        let c = app.blobs.get_document(&key(p, "checkpoint.json")).await?.ok_or_else(missing)?;
        // A stream active the day before and absent from today's index read must have no event today
        // (read consistently from the table): the index may lag, a day must not come out short.
        let pm: Value =
            serde_json::from_slice(&m).map_err(|e| blocked(format!("manifest of {}: {e}", day_string(p))))?;
        for s in pm["streams"].as_array().into_iter().flatten() {
            let (Some(stream), Some(last)) = (s["stream"].as_str(), s["last_seq"].as_u64()) else { continue };
            if seen.contains(stream) {
                continue;
            }
            if let Some(next) = app.audit.event(stream, last + 1).await?
                && next.day() == day_s
            {
                return Err(blocked(format!("{stream} seq {} is missing from the day index; retry later", next.seq)));
            }
        }
        (Some(sha256(&m)), Some(sha256(&c)))
    };
    let jsonl_sha256 = hasher.finish().to_string();
    let manifest = manifest_doc(&day_s, count, &jsonl_sha256, streams, prev_manifest)?;
    let statement = statement_doc(&day_s, is_genesis, &sha256(manifest.as_bytes()), count, prev_checkpoint)?;
    Ok(Prepared { genesis: is_genesis, event_count: count, jsonl, jsonl_sha256, manifest, statement })
}

/// The stream's event before its first one of `day` (None: it starts at seq 1), which must be the
/// last event of the stream in an exported day at or after the genesis.
async fn before_run(
    app: &App,
    first: &AuditEvent,
    day: Date,
    genesis: Date,
    manifests: &mut HashMap<String, Value>,
    blocked: &impl Fn(String) -> Error,
) -> Result<Option<AuditEvent>> {
    let stream = &first.stream;
    if first.seq == 1 {
        return Ok(None);
    }
    let p = app
        .audit
        .event(stream, first.seq - 1)
        .await?
        .ok_or_else(|| blocked(format!("{stream} lacks seq {}", first.seq - 1)))?;
    let p_day = parse_day(p.day())?;
    if day == genesis || p_day < genesis {
        return Err(blocked(format!(
            "{stream} has events from {} that no export holds: export that day first (invoke with {{\"day\": \"{}\"}})",
            p.day(),
            p.day()
        )));
    }
    if p_day >= day {
        return Err(blocked(format!("{stream} seq {} is missing from the day index; retry later", p.seq)));
    }
    if !manifests.contains_key(p.day()) {
        let doc = app
            .blobs
            .get_document(&key(p_day, "manifest.json"))
            .await?
            .ok_or_else(|| blocked(format!("{} is not exported", p.day())))?;
        let m: Value = serde_json::from_slice(&doc).map_err(|e| blocked(format!("manifest of {}: {e}", p.day())))?;
        manifests.insert(p.day().to_owned(), m);
    }
    let holds = manifests[p.day()]["streams"].as_array().into_iter().flatten().any(|s| {
        s["stream"] == stream.as_str() && s["last_seq"].as_u64() == Some(p.seq) && s["last_hash"] == p.hash.as_str()
    });
    if !holds {
        return Err(blocked(format!("{stream} seq {} is not the last event of {}'s export", p.seq, p.day())));
    }
    Ok(Some(p))
}

/// The stream's next event after its last one of `day`, if any, must fall on a later day.
async fn end_of_run(app: &App, run: &StreamRun, day_s: &str, blocked: &impl Fn(String) -> Error) -> Result<()> {
    if let Some(next) = app.audit.event(&run.stream, run.last_seq + 1).await?
        && next.day() <= day_s
    {
        return Err(blocked(format!("{} seq {} is missing from the day index; retry later", run.stream, next.seq)));
    }
    Ok(())
}

/// `manifest.json` of a day, canonical.
pub fn manifest_doc(
    day: &str,
    count: u64,
    events_sha256: &str,
    streams: Vec<Value>,
    prev: Option<String>,
) -> Result<String> {
    canonical::to_string(&json!({
        "day": day,
        "event_count": count,
        "events_sha256": events_sha256,
        "streams": streams,
        "previous_manifest_sha256": prev,
    }))
}

/// The statement a day's checkpoint signs, canonical.
pub fn statement_doc(
    day: &str,
    genesis: bool,
    manifest_sha256: &str,
    count: u64,
    prev: Option<String>,
) -> Result<String> {
    canonical::to_string(&json!({
        "day": day,
        "genesis": genesis,
        "manifest_sha256": manifest_sha256,
        "event_count": count,
        "previous_checkpoint_sha256": prev,
    }))
}

/// Export one day whose predecessor (unless it is the genesis) is exported.
async fn export_one(
    app: &App,
    day: Date,
    genesis: Date,
    signing: &SigningKey,
    request_id: &str,
) -> Result<ExportReport> {
    let p = prepare(app, day, genesis).await?;
    if p.genesis {
        let record = canonical::to_string(&json!({"day": day_string(day)}))?;
        if app.blobs.put_document_if_absent(GENESIS_KEY, Bytes::from(record)).await? == PutOutcome::Existed
            && self::genesis(app).await? != Some(day)
        {
            return Err(Error::AuditExportBlocked("another run recorded a different genesis; run again".into()));
        }
    }
    let mut report = ExportReport {
        day: day_string(day),
        event_count: p.event_count,
        manifest_sha256: sha256(p.manifest.as_bytes()),
        genesis: p.genesis,
        written: Vec::new(),
        unchanged: Vec::new(),
        backfilled: Vec::new(),
    };
    store_events(app, day, &p.jsonl, &p.jsonl_sha256, request_id, &mut report).await?;
    let manifest = Bytes::from(p.manifest.into_bytes());
    store(app, &key(day, FILES[1]), FILES[1], manifest, request_id, &mut report, |stored, ours| stored == ours).await?;
    let checkpoint =
        crate::dsse::sign(app.signer.as_ref(), &signing.current, PAYLOAD_TYPE, p.statement.as_bytes()).await?;
    let statement = p.statement;
    // A day signed before a key rotation was signed by an earlier key of the registry's history.
    let same_statement = |stored: &[u8], _: &[u8]| {
        crate::dsse::verify(stored, PAYLOAD_TYPE, &signing.history)
            .ok()
            .and_then(|p| String::from_utf8(p).ok())
            .as_ref()
            == Some(&statement)
    };
    let k = key(day, FILES[2]);
    store(app, &k, FILES[2], Bytes::from(checkpoint.into_bytes()), request_id, &mut report, same_statement).await?;
    Ok(report)
}

/// The key this run signs with, and every key the registry has signed with (to check a stored day).
struct SigningKey {
    current: PublicKeyInfo,
    history: Vec<PublicKeyInfo>,
}

/// Put the signing key's PEM beside the days it signs, and record it in the registry's key history.
async fn signing_key(app: &App, request_id: &str) -> Result<SigningKey> {
    let current = app.signer.public_key().await?;
    let file = key_file(&current.key_id);
    if app.blobs.put_document_if_absent(&file, Bytes::from(current.pem.clone())).await? == PutOutcome::Existed
        && app.blobs.get_document(&file).await?.as_deref() != Some(current.pem.as_bytes())
    {
        return Err(Error::AuditExportMismatch(file));
    }
    crate::keys::record_signing_key(app, ACTOR, request_id, &current).await?;
    let history = crate::keys::verification_keys(app).await?;
    // Each retired key's end of validity goes beside its PEM, so offline verification applies it.
    for record in app.meta.signing_keys().await? {
        if let Some(at) = &record.retired_at {
            let doc = crate::keys::retired_doc(&record.key_id, at, record.retired_reason.as_deref().unwrap_or(""))?;
            let file = crate::keys::retired_file(&record.key_id);
            if app.blobs.put_document_if_absent(&file, Bytes::from(doc.clone())).await? == PutOutcome::Existed
                && app.blobs.get_document(&file).await?.as_deref() != Some(doc.as_bytes())
            {
                return Err(Error::AuditExportMismatch(file));
            }
        }
    }
    Ok(SigningKey { current, history })
}

/// Put the day's events from their temporary file if absent; when present, their SHA-256 must be ours.
async fn store_events(
    app: &App,
    day: Date,
    jsonl: &TempFile,
    jsonl_sha256: &str,
    request_id: &str,
    report: &mut ExportReport,
) -> Result<()> {
    let k = key(day, FILES[0]);
    let digest = Digest::parse(jsonl_sha256)?;
    match app.blobs.put_document_file_if_absent(&k, &jsonl.path, &digest).await? {
        PutOutcome::Created => report.written.push(FILES[0].to_owned()),
        PutOutcome::Existed => {
            let stored = app.blobs.document_sha256(&k).await?.map(|d| d.to_string()).unwrap_or_default();
            if stored != jsonl_sha256 {
                let details = json!({"file": k, "stored_sha256": stored, "expected_sha256": jsonl_sha256});
                app.audit.append(mismatch(&report.day, request_id, details)).await?;
                return Err(Error::AuditExportMismatch(k));
            }
            report.unchanged.push(FILES[0].to_owned());
        }
    }
    Ok(())
}

/// Put one file if absent; when present, `same(stored, ours)` decides whether it is this export.
async fn store(
    app: &App,
    key: &str,
    file: &str,
    bytes: Bytes,
    request_id: &str,
    report: &mut ExportReport,
    same: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<()> {
    match app.blobs.put_document_if_absent(key, bytes.clone()).await? {
        PutOutcome::Created => report.written.push(file.to_owned()),
        PutOutcome::Existed => {
            let stored = app.blobs.get_document(key).await?.unwrap_or_default();
            if !same(&stored, &bytes) {
                let details = json!({"file": key, "stored_sha256": sha256(&stored), "expected_sha256": sha256(&bytes)});
                app.audit.append(mismatch(&report.day, request_id, details)).await?;
                return Err(Error::AuditExportMismatch(key.to_owned()));
            }
            report.unchanged.push(file.to_owned());
        }
    }
    Ok(())
}

fn mismatch(day: &str, request_id: &str, details: Value) -> AuditDraft {
    AuditDraft {
        stream: "*".into(),
        actor: ACTOR.into(),
        action: "audit.export_mismatch".into(),
        entity_type: "audit_day".into(),
        entity_id: day.to_owned(),
        outcome: Outcome::Failed,
        request_id: request_id.to_owned(),
        details,
    }
}

/// The statement a stored checkpoint carries, if its signature verifies with one of `keys`.
pub fn verify_checkpoint(stored: &[u8], key: &PublicKeyInfo) -> std::result::Result<String, String> {
    let payload = crate::dsse::verify(stored, PAYLOAD_TYPE, std::slice::from_ref(key))?;
    String::from_utf8(payload).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_pae_have_the_documented_shape() {
        let day = Date::from_calendar_date(2026, time::Month::March, 7).unwrap();
        assert_eq!(key(day, "manifest.json"), "audit/2026/03/07/manifest.json");
        assert_eq!(day_string(day), "2026-03-07");
    }
}

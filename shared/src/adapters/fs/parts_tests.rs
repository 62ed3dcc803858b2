//! The embedded store's chunked uploads under test (`parts`): the join in place, the prefix hash of
//! arriving parts and every way bytes could change after it read them, the writer marks and the sweep.

use super::*;
use crate::adapters::fs::LocalPresigner;
use crate::ports::{BlobStore, Staged};

fn parts_of(bytes: &[u8], size: usize) -> Vec<(u32, Bytes, Digest)> {
    bytes.chunks(size).enumerate().map(|(i, c)| (i as u32 + 1, Bytes::copy_from_slice(c), Digest::of(c))).collect()
}

async fn send(store: &FsBlobStore, upload: &UploadRef, part: &(u32, Bytes, Digest)) -> Result<()> {
    let body = futures_util::stream::iter([Ok::<_, io::Error>(part.1.clone())]);
    store.receive_part(upload, part.0, &part.2, part.1.len() as u64, body).await
}

/// The join copies nothing and trusts nothing it did not read: parts land at their offsets in one
/// file, a join refuses while a part is being written (and when a part was sent again since the
/// listing), the joined file's recorded SHA-256 is the one of what was read, and a part sent after
/// the join can neither reach the sealed file nor be stored.
#[tokio::test]
async fn parts_are_joined_in_place_and_a_part_in_flight_or_late_cannot_change_the_joined_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path(), LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32])).unwrap();
    let upload = UploadRef::new(&crate::domain::WorkspaceId::parse("demo").unwrap());
    let file: Vec<u8> = (0..150u32).map(|i| (i * 7 % 251) as u8).collect();
    let parts = parts_of(&file, 64);
    store.begin_parts(&upload, 64).await.unwrap();
    // Out of order, as concurrent parts arrive; a wrong part is not stored.
    for n in [3, 1, 2] {
        send(&store, &upload, &parts[n - 1]).await.unwrap();
    }
    let wrong = (2, Bytes::from(vec![0u8; 64]), parts[1].2.clone());
    assert!(matches!(send(&store, &upload, &wrong).await, Err(Error::DigestMismatch { .. })));
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    assert_eq!(listed.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 3], "part 2 was overwritten by wrong bytes");
    send(&store, &upload, &parts[1]).await.unwrap();
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    assert_eq!(listed.iter().map(|p| (p.number, p.size)).collect::<Vec<_>>(), [(1, 64), (2, 64), (3, 22)]);

    // Part 3 sent again, its body hanging: the join refuses (409), then refuses the listing it
    // was given (part 3 is not stored any more), until part 3 is stored again.
    let (started, mut got_body) = tokio::sync::mpsc::channel::<()>(1);
    let hanging = futures_util::stream::unfold(0u8, move |sent| {
        let started = started.clone();
        async move {
            if sent == 0 {
                return Some((Ok::<_, io::Error>(Bytes::from_static(b"zz")), 1));
            }
            let _ = started.send(()).await;
            futures_util::future::pending::<()>().await;
            None
        }
    });
    let mut resend = Box::pin(store.receive_part(&upload, 3, &parts[2].2, 22, Box::pin(hanging)));
    tokio::select! {
        r = &mut resend => panic!("a hanging body cannot end the part: {r:?}"),
        _ = got_body.recv() => {}
    }
    match store.join_part_files(&upload, &listed).await {
        Err(Error::UploadIncomplete(why)) => assert!(why.contains("being written"), "{why}"),
        other => panic!("joined while a part was written: {other:?}"),
    }
    drop(resend);
    // The dropped part's writer ends its writes, then lets go of the lock.
    let refused = loop {
        match store.join_part_files(&upload, &listed).await {
            Err(Error::UploadIncomplete(why)) if why.contains("being written") => {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await
            }
            other => break other,
        }
    };
    match refused {
        Err(Error::UploadIncomplete(why)) => assert!(why.contains("part 3"), "{why}"),
        other => panic!("joined a part that is no longer stored: {other:?}"),
    }
    send(&store, &upload, &parts[2]).await.unwrap();
    assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Created);
    let staged = store.staged(&upload).await.unwrap().unwrap();
    assert_eq!((staged.size, staged.stored_sha256), (150, Some(Digest::of(&file))));
    assert_eq!(std::fs::read(store.upload_path(&upload)).unwrap(), file);

    // After the join: a part finds no upload, the joined file is untouched, nothing is left in tmp.
    let late = (1, Bytes::from(vec![9u8; 64]), Digest::of(&[9u8; 64]));
    assert!(matches!(send(&store, &upload, &late).await, Err(Error::UploadMissing)));
    assert!(matches!(send(&store, &upload, &parts[0]).await, Err(Error::UploadMissing)));
    assert_eq!(std::fs::read(store.upload_path(&upload)).unwrap(), file);
    assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Existed);
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    assert!(store.list_part_files(&upload).await.unwrap().is_none(), "joined: nothing to resume");
}

fn store_at(dir: &Path) -> std::sync::Arc<FsBlobStore> {
    std::sync::Arc::new(FsBlobStore::open(dir, LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32])).unwrap())
}

/// Part `number` sent with `bytes` (declared as `declared`), its body held until the sender fires:
/// the writer is at work (registered, the part's record removed) and writes nothing before.
fn held(
    store: &std::sync::Arc<FsBlobStore>,
    upload: &UploadRef,
    number: u32,
    bytes: Bytes,
    declared: &Digest,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let body = Box::pin(futures_util::stream::once(async move {
        let _ = wait.await;
        Ok::<_, io::Error>(bytes)
    }));
    let (store, upload, declared) = (store.clone(), upload.clone(), declared.clone());
    let size = 64;
    let task = tokio::spawn(async move { store.receive_part(&upload, number, &declared, size, body).await });
    (go, task)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Four full parts and a short one, 64 bytes a part.
fn five_parts() -> (Vec<u8>, Vec<(u32, Bytes, Digest)>) {
    let file: Vec<u8> = (0..278u32).map(|i| (i * 13 % 251) as u8).collect();
    let parts = parts_of(&file, 64);
    (file, parts)
}

/// The join's recorded SHA-256 is the one of the bytes it sealed, whatever the prefix hash did.
fn assert_sealed_hash_is_of_the_bytes(store: &FsBlobStore, upload: &UploadRef, staged: &Staged) {
    let on_disk = std::fs::read(store.upload_path(upload)).unwrap();
    assert_eq!(staged.stored_sha256, Some(Digest::of(&on_disk)), "the recorded SHA-256 is not of the sealed bytes");
}

/// Parts stored in order are hashed as they arrive: the join reads only what follows the last
/// full part the prefix reached, and the result is the SHA-256 of the whole file.
#[tokio::test]
async fn a_join_reads_only_what_the_hash_of_arriving_parts_did_not_reach() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let upload = UploadRef::new(&crate::domain::WorkspaceId::parse("demo").unwrap());
    let (file, parts) = five_parts();
    store.begin_parts(&upload, 64).await.unwrap();
    let folder = parts_dir(&store.upload_path(&upload));
    for part in &parts {
        send(&store, &upload, part).await.unwrap();
    }
    store.prefixes.get(&folder).unwrap().settled().await;
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Created);
    assert_eq!(store.joined_from.load(std::sync::atomic::Ordering::SeqCst), 256, "the four full parts were hashed");
    let staged = store.staged(&upload).await.unwrap().unwrap();
    assert_eq!(staged.stored_sha256, Some(Digest::of(&file)));
    assert!(store.prefixes.get(&folder).is_none(), "a joined upload is not followed");
}

/// Wrong bytes can reach a recorded part when two writers of it overlap: the second removes the
/// record, the first records its right bytes, then the second writes wrong ones and is refused.
/// The prefix hash must never have read the part before those bytes: a part with a writer at work
/// is not read (1), a writer on a part already read voids the hash (2), and a part written by
/// another store on the same folder voids it too (3). Each join records the SHA-256 of the bytes
/// it sealed, which is not the file's.
#[tokio::test]
async fn bytes_written_after_the_prefix_hash_read_them_are_never_taken_for_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let ws = crate::domain::WorkspaceId::parse("demo").unwrap();
    let (file, parts) = five_parts();
    let wrong = Bytes::from(vec![0u8; 64]);
    for case in 1..=3 {
        let upload = UploadRef::new(&ws);
        store.begin_parts(&upload, 64).await.unwrap();
        let folder = parts_dir(&store.upload_path(&upload));
        let prefix = store.prefixes.get(&folder).unwrap();
        let other = store_at(dir.path());
        let (late, writer) = match case {
            // (1) The late writer starts before part 2 was ever stored, so before it could be read.
            1 => {
                send(&store, &upload, &parts[0]).await.unwrap();
                let late = held(&store, &upload, 2, wrong.clone(), &parts[1].2);
                until("the writer's registration", || prefix.writers(2) == 1).await;
                (late, &store)
            }
            // (2) and (3): every part stored and read, then the late writer starts on part 2.
            _ => {
                for part in &parts {
                    send(&store, &upload, part).await.unwrap();
                }
                prefix.settled().await;
                let writer = if case == 2 { &store } else { &other };
                let late = held(writer, &upload, 2, wrong.clone(), &parts[1].2);
                let record = folder.join(record_name(2));
                until("the record's removal", || !record.exists()).await;
                (late, writer)
            }
        };
        // The first writer stores the right bytes of part 2 (and the rest) while the late one waits.
        for part in &parts[1..] {
            send(writer, &upload, part).await.unwrap();
        }
        prefix.settled().await;
        let (go, task) = late;
        go.send(()).unwrap();
        assert!(matches!(task.await.unwrap(), Err(Error::DigestMismatch { .. })), "case {case}");
        let listed = store.list_part_files(&upload).await.unwrap().unwrap();
        assert_eq!(listed.len(), 5, "case {case}: the first writer's record stands");
        assert_eq!(store.join_part_files(&upload, &listed).await.unwrap(), PutOutcome::Created);
        let staged = store.staged(&upload).await.unwrap().unwrap();
        assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);
        assert_ne!(staged.stored_sha256, Some(Digest::of(&file)), "case {case}: wrong bytes passed for the file");
        let joined_from = store.joined_from.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(joined_from, if case == 1 { 64 } else { 0 }, "case {case}");
    }
}

// ---------------------------------------------------------------- breaker review attacks

fn ws() -> crate::domain::WorkspaceId {
    crate::domain::WorkspaceId::parse("demo").unwrap()
}

/// A held part whose body never ends until `go` fires (or is dropped).
fn pending_part(
    store: &std::sync::Arc<FsBlobStore>,
    upload: &UploadRef,
    number: u32,
    declared: &Digest,
    size: u64,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let body = Box::pin(futures_util::stream::once(async move {
        let _ = wait.await;
        Err::<Bytes, _>(io::Error::other("client went away"))
    }));
    let (store, upload, declared) = (store.clone(), upload.clone(), declared.clone());
    let task = tokio::spawn(async move { store.receive_part(&upload, number, &declared, size, body).await });
    (go, task)
}

/// B1: every part in flight pins a blocking-pool thread for the whole body (PartWriter blocks in
/// `blocking_recv`), so 512 slow part bodies (the default `max_blocking_threads`) stall every
/// `spawn_blocking` / `tokio::fs` call of the process (blob reads, sweeps, other parts, joins).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_slow_part_bodies_do_not_starve_the_blocking_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let upload = UploadRef::new(&ws());
    store.begin_parts(&upload, 64).await.unwrap();
    let declared = Digest::of(&[1u8; 64]);
    let mut held = Vec::new();
    for _ in 0..520 {
        held.push(pending_part(&store, &upload, 1, &declared, 64));
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let probe = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::fs::metadata(dir.path())).await;
    let unrelated = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::task::spawn_blocking(|| 42)).await;
    for (go, _) in &mut held {
        let _ = std::mem::replace(go, tokio::sync::oneshot::channel().0);
    }
    for (_, task) in held {
        let _ = task.await;
    }
    assert!(probe.is_ok(), "tokio::fs stalled for 5 s behind 520 slow part bodies");
    assert!(unrelated.is_ok(), "spawn_blocking stalled for 5 s behind 520 slow part bodies");
}

/// B2: abandoned uploads are never forgotten: the sweep removes files, never folders, so
/// `retain(|dir| dir.exists())` keeps them, and after 256 abandoned uploads no upload of this
/// process is ever followed again (the join hashes every byte again).
#[tokio::test]
async fn breaker_abandoned_uploads_do_not_switch_off_the_prefix_hash_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    for _ in 0..256 {
        let abandoned = UploadRef::new(&ws());
        store.begin_parts(&abandoned, 64).await.unwrap();
        // What the 24 h sweep leaves of it: the folder, empty.
        let folder = parts_dir(&store.upload_path(&abandoned));
        for e in std::fs::read_dir(&folder).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    let upload = UploadRef::new(&ws());
    let (file, parts) = five_parts();
    store.begin_parts(&upload, 64).await.unwrap();
    let folder = parts_dir(&store.upload_path(&upload));
    for part in &parts {
        send(&store, &upload, part).await.unwrap();
    }
    if let Some(p) = store.prefixes.get(&folder) {
        p.settled().await;
    }
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    store.join_part_files(&upload, &listed).await.unwrap();
    assert_eq!(store.staged(&upload).await.unwrap().unwrap().stored_sha256, Some(Digest::of(&file)));
    assert_eq!(
        store.joined_from.load(std::sync::atomic::Ordering::SeqCst),
        256,
        "the 257th upload is not followed: 256 abandoned uploads disabled the prefix hash"
    );
}

/// B3: the other store's mark is written once (`if !mark.exists()`), so its mtime is that of
/// its first part; the staging sweep (files older than 24 h, run whenever the workspace plans a
/// single upload) removes it while the records it wrote later stand, and the join then trusts a
/// prefix that the other store's writer changed under.
#[tokio::test]
async fn breaker_the_sweep_cannot_remove_another_stores_mark() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let other = store_at(dir.path());
    let upload = UploadRef::new(&ws());
    let (file, parts) = five_parts();
    store.begin_parts(&upload, 64).await.unwrap();
    let folder = parts_dir(&store.upload_path(&upload));
    let prefix = store.prefixes.get(&folder).unwrap();
    for part in &parts {
        send(&store, &upload, part).await.unwrap();
    }
    prefix.settled().await;
    // The other store's overlapping writers of part 2 (already hashed here): wrong bytes under a record.
    let late = held(&other, &upload, 2, Bytes::from(vec![0u8; 64]), &parts[1].2);
    let record = folder.join(record_name(2));
    until("the record's removal", || !record.exists()).await;
    send(&other, &upload, &parts[1]).await.unwrap();
    let (go, task) = late;
    go.send(()).unwrap();
    assert!(matches!(task.await.unwrap(), Err(Error::DigestMismatch { .. })));
    // The other store's mark dates from its first part, over a day ago (simulated); the part_size
    // file too. The workspace plans a single upload: the sweep runs.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    for e in std::fs::read_dir(&folder).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name == format!("{WRITER_MARK}{}", other.id) || name == PART_SIZE {
            std::fs::File::options().write(true).open(e.path()).unwrap().set_modified(old).unwrap();
        }
    }
    super::super::sweep(&dir.path().join("uploads"), super::super::STAGED_LIFETIME);
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    assert_eq!(listed.len(), 5);
    store.join_part_files(&upload, &listed).await.unwrap();
    let staged = store.staged(&upload).await.unwrap().unwrap();
    let on_disk = std::fs::read(store.upload_path(&upload)).unwrap();
    assert_ne!(on_disk, file, "the sealed bytes are wrong (part 2 zeros)");
    assert_ne!(
        staged.stored_sha256,
        Some(Digest::of(&file)),
        "wrong bytes recorded under the file's digest: `complete` would link them"
    );
    assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);
}

/// Held up? Concurrency storm on one store: right and wrong re-sends of every part, some dropped
/// mid-body, some declared short; then a join. The recorded SHA-256 must be that of the sealed bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_storm_of_overlapping_resends_never_records_a_wrong_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let (file, parts) = five_parts();
    let mut trusted = 0;
    for round in 0..40u32 {
        let upload = UploadRef::new(&ws());
        store.begin_parts(&upload, 64).await.unwrap();
        let folder = parts_dir(&store.upload_path(&upload));
        let prefix = store.prefixes.get(&folder).unwrap();
        let mut tasks = Vec::new();
        for i in 0..30u32 {
            let k = (round * 7 + i * 3) % 5;
            let part = parts[k as usize].clone();
            let store = store.clone();
            let upload = upload.clone();
            let kind = (round + i) % 4;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_micros(u64::from((i * 37 + round) % 500))).await;
                match kind {
                    // right bytes
                    0 | 1 => send(&store, &upload, &part).await,
                    // wrong bytes, right declared digest, in two chunks with a pause
                    2 => {
                        let n = part.1.len();
                        let wrong = Bytes::from(vec![0xAAu8; n]);
                        let (a, b) = (wrong.slice(..n / 2), wrong.slice(n / 2..));
                        let body = futures_util::stream::iter([Ok::<_, io::Error>(a)]).chain(
                            futures_util::stream::once(async move {
                                tokio::time::sleep(std::time::Duration::from_micros(300)).await;
                                Ok(b)
                            }),
                        );
                        store.receive_part(&upload, part.0, &part.2, n as u64, Box::pin(body)).await
                    }
                    // wrong bytes then the request dropped mid-body
                    _ => {
                        let n = part.1.len();
                        let wrong = Bytes::from(vec![0x55u8; n / 2]);
                        let body = futures_util::stream::iter([Ok::<_, io::Error>(wrong)])
                            .chain(futures_util::stream::pending());
                        let fut = store.receive_part(&upload, part.0, &part.2, n as u64, Box::pin(body));
                        let _ = tokio::time::timeout(std::time::Duration::from_millis(2), fut).await;
                        Ok(())
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        // Make sure every part is recorded (right bytes sent last only where missing).
        let listed = loop {
            let listed = store.list_part_files(&upload).await.unwrap().unwrap();
            if listed.len() == 5 {
                break listed;
            }
            let have: Vec<u32> = listed.iter().map(|p| p.number).collect();
            for part in &parts {
                if !have.contains(&part.0) {
                    let _ = send(&store, &upload, part).await;
                }
            }
        };
        prefix.settled().await;
        let joined = loop {
            match store.join_part_files(&upload, &listed).await {
                Err(Error::UploadIncomplete(why)) if why.contains("being written") => {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await
                }
                other => break other,
            }
        };
        joined.unwrap();
        let staged = store.staged(&upload).await.unwrap().unwrap();
        assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);
        if store.joined_from.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            trusted += 1;
        }
        let _ = &file;
    }
    eprintln!("storm: the prefix was trusted in {trusted} of 40 joins");
}

/// Held up? A file of exactly four full parts (the last one at part_size), a part size that does
/// not divide the file, and a restart (a new store on the data dir) before the join; a resume
/// listing is not disturbed by the marks.
#[tokio::test]
async fn breaker_edges_of_sizes_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    // Last part of declared size == part_size.
    let file: Vec<u8> = (0..256u32).map(|i| (i * 31 % 251) as u8).collect();
    let parts = parts_of(&file, 64);
    let upload = UploadRef::new(&ws());
    store.begin_parts(&upload, 64).await.unwrap();
    for part in parts.iter().rev() {
        send(&store, &upload, part).await.unwrap();
    }
    store.prefixes.get(&parts_dir(&store.upload_path(&upload))).unwrap().settled().await;
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    store.join_part_files(&upload, &listed).await.unwrap();
    let staged = store.staged(&upload).await.unwrap().unwrap();
    assert_eq!(staged.stored_sha256, Some(Digest::of(&file)));
    assert_sealed_hash_is_of_the_bytes(&store, &upload, &staged);

    // A restart mid-upload: the new store lists (marks ignored), receives the rest, joins whole.
    let (file, parts) = five_parts();
    let upload = UploadRef::new(&ws());
    store.begin_parts(&upload, 64).await.unwrap();
    for part in &parts[..3] {
        send(&store, &upload, part).await.unwrap();
    }
    let restarted = store_at(dir.path());
    let listed = restarted.list_part_files(&upload).await.unwrap().unwrap();
    assert_eq!(listed.iter().map(|p| p.number).collect::<Vec<_>>(), [1, 2, 3]);
    for part in &parts[3..] {
        send(&restarted, &upload, part).await.unwrap();
    }
    // The old store (still alive, same dir) joins: the new store's mark makes it hash everything.
    let listed = store.list_part_files(&upload).await.unwrap().unwrap();
    store.join_part_files(&upload, &listed).await.unwrap();
    assert_eq!(store.joined_from.load(std::sync::atomic::Ordering::SeqCst), 0);
    let staged = store.staged(&upload).await.unwrap().unwrap();
    assert_eq!(staged.stored_sha256, Some(Digest::of(&file)));
}

/// The sweep never removes a writer's mark on its own, and removes a parts folder left with
/// nothing but marks once it has not changed for a day; a folder just made is left alone.
#[tokio::test]
async fn the_sweep_keeps_marks_and_removes_a_dead_parts_folder_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_at(dir.path());
    let (dead, fresh) = (UploadRef::new(&ws()), UploadRef::new(&ws()));
    let (_, parts) = five_parts();
    let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
    let age = |path: &Path| {
        let f = std::fs::File::open(path).unwrap();
        f.set_modified(day_ago).unwrap();
    };
    for upload in [&dead, &fresh] {
        store.begin_parts(upload, 64).await.unwrap();
        send(&store, upload, &parts[0]).await.unwrap();
    }
    let (dead_dir, fresh_dir) = (parts_dir(&store.upload_path(&dead)), parts_dir(&store.upload_path(&fresh)));
    let mark = format!("{WRITER_MARK}{}", store.id);
    // Everything in both folders a day old; the fresh folder's own entries just changed.
    for folder in [&dead_dir, &fresh_dir] {
        for e in std::fs::read_dir(folder).unwrap() {
            age(&e.unwrap().path());
        }
    }
    age(&dead_dir);
    super::super::sweep(&dir.path().join("uploads"), super::super::STAGED_LIFETIME);
    assert!(!dead_dir.exists(), "a folder left with its mark alone is removed whole");
    let left: Vec<String> =
        std::fs::read_dir(&fresh_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, [mark], "the old files are swept, the mark stays, the folder being used stays");
}

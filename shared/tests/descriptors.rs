//! A batch publish on the filesystem store with few descriptors left (`adapters::fs::batch`): its
//! unnamed temp files stay open until they are named, so when the process runs out of descriptors
//! midway, the files so far are made durable and named (which closes them) and the rest of the batch
//! goes through named temp files, closed as soon as each is written. The whole batch is stored.
//!
//! In its own test binary: it takes nearly every descriptor of the process while it runs.

use bytes::Bytes;
use helix_core::adapters::fs::{FsBlobStore, LocalPresigner};
use helix_core::domain::Digest;
use helix_core::ports::{BlobKey, BlobStore, PutOutcome};

#[tokio::test]
async fn a_batch_that_runs_out_of_descriptors_midway_is_stored_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsBlobStore::open(dir.path(), LocalPresigner::new("http://127.0.0.1:1".into(), vec![7; 32])).unwrap();
    let items: Vec<(BlobKey, Bytes)> = (0..300u32)
        .map(|i| {
            let bytes: Vec<u8> = (0..(200 + i * 13)).map(|j| (j ^ i.wrapping_mul(7)) as u8).collect();
            (BlobKey::primary(&Digest::of(&bytes)), Bytes::from(bytes))
        })
        .collect();
    // A batch of many uses one syncfs (and unnamed files) only on a filesystem where it stands for
    // fsyncs, and with little unwritten on the machine: both checked, so the test cannot pass by
    // taking the named files' path (one descriptor at a time) without saying so.
    if cfg!(target_os = "linux") {
        let tmp = std::fs::File::open(dir.path().join("tmp")).unwrap();
        assert!(
            helix_core::durable::syncfs_is_sound(&tmp),
            "the temp dir's filesystem: unnamed files would not be used"
        );
    }
    let quiet = (0..20).any(|_| {
        rustix::fs::sync();
        helix_core::durable::unwritten_bytes().is_none_or(|b| b <= helix_core::durable::SYNCFS_DIRTY_MAX)
    });
    assert!(quiet, "more than SYNCFS_DIRTY_MAX unwritten after 20 syncs: the batch would not use unnamed files");
    // Every descriptor taken, then 40 given back: fewer than the batch would keep open.
    let mut held = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        held.push(f);
    }
    held.truncate(held.len().saturating_sub(40));
    let outcomes = store.put_many_if_absent(items.clone()).await;
    drop(held);
    for (i, o) in outcomes.iter().enumerate() {
        assert!(matches!(o, Ok(PutOutcome::Created)), "blob {i}: {o:?}");
    }
    for (key, bytes) in &items {
        assert_eq!(std::fs::read(dir.path().join(key.storage_key())).unwrap(), bytes.as_ref());
    }
    assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "no temp file is left");
}

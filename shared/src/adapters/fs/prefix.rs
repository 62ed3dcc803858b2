//! The whole-file SHA-256 of a chunked upload, begun while its parts arrive (docs/decisions.md, "Hashing a
//! chunked upload while it arrives"). Without it the join reads and hashes every byte after the last
//! part, on one core, while the client waits; with it the join hashes only what the prefix has not
//! reached yet (usually the last part or two).
//!
//! After each stored part, a blocking task hashes the upload's `data` forward from where it stopped,
//! one whole part at a time, in part order, into a running SHA-256 (`Prefix`). The join trusts that
//! state only if no byte it covers can have changed since it was read:
//!
//! - a part is hashed only when it is recorded at a full part's size and no writer of this store is
//!   writing it (each writer registers for its whole life, from before it removes the part's record
//!   until after its last byte is written: `Prefix::writing`);
//! - a writer that starts on a part already hashed, or being hashed, spoils the state: the join then
//!   hashes the whole file, as it always did;
//! - every writer leaves `writer.{store id}` in the parts folder before it writes; a join that finds
//!   another store's name there (a second process on the same data dir, a restarted one) hashes the
//!   whole file, since that store's writers were never registered here.
//!
//! The state is memory only: a restart loses it, and the join hashes the whole file.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::DigestWriter;

/// In a parts folder, the prefix of a writer's mark: `writer.{store id}`.
pub(super) const WRITER_MARK: &str = "writer.";
/// Uploads followed at once, at most; the rest are hashed whole at their join.
const MAX_FOLLOWED: usize = 256;
const READ_CHUNK: usize = 256 * 1024;

/// The uploads of one store whose prefix is being hashed, by parts folder.
pub(super) struct Prefixes {
    followed: Mutex<HashMap<PathBuf, Arc<Prefix>>>,
    /// Hashing tasks at work at once, across uploads: one per core.
    permits: Arc<tokio::sync::Semaphore>,
}

impl Default for Prefixes {
    fn default() -> Prefixes {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Prefixes { followed: Mutex::default(), permits: Arc::new(tokio::sync::Semaphore::new(cores)) }
    }
}

impl Prefixes {
    fn map(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<Prefix>>> {
        self.followed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follow a new upload (before any part can be written to it: a writer not registered from the
    /// start could be writing a part the prefix reads). Uploads whose `data` is gone (joined, or swept
    /// as abandoned: no part can be written nor joined any more) are forgotten, their state voided;
    /// past `MAX_FOLLOWED` uploads in progress, a new one is not followed.
    pub(super) fn follow(&self, dir: &Path, data: PathBuf, part_size: u64) {
        let mut map = self.map();
        if map.len() >= MAX_FOLLOWED {
            map.retain(|_, prefix| {
                let alive = prefix.data.exists();
                if !alive {
                    prefix.state().spoiled = true;
                }
                alive
            });
        }
        if map.len() < MAX_FOLLOWED {
            map.insert(dir.to_owned(), Arc::new(Prefix::new(data, part_size)));
        }
    }

    pub(super) fn get(&self, dir: &Path) -> Option<Arc<Prefix>> {
        self.map().get(dir).cloned()
    }

    /// Stop following (the join, or the upload removed).
    pub(super) fn take(&self, dir: &Path) -> Option<Arc<Prefix>> {
        self.map().remove(dir)
    }

    /// A part of `prefix`'s upload was stored: hash what can be hashed now, on a blocking thread (one
    /// task per upload, and at most one per core across uploads). `recorded(n)` answers whether part n
    /// is recorded at a full part's size.
    pub(super) fn advance_later(&self, prefix: &Arc<Prefix>, recorded: impl Fn(u32) -> bool + Send + Sync + 'static) {
        prefix.pending.store(true, Ordering::SeqCst);
        if prefix.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let (me, permits) = (prefix.clone(), self.permits.clone());
        tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let _ = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                loop {
                    while me.pending.swap(false, Ordering::SeqCst) {
                        me.advance(&recorded);
                    }
                    me.running.store(false, Ordering::SeqCst);
                    // A part stored after the last look, and no other task started for it: look again.
                    if !me.pending.load(Ordering::SeqCst) || me.running.swap(true, Ordering::SeqCst) {
                        break;
                    }
                }
            })
            .await;
        });
    }
}

pub(super) struct Prefix {
    data: PathBuf,
    part_size: u64,
    state: Mutex<State>,
    /// Parts were stored since the hashing task last looked.
    pending: AtomicBool,
    running: AtomicBool,
}

#[derive(Default)]
struct State {
    /// Writers at work, by part number.
    writers: HashMap<u32, u32>,
    /// The part being read, if any.
    reading: Option<u32>,
    /// A writer started on a part the state covers (or on the one being read): the state is void.
    spoiled: bool,
    /// Taken by the join: nothing more is hashed.
    sealed: bool,
    /// Parts 1..=through, hashed.
    hasher: DigestWriter,
    through: u32,
}

/// A writer of part `number`, registered until dropped (after its last write).
pub(super) struct Writing {
    prefix: Arc<Prefix>,
    number: u32,
}

impl Drop for Writing {
    fn drop(&mut self) {
        let mut state = self.prefix.state();
        if let Some(n) = state.writers.get_mut(&self.number) {
            *n -= 1;
            if *n == 0 {
                state.writers.remove(&self.number);
            }
        }
    }
}

impl Prefix {
    fn new(data: PathBuf, part_size: u64) -> Prefix {
        Prefix {
            data,
            part_size,
            state: Mutex::new(State::default()),
            pending: AtomicBool::new(false),
            running: AtomicBool::new(false),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a writer of part `number`, before it touches the part's record or bytes.
    pub(super) fn writing(self: &Arc<Self>, number: u32) -> Writing {
        let mut state = self.state();
        if number <= state.through || state.reading == Some(number) {
            state.spoiled = true;
        }
        *state.writers.entry(number).or_default() += 1;
        Writing { prefix: self.clone(), number }
    }

    /// Hash the next parts while each is recorded, whole and not being written.
    fn advance(&self, recorded: &dyn Fn(u32) -> bool) {
        let Ok(file) = std::fs::File::open(&self.data) else { return };
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let (number, mut hasher) = {
                let mut state = self.state();
                let number = state.through + 1;
                if state.spoiled || state.sealed || state.writers.contains_key(&number) || !recorded(number) {
                    return;
                }
                state.reading = Some(number);
                (number, state.hasher.clone())
            };
            let read = read_part(&file, u64::from(number - 1) * self.part_size, self.part_size, &mut buf, &mut hasher);
            let mut state = self.state();
            state.reading = None;
            if read.is_err() || state.spoiled || state.sealed {
                return;
            }
            state.hasher = hasher;
            state.through = number;
        }
    }

    /// The join's start: the bytes hashed and the state after them, or (0, a new state) when the
    /// state is void. Nothing is hashed after this.
    pub(super) fn seal(&self) -> (u64, DigestWriter) {
        let mut state = self.state();
        state.sealed = true;
        if state.spoiled {
            return (0, DigestWriter::default());
        }
        (u64::from(state.through) * self.part_size, state.hasher.clone())
    }

    /// Writers registered on part `number` (tests).
    #[cfg(test)]
    pub(super) fn writers(&self, number: u32) -> u32 {
        self.state().writers.get(&number).copied().unwrap_or(0)
    }

    /// Wait until no hashing task runs (tests).
    #[cfg(test)]
    pub(super) async fn settled(&self) {
        while self.running.load(Ordering::SeqCst) || self.pending.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
}

/// Hash `len` bytes of `file` from `offset`; an error or a short file is an error.
fn read_part(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    buf: &mut [u8],
    hasher: &mut DigestWriter,
) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = file.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

//! Many new files made durable together: a batch publish on the filesystem store writes hundreds of
//! small files, and `helix pull` thousands. An fsync per file is a journal commit and a disk flush
//! per file (on this repository's machines 1,000 new 4 KiB files took ~120 ms to fsync, 8 threads at
//! a time); one `syncfs(2)` of their filesystem writes them all and flushes once (13–23 ms for the
//! same 1,000 when little else was dirty). docs/decisions.md, "Many files made durable at once".
//!
//! `Together` uses `syncfs` only where it is as strong as the fsyncs it replaces:
//! - on Linux, for a batch of at least `SYNCFS_MIN` files, when the machine holds at most
//!   `SYNCFS_DIRTY_MAX` of unwritten bytes as the batch starts (`Dirty` + `Writeback` in
//!   /proc/meminfo): `syncfs` writes whatever else is dirty on the filesystem too, so beside a large
//!   upload's unsynced gigabytes the batch fsyncs its own files instead of waiting for those;
//! - through the batch's first file, opened before any of the batch's bytes were written: since
//!   Linux 5.8, `syncfs` reports a writeback error that happened on the filesystem since the
//!   descriptor it is given was opened, so a failed write of any file of the batch fails the call;
//! - for the files on the first file's filesystem (`fstat`): any other is fsynced as it is added;
//! - on a kernel of 5.8 or later (older ones do not report writeback errors through `syncfs`) and a
//!   local filesystem whose `syncfs` writes, waits for and flushes every dirty inode (`fstatfs`:
//!   ext4, XFS, Btrfs, tmpfs); on any other (FUSE, NFS, overlayfs...) each file is fsynced;
//! - a batch of fewer files, or another system, fsyncs each file as it is added.
//!
//! A file is closed as soon as it is added (but for the first): a batch of a thousand files does not
//! hold a thousand descriptors.

use std::fs::File;
use std::io;
use std::path::PathBuf;

/// Threads that fsync at once when folders are synced one by one (the work is waiting on the disk).
const SYNC_THREADS: usize = 8;

/// The fewest files of a batch that one `syncfs` stands for.
pub const SYNCFS_MIN: usize = 16;

/// The most unwritten bytes on the machine with which a batch still uses `syncfs` (which would wait
/// for all of them on its filesystem): 64 MiB, a fraction of a second of this disk's writes.
pub const SYNCFS_DIRTY_MAX: u64 = 64 << 20;

/// Files written one after the other, made durable together.
pub struct Together {
    /// Whether one `syncfs` covers the batch.
    syncfs: bool,
    /// The batch's first file and its filesystem, when `syncfs` is on.
    anchor: Option<(File, u64)>,
}

impl Together {
    /// For a batch of `n` files about to be created and written in order.
    pub fn new(n: usize) -> Together {
        let syncfs =
            cfg!(target_os = "linux") && n >= SYNCFS_MIN && unwritten_bytes().is_some_and(|b| b <= SYNCFS_DIRTY_MAX);
        Together { syncfs, anchor: None }
    }

    /// A batch that plans one `syncfs` (`true`) or an fsync per file whatever the machine holds (tests
    /// that must take one path).
    #[cfg(test)]
    pub(crate) fn planned(syncfs: bool) -> Together {
        Together { syncfs, anchor: None }
    }

    /// `file` (created after the files added before it, and written) now holds all its bytes. It is
    /// closed, fsynced first unless `sync` will cover it.
    pub fn add(&mut self, file: File) -> io::Result<()> {
        self.add_open(&file)
    }

    /// `add` for a file that stays open (an unnamed file, given its name after `sync`).
    pub fn add_open(&mut self, file: &File) -> io::Result<()> {
        if !self.syncfs {
            return file.sync_all();
        }
        let dev = device(file)?;
        match &self.anchor {
            None if !syncfs_is_sound(file) => {
                // Not a filesystem (or kernel) whose syncfs stands for fsyncs: each file fsynced.
                self.syncfs = false;
                return file.sync_all();
            }
            None => self.anchor = Some((file.try_clone()?, dev)),
            Some((_, first)) if *first == dev => {}
            Some(_) => file.sync_all()?,
        }
        Ok(())
    }

    /// Whether one `syncfs` stands for this batch's fsyncs (so far: the first file may still find its
    /// filesystem unsound, and then each file is fsynced).
    pub fn one_sync(&self) -> bool {
        self.syncfs
    }

    /// Every file added so far durable, with its size and its inode (not its name: `sync_dirs`).
    pub fn sync(&self) -> io::Result<()> {
        match &self.anchor {
            Some((file, _)) => syncfs(file),
            None => Ok(()),
        }
    }

    /// The names added to `dirs` since the batch's first file was opened made durable: one `syncfs`
    /// when the batch has one and the folders are on its filesystem, else an fsync per folder
    /// (`SYNC_THREADS` at a time). One result per folder, in order.
    pub fn sync_dirs(&self, dirs: &[PathBuf]) -> Vec<io::Result<()>> {
        if let Some((file, dev)) = &self.anchor {
            let same = |d: &PathBuf| std::fs::metadata(d).is_ok_and(|m| dev_of(&m) == Some(*dev));
            if dirs.iter().all(same) {
                let r = syncfs(file);
                return dirs
                    .iter()
                    .map(|_| r.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string())))
                    .collect();
            }
        }
        in_parallel(dirs, |dir| File::open(dir)?.sync_all())
    }
}

/// Filesystems whose `syncfs` writes every dirty inode, waits for it and flushes the disk's cache
/// (their `sync_fs` commits and waits): ext4, XFS, Btrfs, and tmpfs (nothing reaches a disk).
const SYNCFS_FILESYSTEMS: [u32; 4] = [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994];

/// Whether one `syncfs` through `file` is as strong as an fsync of each file of its filesystem: a
/// kernel that reports writeback errors through it (5.8 or later) and a filesystem of the list.
#[cfg(target_os = "linux")]
pub fn syncfs_is_sound(file: &File) -> bool {
    static KERNEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let kernel = *KERNEL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| release_at_least(&r, (5, 8)))
    });
    kernel && rustix::fs::fstatfs(file).is_ok_and(|s| SYNCFS_FILESYSTEMS.contains(&((s.f_type as u64) as u32)))
}

#[cfg(not(target_os = "linux"))]
pub fn syncfs_is_sound(_file: &File) -> bool {
    false
}

/// Whether a kernel release (`6.18.44-fc`, `4.18.0-348.el8`) is at least `(major, minor)`.
fn release_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Bytes the kernel holds to write (`Dirty` + `Writeback` in /proc/meminfo); None when unknown.
pub fn unwritten_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()
    };
    Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
}

#[cfg(target_os = "linux")]
fn syncfs(file: &File) -> io::Result<()> {
    rustix::fs::syncfs(file).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(file: &File) -> io::Result<()> {
    file.sync_all()
}

fn device(file: &File) -> io::Result<u64> {
    let m = file.metadata()?;
    dev_of(&m).ok_or_else(|| io::Error::other("no device number on this system"))
}

#[cfg(unix)]
fn dev_of(m: &std::fs::Metadata) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    Some(m.dev())
}

#[cfg(not(unix))]
fn dev_of(_m: &std::fs::Metadata) -> Option<u64> {
    None
}

/// `f` over `items` on up to `SYNC_THREADS` threads: the results in order.
fn in_parallel<T: Sync>(items: &[T], f: impl Fn(&T) -> io::Result<()> + Sync) -> Vec<io::Result<()>> {
    if items.is_empty() {
        return Vec::new();
    }
    let per_thread = items.len().div_ceil(SYNC_THREADS);
    std::thread::scope(|s| {
        let f = &f;
        let threads: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| (chunk.len(), s.spawn(move || chunk.iter().map(f).collect::<Vec<_>>())))
            .collect();
        threads
            .into_iter()
            .flat_map(|(n, t)| {
                t.join().unwrap_or_else(|_| (0..n).map(|_| Err(io::Error::other("an fsync thread panicked"))).collect())
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &std::path::Path, i: usize) -> File {
        let mut f = File::create_new(dir.join(format!("f{i}"))).unwrap();
        std::io::Write::write_all(&mut f, b"bytes").unwrap();
        f
    }

    #[test]
    fn one_syncfs_keeps_only_the_first_descriptor_each_fsync_keeps_none() {
        let dir = tempfile::tempdir().unwrap();
        for (syncfs, n) in [(true, 0), (true, 1), (true, 40), (false, 0), (false, 40)] {
            let sub = dir.path().join(format!("{syncfs}-{n}"));
            std::fs::create_dir(&sub).unwrap();
            let mut batch = Together { syncfs, anchor: None };
            for i in 0..n {
                batch.add(write(&sub, i)).unwrap();
            }
            let sound = n > 0 && syncfs_is_sound(&File::open(&sub).unwrap());
            assert_eq!(batch.anchor.is_some(), syncfs && sound, "{syncfs} {n}");
            batch.sync().unwrap();
            assert!(batch.sync_dirs(std::slice::from_ref(&sub)).iter().all(Result::is_ok));
            assert_eq!(std::fs::read_dir(&sub).unwrap().count(), n);
        }
    }

    #[test]
    fn few_files_or_another_system_fsync_each() {
        assert!(!Together::new(SYNCFS_MIN - 1).syncfs);
        if cfg!(target_os = "linux") {
            // Known on Linux, and what decides a batch of many.
            let unwritten = unwritten_bytes().expect("/proc/meminfo has Dirty and Writeback");
            let batch = Together::new(SYNCFS_MIN);
            assert!(!batch.syncfs || unwritten_bytes().unwrap().min(unwritten) <= SYNCFS_DIRTY_MAX);
        } else {
            assert!(!Together::new(SYNCFS_MIN).syncfs);
        }
    }

    #[test]
    fn a_folder_that_cannot_be_opened_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut dirs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("d{i}"))).collect();
        dirs.iter().for_each(|d| std::fs::create_dir(d).unwrap());
        dirs.push(dir.path().join("gone"));
        let mut batch = Together::new(SYNCFS_MIN);
        batch.add(write(dir.path(), 0)).unwrap();
        // Not provably on the batch's filesystem: each folder fsynced, the missing one failing.
        let out = batch.sync_dirs(&dirs);
        assert_eq!(out.iter().map(Result::is_err).collect::<Vec<_>>(), [false, false, false, true]);
    }

    #[test]
    fn syncfs_stands_for_fsyncs_only_from_kernel_5_8() {
        for (release, sound) in [
            ("6.18.44-fc-v1272", true),
            ("5.8.0", true),
            ("5.10.0-21-amd64\n", true),
            ("5.7.19", false),
            ("4.18.0-348.el8.x86_64", false),
            ("", false),
            ("linux", false),
        ] {
            assert_eq!(release_at_least(release, (5, 8)), sound, "{release:?}");
        }
    }

    #[test]
    fn in_parallel_keeps_the_order_of_its_results() {
        let items: Vec<usize> = (0..100).collect();
        let out = in_parallel(&items, |i| if i % 7 == 0 { Err(io::Error::other(i.to_string())) } else { Ok(()) });
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.is_err(), i % 7 == 0, "item {i}");
        }
    }
}

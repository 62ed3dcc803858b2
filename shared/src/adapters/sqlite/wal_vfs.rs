//! One write for a commit's WAL frames. SQLite writes each WAL frame with two `pwrite(2)` calls (its
//! 24-byte header, then the page), so a group of 8 audit appends (~45 frames) cost ~90 system calls,
//! half the time of its COMMIT on the machine of docs/performance.md. The VFS `helix-wal` is the
//! default (unix) VFS but for WAL files: their consecutive writes wait in a buffer and reach the file
//! in one write, before anything else touches it:
//! - before the file is synced (a commit with `synchronous=FULL`): the fsync covers every frame, and a
//!   failed write fails the sync, so the commit fails and SQLite publishes none of its frames;
//! - right after a commit frame is buffered (its header names the database size after the commit),
//!   and at once for a commit frame's header written alone (SQLite rewrites frame checksums after the
//!   commit frame, the commit frame's header last), so a committed transaction is in the file when
//!   COMMIT returns even when no sync follows;
//! - before it is read (SQLite reads back frames it spilled), truncated, sized, file-controlled,
//!   mapped or closed, and before a write that does not follow the buffered ones.
//!
//! A buffered write that fails is reported as SQLITE_IOERR_WRITE, whatever the default VFS answered:
//! bytes SQLite was told were written are lost, and on an I/O error SQLite rolls the whole transaction
//! back (SQLITE_FULL from a read would roll back only the statement, and the transaction could go on to
//! commit frames that were never written). A database opened with `psow=0` (SQLite then pads commits
//! and splits a frame around a sync) is written through, nothing buffered.
//!
//! The writes reach the file in SQLite's order, through the default VFS's own write (short writes and
//! full disk included); only their number changes. Other connections read a frame only once a commit
//! has published it in the WAL index, after that commit's frames are written. Database, shared-memory
//! and journal files are the default VFS's own, untouched.

use std::ffi::{CStr, c_int, c_void};
use std::sync::OnceLock;

use rusqlite::ffi;

/// The name to open a connection with (`Connection::open_with_flags_and_vfs`).
pub(super) const NAME: &CStr = c"helix-wal";

/// The most bytes kept before they are written anyway (a large transaction spilling its pages).
const MAX_PENDING: usize = 4 << 20;

/// The most bytes handed to the default VFS in one write: it writes at most 128 KiB − 1 per call
/// (`seekAndWriteFd` masks the length with 0x1ffff), so 31 pages a write.
const MAX_WRITE: usize = 0x1f000;

/// A WAL frame's header: its bytes 4–8 are the database size after the commit (0: not a commit).
const FRAME_HEADER: c_int = 24;
/// The WAL file's own header, before the first frame.
const WAL_HEADER: i64 = 32;

/// An open WAL file: the default VFS's file (allocated right after this struct) and the writes not
/// yet made.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    pending: *mut Pending,
}

struct Pending {
    at: i64,
    bytes: Vec<u8>,
    /// A commit frame's header is buffered: write everything once its page follows.
    commit: bool,
    /// Nothing waits (the database was opened with `psow=0`).
    direct: bool,
}

/// The default VFS, which ours (registered once) passes everything on to.
struct Vfs {
    real: *mut ffi::sqlite3_vfs,
}
// SAFETY: the pointer is to a VFS object that lives as long as the process and that SQLite lets any
// thread use.
unsafe impl Send for Vfs {}
unsafe impl Sync for Vfs {}

static VFS: OnceLock<Result<Vfs, c_int>> = OnceLock::new();

/// Registers `helix-wal` (once; it is never made the default) and returns its name.
pub(super) fn register() -> rusqlite::Result<&'static CStr> {
    let vfs = VFS.get_or_init(|| {
        // SAFETY: sqlite3_vfs_find(NULL) returns the default VFS, which is never unregistered here;
        // the copy is leaked, so it outlives every connection, as SQLite requires.
        unsafe {
            let real = ffi::sqlite3_vfs_find(std::ptr::null());
            if real.is_null() {
                return Err(ffi::SQLITE_ERROR);
            }
            let mut ours: ffi::sqlite3_vfs = std::ptr::read(real);
            // Our file, then the default VFS's file in the same allocation, 8-byte aligned.
            ours.szOsFile = (real_offset() + (*real).szOsFile as usize) as c_int;
            ours.pNext = std::ptr::null_mut();
            ours.zName = NAME.as_ptr();
            ours.xOpen = Some(open);
            // The other methods stay the default VFS's: they read only its `pAppData` and
            // `mxPathname`, copied along.
            let ours = Box::into_raw(Box::new(ours));
            match ffi::sqlite3_vfs_register(ours, 0) {
                ffi::SQLITE_OK => Ok(Vfs { real }),
                rc => Err(rc),
            }
        }
    });
    match vfs {
        Ok(_) => Ok(NAME),
        Err(rc) => Err(rusqlite::Error::SqliteFailure(ffi::Error::new(*rc), Some("registering the WAL VFS".into()))),
    }
}

fn real_offset() -> usize {
    std::mem::size_of::<WalFile>().next_multiple_of(8)
}

fn real_vfs() -> *mut ffi::sqlite3_vfs {
    match VFS.get() {
        Some(Ok(v)) => v.real,
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let real = real_vfs();
    // SAFETY: SQLite hands `file` with `szOsFile` bytes, enough for the default VFS's file at its start
    // (not a WAL file) or after our struct (a WAL file).
    unsafe {
        let Some(real_open) = (*real).xOpen else { return ffi::SQLITE_ERROR };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            return real_open(real, name, file, flags, out_flags);
        }
        let inner = file.cast::<u8>().add(real_offset()).cast::<ffi::sqlite3_file>();
        let rc = real_open(real, name, inner, flags, out_flags);
        let wal = file.cast::<WalFile>();
        if rc != ffi::SQLITE_OK {
            // No methods: SQLite does not close a file whose open failed and left none.
            (*wal).base.pMethods = std::ptr::null();
            if !(*inner).pMethods.is_null()
                && let Some(close) = (*(*inner).pMethods).xClose
            {
                close(inner);
            }
            return rc;
        }
        let direct = ffi::sqlite3_uri_boolean(name, c"psow".as_ptr(), 1) == 0;
        let pending = Box::into_raw(Box::new(Pending { at: 0, bytes: Vec::new(), commit: false, direct }));
        std::ptr::write(wal, WalFile { base: ffi::sqlite3_file { pMethods: &METHODS }, real: inner, pending });
        ffi::SQLITE_OK
    }
}

/// The default VFS's file and its methods.
unsafe fn parts(
    file: *mut ffi::sqlite3_file,
) -> (*mut ffi::sqlite3_file, &'static ffi::sqlite3_io_methods, &'static mut Pending) {
    // SAFETY: only files `open` made a WalFile get these methods.
    unsafe {
        let wal = file.cast::<WalFile>();
        ((*wal).real, &*(*(*wal).real).pMethods, &mut *(*wal).pending)
    }
}

#[cfg(test)]
thread_local! {
    /// Writes made to WAL files from this thread (SQLite calls a connection's VFS on the thread that
    /// runs its statement): what the tests count.
    static WRITES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
thread_local! {
    /// Tests: this many of the next flushes on this thread fail as a full disk would (nothing written).
    static FAIL_FLUSHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Write what is pending (writes of `MAX_WRITE` through the default VFS). Any failure is
/// SQLITE_IOERR_WRITE (module doc); the pending bytes are dropped either way.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `parts`; the buffer is not touched while the default VFS writes it.
    unsafe {
        if (*file.cast::<WalFile>()).pending.is_null() {
            return ffi::SQLITE_OK; // closed
        }
        let (real, methods, pending) = parts(file);
        pending.commit = false;
        if pending.bytes.is_empty() {
            return ffi::SQLITE_OK;
        }
        let Some(write) = methods.xWrite else { return ffi::SQLITE_IOERR_WRITE };
        let mut rc = ffi::SQLITE_OK;
        #[cfg(test)]
        if FAIL_FLUSHES.get() > 0 {
            FAIL_FLUSHES.set(FAIL_FLUSHES.get() - 1);
            rc = ffi::SQLITE_FULL;
        }
        if rc == ffi::SQLITE_OK {
            for (i, piece) in pending.bytes.chunks(MAX_WRITE).enumerate() {
                #[cfg(test)]
                WRITES.set(WRITES.get() + 1);
                rc = write(real, piece.as_ptr().cast(), piece.len() as c_int, pending.at + (i * MAX_WRITE) as i64);
                if rc != ffi::SQLITE_OK {
                    break;
                }
            }
        }
        pending.bytes.clear();
        if pending.bytes.capacity() > MAX_PENDING {
            pending.bytes.shrink_to(MAX_PENDING);
        }
        if rc == ffi::SQLITE_OK { rc } else { ffi::SQLITE_IOERR_WRITE }
    }
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amt: c_int, at: i64) -> c_int {
    // SAFETY: SQLite passes `amt` readable bytes at `data`.
    unsafe {
        let (_, _, pending) = parts(file);
        let follows = pending.bytes.is_empty() || pending.at + pending.bytes.len() as i64 == at;
        if (!follows || pending.bytes.len() + amt as usize > MAX_PENDING) && flush(file) != ffi::SQLITE_OK {
            return ffi::SQLITE_IOERR_WRITE;
        }
        let (_, _, pending) = parts(file);
        if pending.bytes.is_empty() {
            pending.at = at;
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), amt as usize);
        let commit_header = amt == FRAME_HEADER && at >= WAL_HEADER && bytes[4..8] != [0, 0, 0, 0];
        let alone = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(bytes);
        // Written at once: anything when nothing may wait (psow=0); the commit frame's page (the whole
        // transaction is in the buffer); a commit frame's header alone (the last of the checksums
        // SQLite rewrites after the commit frame: nothing may follow it before COMMIT returns).
        if pending.direct || pending.commit || (commit_header && alone) {
            let rc = flush(file);
            if commit_header {
                // Its page, if one follows, ends the transaction.
                parts(file).2.commit = true;
            }
            return rc;
        }
        pending.commit = commit_header;
        ffi::SQLITE_OK
    }
}

/// Flush, then the default VFS's method.
macro_rules! after_flush {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: as `parts`; the arguments are SQLite's, passed on unchanged.
            unsafe {
                let rc = flush(file);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                let (real, methods, _) = parts(file);
                match methods.$method {
                    Some(f) => f(real $(, $arg)*),
                    None => ffi::SQLITE_ERROR,
                }
            }
        }
    };
}

after_flush!(read, xRead, (data: *mut c_void, amt: c_int, at: i64));
after_flush!(truncate, xTruncate, (size: i64));
after_flush!(sync, xSync, (flags: c_int));
after_flush!(file_size, xFileSize, (size: *mut i64));
after_flush!(file_control, xFileControl, (op: c_int, arg: *mut c_void));
after_flush!(fetch, xFetch, (at: i64, amt: c_int, out: *mut *mut c_void));
after_flush!(unfetch, xUnfetch, (at: i64, p: *mut c_void));

/// The default VFS's method, nothing to flush (locks, and what the device is).
macro_rules! passed_on {
    ($name:ident, $method:ident, ($($arg:ident: $ty:ty),*), $ret:ty, $none:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> $ret {
            // SAFETY: as `parts`; the arguments are SQLite's, passed on unchanged.
            unsafe {
                let (real, methods, _) = parts(file);
                match methods.$method {
                    Some(f) => f(real $(, $arg)*),
                    None => $none,
                }
            }
        }
    };
}

passed_on!(lock, xLock, (level: c_int), c_int, ffi::SQLITE_OK);
passed_on!(unlock, xUnlock, (level: c_int), c_int, ffi::SQLITE_OK);
passed_on!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), c_int, ffi::SQLITE_OK);
passed_on!(sector_size, xSectorSize, (), c_int, 4096);
passed_on!(device_characteristics, xDeviceCharacteristics, (), c_int, 0);
passed_on!(shm_map, xShmMap, (region: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), c_int, ffi::SQLITE_IOERR);
passed_on!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), c_int, ffi::SQLITE_IOERR);
passed_on!(shm_unmap, xShmUnmap, (delete: c_int), c_int, ffi::SQLITE_OK);

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: as `parts`.
    unsafe {
        let (real, methods, _) = parts(file);
        if let Some(f) = methods.xShmBarrier {
            f(real);
        }
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `parts`; SQLite closes a file once and never uses it after.
    unsafe {
        let flushed = flush(file);
        let (real, methods, _) = parts(file);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |f| f(real));
        let wal = file.cast::<WalFile>();
        drop(Box::from_raw((*wal).pending));
        (*wal).pending = std::ptr::null_mut();
        if flushed != ffi::SQLITE_OK { flushed } else { closed }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    use rusqlite::{Connection, OpenFlags};

    use super::*;

    fn wal_frames(dir: &std::path::Path) -> u64 {
        let size = std::fs::metadata(dir.join("db-wal")).map(|m| m.len()).unwrap_or(0);
        size.saturating_sub(WAL_HEADER as u64) / (4096 + FRAME_HEADER as u64)
    }

    /// The writer's connection (our VFS, WAL, the given sync) and a reader on the default VFS.
    fn open(dir: &std::path::Path, synchronous: &str) -> (Connection, Connection) {
        let path = dir.join("db");
        let w = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), register().unwrap()).unwrap();
        w.pragma_update(None, "journal_mode", "WAL").unwrap();
        w.pragma_update(None, "synchronous", synchronous).unwrap();
        w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        w.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t (v);").unwrap();
        (w, Connection::open(&path).unwrap())
    }

    fn insert(w: &Connection, from: i64, n: i64) {
        let tx = w.unchecked_transaction().unwrap();
        for k in from..from + n {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>300}")]).unwrap();
        }
        tx.commit().unwrap();
    }

    fn rows(r: &Connection) -> (i64, i64) {
        r.query_row("SELECT count(*), coalesce(sum(k), 0) FROM t", [], |row| Ok((row.get(0)?, row.get(1)?))).unwrap()
    }

    #[test]
    fn a_commits_frames_reach_the_wal_in_one_write_and_another_connection_reads_them_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = open(dir.path(), "FULL");
        for round in 0..4 {
            let (frames, writes) = (wal_frames(dir.path()), WRITES.get());
            insert(&w, round * 300, 300);
            let written = wal_frames(dir.path()) - frames;
            assert!(written >= 40, "a commit of {written} frames");
            let bytes = written as usize * (4096 + FRAME_HEADER as usize);
            assert_eq!(
                WRITES.get() - writes,
                bytes.div_ceil(MAX_WRITE) as u64,
                "{written} frames in writes of 124 KiB"
            );
            let n = (round + 1) * 300;
            assert_eq!(rows(&r), (n, n * (n - 1) / 2), "the reader sees every committed row");
        }
    }

    #[test]
    fn without_a_sync_a_commit_is_still_written_when_its_commit_frame_is() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = open(dir.path(), "OFF");
        insert(&w, 0, 200);
        assert_eq!(rows(&r), (200, 199 * 100));
        w.execute("DELETE FROM t WHERE k >= 100", []).unwrap();
        assert_eq!(rows(&r), (100, 99 * 50));
    }

    #[test]
    fn spilled_rewritten_and_checkpointed_frames_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = open(dir.path(), "FULL");
        // A cache of 8 pages: the transaction spills pages to the WAL, reads them back and writes some
        // of them again before it commits.
        w.pragma_update(None, "cache_size", 8).unwrap();
        let tx = w.unchecked_transaction().unwrap();
        for k in 0..2000i64 {
            tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>300}")]).unwrap();
        }
        tx.execute("UPDATE t SET v = 'x' || v WHERE k % 3 = 0", []).unwrap();
        tx.execute("DELETE FROM t WHERE k % 7 = 0", []).unwrap();
        tx.commit().unwrap();
        let expect = |c: &Connection| {
            let check: String = c.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap();
            assert_eq!(check, "ok");
            let x: i64 = c.query_row("SELECT count(*) FROM t WHERE v LIKE 'x%'", [], |row| row.get(0)).unwrap();
            assert_eq!(x, (0..2000).filter(|k| k % 3 == 0 && k % 7 != 0).count() as i64);
            let (n, sum) = rows(c);
            assert_eq!(
                (n, sum),
                ((0..2000).filter(|k| k % 7 != 0).count() as i64, (0..2000i64).filter(|k| k % 7 != 0).sum::<i64>())
            );
        };
        expect(&w);
        expect(&r);
        w.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        drop((w, r));
        expect(&Connection::open(dir.path().join("db")).unwrap());
    }

    /// What a kill -9 of the writer's process leaves: the files as they are (not the buffer).
    fn crash_copy(dir: &std::path::Path) -> Connection {
        let to = dir.join("crashed");
        std::fs::create_dir_all(&to).unwrap();
        for name in ["db", "db-wal"] {
            std::fs::copy(dir.join(name), to.join(name)).unwrap();
        }
        Connection::open(to.join("db")).unwrap()
    }

    fn integrity(c: &Connection) -> String {
        c.query_row("PRAGMA integrity_check", [], |row| row.get(0)).unwrap_or_else(|e| format!("error: {e}"))
    }

    /// A transaction spills pages (a cache of 8) and writes spilled ones again, so SQLite rewrites
    /// frame checksums after the commit frame, its header last; COMMIT returns, the process dies.
    #[test]
    fn without_a_sync_a_commit_whose_checksums_were_rewritten_is_in_the_file_when_commit_returns() {
        for sync in ["NORMAL", "OFF"] {
            let dir = tempfile::tempdir().unwrap();
            let (w, _r) = open(dir.path(), sync);
            w.pragma_update(None, "cache_size", 8).unwrap();
            let tx = w.unchecked_transaction().unwrap();
            for k in 0..2000i64 {
                tx.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>300}")]).unwrap();
            }
            tx.execute("UPDATE t SET v = 'x' || v WHERE k % 3 = 0", []).unwrap();
            tx.commit().unwrap();
            let c = crash_copy(dir.path());
            assert_eq!(rows(&c), (2000, 1999 * 1000), "synchronous={sync}: {}", integrity(&c));
        }
    }

    /// psow=0: SQLite pads a commit to a sector and splits a frame around the sync; nothing waits.
    #[test]
    fn with_powersafe_overwrite_off_nothing_waits_and_a_reader_reads_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let uri = format!("file:{}?psow=0", path.display());
        let flags = OpenFlags::default() | OpenFlags::SQLITE_OPEN_URI;
        let w = Connection::open_with_flags_and_vfs(&uri, flags, register().unwrap()).unwrap();
        w.pragma_update(None, "journal_mode", "WAL").unwrap();
        w.pragma_update(None, "synchronous", "FULL").unwrap();
        w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        w.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL); CREATE INDEX t_v ON t (v);").unwrap();
        let r = Connection::open(&path).unwrap();
        for round in 0..5 {
            insert(&w, round * 50, 50);
            let n = (round + 1) * 50;
            assert_eq!(rows(&r), (n, n * (n - 1) / 2), "round {round}: {}", integrity(&r));
        }
    }

    /// A buffered write fails (a full disk) while a later statement of the transaction reads back a
    /// spilled page: SQLite must roll the whole transaction back, never commit it without those frames
    /// (with SQLITE_FULL it rolled back the statement only, and the commit left a corrupt database).
    #[test]
    fn a_buffered_write_that_fails_rolls_the_whole_transaction_back() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = open(dir.path(), "FULL");
        insert(&w, 0, 10);
        w.pragma_update(None, "cache_size", 20).unwrap();
        // The writer's pattern (writer.rs): one transaction, each write in its savepoint.
        w.execute_batch("BEGIN IMMEDIATE; SAVEPOINT a").unwrap();
        for k in 10..3000i64 {
            w.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, format!("{k:0>300}")]).unwrap();
        }
        w.execute_batch("RELEASE a; SAVEPOINT b").unwrap();
        FAIL_FLUSHES.set(1);
        let failed = w.execute("UPDATE t SET v = 'y' || v WHERE k % 2 = 0", []);
        assert_eq!(FAIL_FLUSHES.get(), 0, "the statement flushed the buffer");
        let code = failed.unwrap_err().sqlite_error_code();
        assert_eq!(code, Some(rusqlite::ErrorCode::SystemIoFailure));
        assert!(w.is_autocommit(), "the whole transaction was rolled back");
        // What the writer does next: its savepoint is gone with the transaction; a new one commits.
        assert!(w.execute_batch("ROLLBACK TO b; RELEASE b").is_err());
        insert(&w, 10, 5);
        for c in [&w, &r, &Connection::open(dir.path().join("db")).unwrap()] {
            assert_eq!(integrity(c), "ok");
            assert_eq!(rows(c), (15, 14 * 15 / 2));
        }
    }
}

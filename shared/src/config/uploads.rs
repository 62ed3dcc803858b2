//! Uploads: what goes inline, the part size of chunked uploads, and when and how a large upload's
//! SHA-256 is verified after `complete` (HELIX_INLINE_MAX, HELIX_UPLOAD_PART_SIZE, HELIX_VERIFY_*).

use super::storage::{MAX_S3_PART_SIZE, MIN_S3_PART_SIZE};
use super::{BlobBackend, ConfigError, bounded, err};

/// Largest blob accepted or served inline by default (4 MiB: Lambda's 6 MB payload, base64).
pub const DEFAULT_INLINE_MAX: u64 = 4 * 1024 * 1024;
/// Chunked uploads: 64 MiB parts by default (10,000 hold 625 GiB; a larger file gets larger parts).
pub const DEFAULT_UPLOAD_PART_SIZE: u64 = 64 * 1024 * 1024;
/// Uploads up to this size are verified within `complete` (well inside API Gateway's 29 s at the
/// hashing speeds of docs/performance.md).
pub const DEFAULT_VERIFY_INLINE_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// The smallest part of a chunked upload on the embedded store (S3's is `MIN_S3_PART_SIZE`): small
/// parts let tests exercise many parts with little data.
pub const MIN_FS_UPLOAD_PART_SIZE: u64 = 64 * 1024;

/// The upload settings, as read (`Config`'s fields of the same names).
pub(super) struct Uploads {
    pub inline_max: u64,
    pub upload_part_size: u64,
    pub verify_inline_max: u64,
    pub verify_step_seconds: u64,
    pub verify_step_bytes: Option<u64>,
    pub verify_background: bool,
    pub verify_bus: Option<String>,
}

pub(super) fn uploads(get: &dyn Fn(&str) -> Option<String>, blob_backend: BlobBackend) -> Result<Uploads, ConfigError> {
    let inline_max = bounded(get, "HELIX_INLINE_MAX", 1..=64 * 1024 * 1024, || "a byte count in 1..=67108864".into())?
        .unwrap_or(DEFAULT_INLINE_MAX);
    let min_part = if blob_backend == BlobBackend::S3 { MIN_S3_PART_SIZE } else { MIN_FS_UPLOAD_PART_SIZE };
    let upload_part_size = bounded(get, "HELIX_UPLOAD_PART_SIZE", min_part..=MAX_S3_PART_SIZE, || {
        format!("a number of bytes from {min_part} to 5 GiB (5368709120) for this blob backend")
    })?
    .unwrap_or(DEFAULT_UPLOAD_PART_SIZE);
    let verify_inline_max = number(get, "HELIX_VERIFY_INLINE_MAX", 0..=u64::MAX)?.unwrap_or(DEFAULT_VERIFY_INLINE_MAX);
    let verify_step_seconds = number(get, "HELIX_VERIFY_STEP_SECONDS", 1..=25)?.unwrap_or(20);
    let verify_step_bytes = number(get, "HELIX_VERIFY_STEP_BYTES", 64..=u64::MAX)?;
    let verify_background = match get("HELIX_VERIFY_BACKGROUND").as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => return Err(err("HELIX_VERIFY_BACKGROUND", format!("{other:?} is not on or off"))),
    };
    // On AWS: the EventBridge bus whose rule invokes the verify function (unset: no event is put; the
    // status polls still advance a job).
    let verify_bus = get("HELIX_VERIFY_BUS_NAME").map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    Ok(Uploads {
        inline_max,
        upload_part_size,
        verify_inline_max,
        verify_step_seconds,
        verify_step_bytes,
        verify_background,
        verify_bus,
    })
}

/// `bounded`, saying the range.
fn number(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    let what = || format!("a number in {}..={}", range.start(), range.end());
    bounded(get, var, range.clone(), what)
}

#[cfg(test)]
mod tests {
    use super::super::{Mode, from_pairs};
    use super::*;

    /// Chunked uploads: 64 MiB parts by default; S3's 5 MiB smallest part on S3, 64 KiB on the
    /// embedded store (tests use small parts); never above 5 GiB.
    #[test]
    fn upload_part_size_is_checked_against_the_blob_backend() {
        assert_eq!(from_pairs(Mode::Serve, &[]).unwrap().upload_part_size, DEFAULT_UPLOAD_PART_SIZE);
        let fs = from_pairs(Mode::Serve, &[("HELIX_UPLOAD_PART_SIZE", "65536")]).unwrap();
        assert_eq!(fs.upload_part_size, MIN_FS_UPLOAD_PART_SIZE);
        let s3_small = [("HELIX_BLOB_BACKEND", "s3"), ("HELIX_S3_BUCKET", "b"), ("HELIX_UPLOAD_PART_SIZE", "65536")];
        assert_eq!(from_pairs(Mode::Serve, &s3_small).unwrap_err().var, "HELIX_UPLOAD_PART_SIZE");
        for bad in ["65535", "6442450944", "64MiB"] {
            let e = from_pairs(Mode::Serve, &[("HELIX_UPLOAD_PART_SIZE", bad)]).unwrap_err();
            assert_eq!(e.var, "HELIX_UPLOAD_PART_SIZE", "{bad:?}");
            assert!(e.to_string().contains(&format!("{bad:?}")), "the refusal quotes the value: {e}");
        }
        let e = from_pairs(Mode::Serve, &[("HELIX_S3_PART_SIZE", "64MiB")]).unwrap_err();
        assert!(e.to_string().contains("\"64MiB\""), "{e}");
    }
}

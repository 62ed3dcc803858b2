//! HELIX_S3_*: where and how the S3 blob store writes (prefix, overwrite checks, checksums, Object
//! Lock, the part size of multipart documents).

use super::{ConfigError, bounded, err};

/// S3 Object Lock retention the registry puts on each blob it writes (never on staging uploads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectLockMode {
    Governance,
    Compliance,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: ObjectLockMode,
    /// Retention from the write: `x-amz-object-lock-retain-until-date` = now + days.
    pub days: u32,
}

/// Multipart part size of the audit days' events files: 64 MiB (10,000 parts hold 625 GiB; larger
/// files get larger parts, up to S3's 5 TiB object limit).
pub const DEFAULT_S3_PART_SIZE: u64 = 64 * 1024 * 1024;
/// S3's smallest part (all but the last) and largest part.
pub const MIN_S3_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_S3_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The S3 store's settings, as read (`Config`'s `s3_*` fields).
pub(super) struct S3Settings {
    pub prefix: String,
    pub strict_no_overwrite: bool,
    pub endpoint_url: Option<String>,
    pub checksums_verified: bool,
    pub object_lock: Option<ObjectLock>,
    pub part_size: u64,
}

/// The S3 settings; `aws_endpoint` (AWS_ENDPOINT_URL) is the endpoint when no S3 one is named.
pub(super) fn s3(
    get: &dyn Fn(&str) -> Option<String>,
    aws_endpoint: Option<String>,
) -> Result<S3Settings, ConfigError> {
    let prefix = get("HELIX_S3_PREFIX").unwrap_or_default();
    if prefix.starts_with('/') || (!prefix.is_empty() && !prefix.ends_with('/')) {
        return Err(err("HELIX_S3_PREFIX", "a prefix ends with '/' and does not start with one"));
    }
    let strict_no_overwrite = match get("HELIX_S3_STRICT_NO_OVERWRITE").as_deref() {
        None | Some("1") | Some("true") => true,
        Some("0") | Some("false") => false,
        Some(other) => return Err(err("HELIX_S3_STRICT_NO_OVERWRITE", format!("{other:?} is not 0 or 1"))),
    };

    let endpoint_url = get("HELIX_S3_ENDPOINT_URL").or_else(|| get("AWS_ENDPOINT_URL_S3")).or(aws_endpoint);
    let checksums_verified = match get("HELIX_S3_VERIFIES_CHECKSUMS").as_deref() {
        None => endpoint_url.is_none(),
        Some("1") | Some("true") => true,
        Some("0") | Some("false") => false,
        Some(other) => return Err(err("HELIX_S3_VERIFIES_CHECKSUMS", format!("{other:?} is not 0 or 1"))),
    };

    let object_lock = match get("HELIX_S3_OBJECT_LOCK_MODE").as_deref() {
        None if get("HELIX_S3_OBJECT_LOCK_DAYS").is_some() => {
            return Err(err("HELIX_S3_OBJECT_LOCK_MODE", "must be set (GOVERNANCE, COMPLIANCE or NONE) with the days"));
        }
        None | Some("NONE") => None,
        Some(m @ ("GOVERNANCE" | "COMPLIANCE")) => {
            let mode = if m == "GOVERNANCE" { ObjectLockMode::Governance } else { ObjectLockMode::Compliance };
            let days = match get("HELIX_S3_OBJECT_LOCK_DAYS").as_deref().map(str::parse::<u32>) {
                Some(Ok(d)) if (1..=36_500).contains(&d) => d,
                None => {
                    return Err(err(
                        "HELIX_S3_OBJECT_LOCK_DAYS",
                        format!("must be set with HELIX_S3_OBJECT_LOCK_MODE={m}"),
                    ));
                }
                Some(_) => return Err(err("HELIX_S3_OBJECT_LOCK_DAYS", "is not a number of days from 1 to 36500")),
            };
            Some(ObjectLock { mode, days })
        }
        Some(other) => {
            return Err(err("HELIX_S3_OBJECT_LOCK_MODE", format!("{other:?} is not GOVERNANCE, COMPLIANCE or NONE")));
        }
    };
    let part_size = bounded(get, "HELIX_S3_PART_SIZE", MIN_S3_PART_SIZE..=MAX_S3_PART_SIZE, || {
        "a number of bytes from 5 MiB (5242880) to 5 GiB".into()
    })?
    .unwrap_or(DEFAULT_S3_PART_SIZE);
    Ok(S3Settings { prefix, strict_no_overwrite, endpoint_url, checksums_verified, object_lock, part_size })
}

#[cfg(test)]
mod tests {
    use super::super::{Mode, from_pairs};
    use super::*;

    #[test]
    fn object_lock_and_part_size_are_read_and_checked() {
        let c = from_pairs(Mode::Serve, &[]).unwrap();
        assert_eq!((c.s3_object_lock, c.s3_part_size), (None, DEFAULT_S3_PART_SIZE));
        let none =
            from_pairs(Mode::Serve, &[("HELIX_S3_OBJECT_LOCK_MODE", "NONE"), ("HELIX_S3_OBJECT_LOCK_DAYS", "30")]);
        assert_eq!(none.unwrap().s3_object_lock, None, "the template passes NONE with its days");
        let c = from_pairs(
            Mode::Serve,
            &[
                ("HELIX_S3_OBJECT_LOCK_MODE", "COMPLIANCE"),
                ("HELIX_S3_OBJECT_LOCK_DAYS", "30"),
                ("HELIX_S3_PART_SIZE", "5242880"),
            ],
        )
        .unwrap();
        assert_eq!(c.s3_object_lock, Some(ObjectLock { mode: ObjectLockMode::Compliance, days: 30 }));
        assert_eq!(c.s3_part_size, MIN_S3_PART_SIZE);
        for (vars, var) in [
            (&[("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE")][..], "HELIX_S3_OBJECT_LOCK_DAYS"),
            (
                &[("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE"), ("HELIX_S3_OBJECT_LOCK_DAYS", "0")][..],
                "HELIX_S3_OBJECT_LOCK_DAYS",
            ),
            (
                &[("HELIX_S3_OBJECT_LOCK_MODE", "GOVERNANCE"), ("HELIX_S3_OBJECT_LOCK_DAYS", "x")][..],
                "HELIX_S3_OBJECT_LOCK_DAYS",
            ),
            (&[("HELIX_S3_PART_SIZE", "6442450944")][..], "HELIX_S3_PART_SIZE"),
            (&[("HELIX_S3_OBJECT_LOCK_DAYS", "30")][..], "HELIX_S3_OBJECT_LOCK_MODE"),
        ] {
            assert_eq!(from_pairs(Mode::Serve, vars).unwrap_err().var, var, "{vars:?}");
        }
    }
}

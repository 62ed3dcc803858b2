//! Bundle manifests (SPEC §4): `{"schema":"helix.bundle.v1","name","version","files":[{"path","digest",
//! "size"}],"annotations":{}}`. A manifest is validated here once, and stored and hashed in its
//! canonical JSON form: its digest is the bundle version's identity, whatever whitespace or key order
//! it was sent with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::canonical;
use super::digest::Digest;
use crate::error::{Error, Result};

pub const MANIFEST_SCHEMA: &str = "helix.bundle.v1";
/// Most files one bundle version may list.
pub const MAX_FILES: usize = 20_000;
/// Longest file path, in bytes.
pub const MAX_PATH_LEN: usize = 1024;
/// Most annotations, and the longest key and value, in characters.
pub const MAX_ANNOTATIONS: usize = 64;
pub const MAX_ANNOTATION_KEY: usize = 128;
pub const MAX_ANNOTATION_VALUE: usize = 1024;
/// Largest file a manifest may name: 5 TiB, S3's largest object and a chunked upload's limit
/// (`crate::chunked::MAX_CHUNKED_SIZE`); up to 5 GiB a file may also go up in one request.
pub const MAX_FILE_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// A bundle name or version: `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct BundleName(String);

impl BundleName {
    pub fn parse(s: &str) -> Result<BundleName> {
        let mut bytes = s.bytes();
        let ok = s.len() <= 128
            && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(BundleName(s.to_owned()))
        } else {
            Err(Error::BadRequest(format!(
                "{s:?} is not a bundle name or version ([A-Za-z0-9][A-Za-z0-9._-]{{0,127}})"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BundleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: String,
    pub name: String,
    pub version: String,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidManifest(msg.into())
}

/// Longest path segment, in bytes (what common filesystems take).
pub const MAX_SEGMENT_LEN: usize = 255;

/// A relative, `/`-separated path without empty, `.` or `..` segments, backslashes, control or
/// invisible formatting characters, with segments of at most 255 bytes.
fn check_path(path: &str) -> Result<()> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(invalid(format!("a file path is 1 to {MAX_PATH_LEN} bytes: {path:?}")));
    }
    if path.starts_with('/')
        || path.contains('\\')
        || path.chars().any(|c| c.is_control() || super::is_invisible_format(c))
    {
        return Err(invalid(format!(
            "{path:?} must be relative, '/'-separated, without control or invisible formatting characters"
        )));
    }
    if path.split('/').any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.len() > MAX_SEGMENT_LEN) {
        return Err(invalid(format!("{path:?} has an empty, '.', '..' or over-long segment")));
    }
    Ok(())
}

/// Paths that would land on one another when the bundle is written out: equal but for case (on
/// case-insensitive filesystems), or a file that is also a folder of another file (`a` and `a/b`).
fn check_collisions(files: &[ManifestFile]) -> Result<()> {
    let folded: std::collections::HashSet<String> = files.iter().map(|f| f.path.to_lowercase()).collect();
    if folded.len() != files.len() {
        return Err(invalid("two paths differ only by case"));
    }
    for f in files {
        let mut prefix = String::new();
        for seg in f.path.split('/').take(f.path.split('/').count() - 1) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            if folded.contains(&prefix.to_lowercase()) {
                return Err(invalid(format!("{prefix:?} is a file and a folder of {:?}", f.path)));
            }
        }
    }
    Ok(())
}

impl Manifest {
    /// Parse and validate a manifest registered as `name`@`version`.
    pub fn parse(body: &[u8], name: &BundleName, version: &BundleName) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(body).map_err(|e| invalid(format!("not a manifest: {e}")))?;
        if m.schema != MANIFEST_SCHEMA {
            return Err(invalid(format!("schema must be {MANIFEST_SCHEMA:?}, not {:?}", m.schema)));
        }
        if m.name != name.as_str() || m.version != version.as_str() {
            return Err(invalid(format!("the manifest names {}@{}, the URL {name}@{version}", m.name, m.version)));
        }
        if m.files.is_empty() || m.files.len() > MAX_FILES {
            return Err(invalid(format!("a manifest lists 1 to {MAX_FILES} files, not {}", m.files.len())));
        }
        for f in &m.files {
            check_path(&f.path)?;
            Digest::parse(&f.digest).map_err(|_| invalid(format!("{:?}: {:?} is not a digest", f.path, f.digest)))?;
            if f.size > MAX_FILE_SIZE {
                return Err(invalid(format!("{:?}: a file is at most {MAX_FILE_SIZE} bytes", f.path)));
            }
        }
        // Sorted by path and unique: each pair strictly increasing (byte order).
        if let Some(w) = m.files.windows(2).find(|w| w[0].path.as_bytes() >= w[1].path.as_bytes()) {
            let why = if w[0].path == w[1].path { "duplicate path" } else { "files must be sorted by path" };
            return Err(invalid(format!("{why}: {:?} before {:?}", w[0].path, w[1].path)));
        }
        check_collisions(&m.files)?;
        if m.annotations.len() > MAX_ANNOTATIONS {
            return Err(invalid(format!("at most {MAX_ANNOTATIONS} annotations")));
        }
        for (k, v) in &m.annotations {
            if k.is_empty() || k.chars().count() > MAX_ANNOTATION_KEY || v.chars().count() > MAX_ANNOTATION_VALUE {
                return Err(invalid(format!(
                    "an annotation key is 1 to {MAX_ANNOTATION_KEY} characters, a value at most {MAX_ANNOTATION_VALUE}"
                )));
            }
        }
        Ok(m)
    }

    /// The canonical JSON form: what is stored, hashed and signed.
    pub fn canonical(&self) -> Result<String> {
        canonical::to_string(&serde_json::to_value(self).map_err(|e| Error::Internal(e.to_string()))?)
    }

    /// Every file's digest (validated at parse).
    pub fn digests(&self) -> Vec<Digest> {
        self.files.iter().map(|f| Digest::parse(&f.digest).expect("validated at parse")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn body(files: &[(&str, &str, u64)]) -> Vec<u8> {
        let files: Vec<_> =
            files.iter().map(|(p, d, s)| serde_json::json!({"path": p, "digest": d, "size": s})).collect();
        serde_json::json!({"schema": MANIFEST_SCHEMA, "name": "model", "version": "1.0", "files": files, "annotations": {}})
            .to_string()
            .into_bytes()
    }

    fn parse(b: &[u8]) -> Result<Manifest> {
        Manifest::parse(b, &BundleName::parse("model").unwrap(), &BundleName::parse("1.0").unwrap())
    }

    #[test]
    fn a_valid_manifest_parses_and_its_canonical_form_ignores_layout() {
        let m = parse(&body(&[("a.txt", D, 3), ("dir/b.bin", D, 3)])).unwrap();
        let spaced = String::from_utf8(body(&[("a.txt", D, 3), ("dir/b.bin", D, 3)])).unwrap().replace(',', " , ");
        assert_eq!(parse(spaced.as_bytes()).unwrap().canonical().unwrap(), m.canonical().unwrap());
        assert!(m.canonical().unwrap().starts_with(r#"{"annotations":{},"files":[{"digest":"#));
    }

    #[test]
    fn a_file_above_a_single_uploads_five_gib_can_be_named_up_to_five_tib() {
        let gib = 1024 * 1024 * 1024;
        for size in [5 * gib + 1, 6 * gib, 5 * 1024 * gib] {
            assert_eq!(parse(&body(&[("model.bin", D, size)])).unwrap().files[0].size, size);
        }
    }

    #[test]
    fn bad_manifests_are_refused_with_a_reason() {
        for (files, what) in [
            (vec![("../x", D, 1)], ".."),
            (vec![("a/./x", D, 1)], "."),
            (vec![("a//x", D, 1)], "empty segment"),
            (vec![("", D, 1)], "empty path"),
            (vec![("/etc/passwd", D, 1)], "absolute"),
            (vec![("a\\b", D, 1)], "backslash"),
            (vec![("a\nb", D, 1)], "control character"),
            (vec![("a\u{202E}b", D, 1)], "bidirectional override"),
            (vec![("A", D, 1), ("a", D, 1)], "case-only difference"),
            (vec![("a", D, 1), ("a/b", D, 1)], "a file that is also a folder"),
            (vec![("b", D, 1), ("a", D, 1)], "unsorted"),
            (vec![("a", D, 1), ("a", D, 1)], "duplicate"),
            (vec![("a", "md5:x", 1)], "bad digest"),
            (vec![("a", D, MAX_FILE_SIZE + 1)], "too large"),
            (vec![("a", D, u64::MAX)], "too large"),
            (vec![], "no files"),
        ] {
            let files: Vec<(&str, &str, u64)> = files;
            assert!(matches!(parse(&body(&files)), Err(Error::InvalidManifest(_))), "{what}");
        }
        let other_schema = String::from_utf8(body(&[("a", D, 1)])).unwrap().replace(MANIFEST_SCHEMA, "helix.bundle.v2");
        assert!(matches!(parse(other_schema.as_bytes()), Err(Error::InvalidManifest(_))));
        let other_name = String::from_utf8(body(&[("a", D, 1)])).unwrap().replace("\"model\"", "\"other\"");
        assert!(matches!(parse(other_name.as_bytes()), Err(Error::InvalidManifest(_))));
        let unknown_field =
            String::from_utf8(body(&[("a", D, 1)])).unwrap().replace("\"files\"", "\"extra\":1,\"files\"");
        assert!(matches!(parse(unknown_field.as_bytes()), Err(Error::InvalidManifest(_))));
        assert!(matches!(parse(b"{not json"), Err(Error::InvalidManifest(_))));
        let names: Vec<String> = (0..=MAX_FILES).map(|i| format!("f{i:06}")).collect();
        let too_many: Vec<(&str, &str, u64)> = names.iter().map(|n| (n.as_str(), D, 1)).collect();
        assert!(matches!(parse(&body(&too_many)), Err(Error::InvalidManifest(_))), "more than {MAX_FILES} files");
        let at_limit: Vec<(&str, &str, u64)> = too_many[..MAX_FILES].to_vec();
        assert!(parse(&body(&at_limit)).is_ok(), "{MAX_FILES} files are fine");
    }

    #[test]
    fn names_and_versions_follow_the_spec_pattern() {
        for ok in ["a", "Model_1.0-rc.1", &"a".repeat(128)] {
            assert!(BundleName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".a", "-a", "a/b", "a b", &"a".repeat(129), "é"] {
            assert!(BundleName::parse(bad).is_err(), "{bad}");
        }
    }
}

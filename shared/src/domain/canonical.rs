//! Canonical JSON (RFC 8785 for the subset we use): UTF-8, object keys sorted, no insignificant
//! whitespace, integers only. Hashes and signatures are always taken over this form.

use serde_json::Value;

use crate::error::{Error, Result};

pub fn to_string(value: &Value) -> Result<String> {
    let mut out = Vec::with_capacity(256);
    write(value, &mut out)?;
    into_string(out)
}

/// `out` as a string: the canonical writers write UTF-8 only, so this never fails in practice.
pub(crate) fn into_string(out: Vec<u8>) -> Result<String> {
    String::from_utf8(out).map_err(|_| Error::Internal("canonical JSON was not UTF-8".into()))
}

/// A JSON string (escaped as serde_json escapes it) appended to `out`, without an allocation.
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `value` in canonical form, appended to `out`.
pub(crate) fn write(value: &Value, out: &mut Vec<u8>) -> Result<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::String(s) => write_str(s, out),
        Value::Number(n) => {
            if !(n.is_i64() || n.is_u64()) {
                return Err(Error::BadRequest("canonical JSON allows integers only".into()));
            }
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Keys sorted by UTF-16 code units, as RFC 8785 requires (equal to byte order for ASCII).
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(
                |a, b| {
                    if a.is_ascii() && b.is_ascii() { a.cmp(b) } else { a.encode_utf16().cmp(b.encode_utf16()) }
                },
            );
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(key, out);
                out.push(b':');
                write(&map[key], out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let v = json!({"b": 1, "a": {"d": [1, "x\n"], "c": null}, "é": true});
        assert_eq!(to_string(&v).unwrap(), r#"{"a":{"c":null,"d":[1,"x\n"]},"b":1,"é":true}"#);
    }

    #[test]
    fn strings_escape_as_serde_json_does_and_non_ascii_keys_sort_by_utf16() {
        for s in ["", "plain", "quote \" back \\ slash", "ctl \u{1} \n \t", "é ☃ 𝄞", "\u{2028}"] {
            assert_eq!(to_string(&json!(s)).unwrap(), serde_json::to_string(s).unwrap());
        }
        // U+1D11E (a surrogate pair, 0xD834 first) sorts before U+FF61 in UTF-16, after it in UTF-8.
        let v = json!({"𝄞": 1, "｡": 2, "z": 3, "a": [true, false, null, -7, 18446744073709551615u64]});
        assert_eq!(to_string(&v).unwrap(), r#"{"a":[true,false,null,-7,18446744073709551615],"z":3,"𝄞":1,"｡":2}"#);
    }

    #[test]
    fn floats_are_refused() {
        assert!(to_string(&json!({"x": 1.5})).is_err());
    }
}

//! Canonical JSON (RFC 8785 for the subset we use): UTF-8, object keys sorted, no insignificant
//! whitespace, integers only. Hashes and signatures are always taken over this form.

use serde_json::Value;

use crate::error::{Error, Result};

pub fn to_string(value: &Value) -> Result<String> {
    let mut out = String::new();
    write(value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut String) -> Result<()> {
    match value {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&value.to_string()),
        Value::Number(n) => {
            if !(n.is_i64() || n.is_u64()) {
                return Err(Error::BadRequest("canonical JSON allows integers only".into()));
            }
            out.push_str(&n.to_string());
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Keys sorted by UTF-16 code units, as RFC 8785 requires (equal to byte order for ASCII).
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write(&map[key], out)?;
            }
            out.push('}');
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
    fn floats_are_refused() {
        assert!(to_string(&json!({"x": 1.5})).is_err());
    }
}

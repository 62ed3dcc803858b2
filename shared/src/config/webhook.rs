//! HELIX_WEBHOOK_*: the signed webhooks of governance events (docs/notifications.md).

use super::{ConfigError, err};
use crate::oidc::check_url;

/// Where and how governance notifications are posted (docs/notifications.md).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// https, or http to a loopback address only.
    pub url: String,
    /// Empty until read from `secret_arn` (`with_secret`) when the secret is in Secrets Manager.
    pub secret: WebhookSecret,
    /// HELIX_WEBHOOK_SECRET_ARN: the Secrets Manager secret holding the key, instead of
    /// HELIX_WEBHOOK_SECRET (AWS only: the `notify` function reads it once at start).
    pub secret_arn: Option<String>,
    /// Attempts per notification before it is given up (HELIX_WEBHOOK_ATTEMPTS, 1 to 100; 10).
    pub attempts: u32,
    /// The wait before the first retry, doubled after each failure up to 64 times it
    /// (HELIX_WEBHOOK_BACKOFF_MS, 1 to 600000; 1000).
    pub backoff: std::time::Duration,
    /// One attempt's limit, connection to answer (HELIX_WEBHOOK_TIMEOUT_MS, 100 to 60000; 5000).
    pub timeout: std::time::Duration,
}

/// The webhook's shared secret: shown by nothing (its Debug is redacted).
#[derive(Clone)]
pub struct WebhookSecret(pub(super) String);

impl WebhookSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl WebhookConfig {
    /// The key read from `secret_arn` (its SecretString), checked as HELIX_WEBHOOK_SECRET is.
    pub fn with_secret(mut self, secret: String) -> Result<WebhookConfig, ConfigError> {
        if secret.len() < 16 {
            return Err(err("HELIX_WEBHOOK_SECRET_ARN", "the secret's value is at least 16 characters"));
        }
        self.secret = WebhookSecret(secret);
        Ok(self)
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// HELIX_WEBHOOK_* from any variable source (the `notify` function reads only these).
pub fn webhook_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<WebhookConfig>, ConfigError> {
    webhook(&|k: &str| lookup(k).filter(|v| !v.trim().is_empty()))
}

/// HELIX_WEBHOOK_*: the URL with the secret (or, on AWS, the secret's ARN), or none of them.
pub(super) fn webhook(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<WebhookConfig>, ConfigError> {
    let (url, secret, secret_arn) =
        match (get("HELIX_WEBHOOK_URL"), get("HELIX_WEBHOOK_SECRET"), get("HELIX_WEBHOOK_SECRET_ARN")) {
            (None, None, None) => return Ok(None),
            (_, Some(_), Some(_)) => {
                return Err(err("HELIX_WEBHOOK_SECRET_ARN", "set HELIX_WEBHOOK_SECRET or its ARN, not both"));
            }
            (Some(_), None, None) => {
                return Err(err(
                    "HELIX_WEBHOOK_SECRET",
                    "must be set with HELIX_WEBHOOK_URL (or HELIX_WEBHOOK_SECRET_ARN on AWS)",
                ));
            }
            (None, s, _) => {
                let with = if s.is_some() { "HELIX_WEBHOOK_SECRET" } else { "HELIX_WEBHOOK_SECRET_ARN" };
                return Err(err("HELIX_WEBHOOK_URL", format!("must be set with {with}")));
            }
            (Some(u), Some(s), None) => (u, s, None),
            (Some(u), None, Some(arn)) => (u, String::new(), Some(arn)),
        };
    check_url(&url).map_err(|m| err("HELIX_WEBHOOK_URL", m))?;
    if let Some(arn) = &secret_arn {
        let parts: Vec<&str> = arn.splitn(7, ':').collect();
        if parts.len() != 7 || parts[0] != "arn" || parts[2] != "secretsmanager" || parts[5] != "secret" {
            return Err(err(
                "HELIX_WEBHOOK_SECRET_ARN",
                "is the ARN of a Secrets Manager secret (arn:…:secretsmanager:…:secret:…)",
            ));
        }
    } else if secret.len() < 16 {
        // The value itself is never repeated in a message.
        return Err(err("HELIX_WEBHOOK_SECRET", "is at least 16 characters (e.g. `openssl rand -hex 32`)"));
    }
    let number = |var: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| match get(var) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| err(var, format!("{v:?} is not a number in {}..={}", range.start(), range.end()))),
    };
    Ok(Some(WebhookConfig {
        url,
        secret: WebhookSecret(secret),
        secret_arn,
        attempts: number("HELIX_WEBHOOK_ATTEMPTS", 10, 1..=100)? as u32,
        backoff: std::time::Duration::from_millis(number("HELIX_WEBHOOK_BACKOFF_MS", 1000, 1..=600_000)?),
        timeout: std::time::Duration::from_millis(number("HELIX_WEBHOOK_TIMEOUT_MS", 5000, 100..=60_000)?),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::{Mode, from_pairs};

    #[test]
    fn a_webhook_needs_its_secret_and_an_https_or_loopback_url_and_never_shows_the_secret() {
        let secret = ("HELIX_WEBHOOK_SECRET", "0123456789abcdef-secret");
        let c = from_pairs(Mode::Serve, &[("HELIX_WEBHOOK_URL", "https://hooks.example/helix"), secret]).unwrap();
        let w = c.webhook.expect("configured");
        assert_eq!((w.attempts, w.backoff.as_millis(), w.timeout.as_millis()), (10, 1000, 5000));
        assert!(
            !format!(
                "{:?}",
                from_pairs(Mode::Serve, &[("HELIX_WEBHOOK_URL", "http://127.0.0.1:9/h"), secret]).unwrap()
            )
            .contains("0123456789abcdef")
        );
        assert!(from_pairs(Mode::Serve, &[]).unwrap().webhook.is_none());
        for (vars, var) in [
            (vec![("HELIX_WEBHOOK_URL", "http://hooks.example/helix"), secret], "HELIX_WEBHOOK_URL"),
            (vec![("HELIX_WEBHOOK_URL", "https://hooks.example/helix")], "HELIX_WEBHOOK_SECRET"),
            (vec![secret], "HELIX_WEBHOOK_URL"),
            (
                vec![("HELIX_WEBHOOK_URL", "https://h.example/"), ("HELIX_WEBHOOK_SECRET", "short")],
                "HELIX_WEBHOOK_SECRET",
            ),
            (
                vec![("HELIX_WEBHOOK_URL", "https://h.example/"), secret, ("HELIX_WEBHOOK_ATTEMPTS", "0")],
                "HELIX_WEBHOOK_ATTEMPTS",
            ),
        ] {
            let e = from_pairs(Mode::Serve, &vars).unwrap_err();
            assert_eq!(e.var, var, "{vars:?}");
            assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        }
    }

    /// On AWS the key stays in Secrets Manager: the notify function gets its ARN and reads it at start.
    #[test]
    fn on_aws_the_webhook_secret_may_be_a_secrets_manager_arn_read_at_start() {
        let aws = [
            ("HELIX_TABLE", "t"),
            ("HELIX_AUDIT_TABLE", "a"),
            ("HELIX_S3_BUCKET", "b"),
            ("HELIX_KMS_KEY_ID", "k"),
            ("HELIX_WEBHOOK_URL", "https://hooks.example/helix"),
        ];
        let arn =
            ("HELIX_WEBHOOK_SECRET_ARN", "arn:aws:secretsmanager:eu-west-1:123456789012:secret:helix-hook-AbC123");
        let with = |extra: &[(&'static str, &'static str)]| [&aws[..], extra].concat();
        let w = from_pairs(Mode::Lambda, &with(&[arn])).unwrap().webhook.expect("configured");
        assert_eq!(w.secret_arn.as_deref(), Some(arn.1));
        assert_eq!(w.secret.expose(), "", "not read yet");
        assert_eq!(
            w.clone().with_secret("0123456789abcdef-from-sm".into()).unwrap().secret.expose(),
            "0123456789abcdef-from-sm"
        );
        assert_eq!(w.with_secret("short".into()).unwrap_err().var, "HELIX_WEBHOOK_SECRET_ARN");
        for (vars, var) in [
            (with(&[arn, ("HELIX_WEBHOOK_SECRET", "0123456789abcdef-secret")]), "HELIX_WEBHOOK_SECRET_ARN"),
            (with(&[("HELIX_WEBHOOK_SECRET_ARN", "helix-hook")]), "HELIX_WEBHOOK_SECRET_ARN"),
            (with(&[("HELIX_WEBHOOK_SECRET_ARN", "arn:aws:ssm:eu-west-1:1:parameter/x")]), "HELIX_WEBHOOK_SECRET_ARN"),
            ([&aws[..4], &[arn]].concat(), "HELIX_WEBHOOK_URL"),
        ] {
            assert_eq!(from_pairs(Mode::Lambda, &vars).unwrap_err().var, var, "{vars:?}");
        }
        let backends =
            [("HELIX_META_BACKEND", "dynamodb"), ("HELIX_SIGNER_BACKEND", "kms"), ("HELIX_BLOB_BACKEND", "s3")];
        let serve = from_pairs(Mode::Serve, &with(&[&backends[..], &[arn]].concat())).unwrap_err();
        assert_eq!(serve.var, "HELIX_WEBHOOK_SECRET_ARN", "helix serve takes the secret itself");
    }
}

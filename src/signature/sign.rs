//! Signing, the mirror of verification, for `jetedge send` (operators and
//! kiosk scripts posting test events). Uses the first active secret.

use super::{hmac_sha256, Verifier};
use crate::config::{Encoding, Scheme};
use base64::Engine;

impl Verifier {
    /// Headers that make `body` verify against this source at Unix time `now`.
    pub fn sign(&self, body: &[u8], now: i64, msg_id: &str) -> Vec<(String, String)> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let Some(key) = self.keys.first() else {
            return Vec::new();
        };
        let ts = now.to_string();
        let one = |name: &str, value: String| vec![(name.to_string(), value)];
        match self.scheme {
            Scheme::StandardWebhooks | Scheme::Svix => {
                let prefix = if self.scheme == Scheme::Svix {
                    "svix"
                } else {
                    "webhook"
                };
                vec![
                    (format!("{prefix}-id"), msg_id.into()),
                    (
                        format!("{prefix}-signature"),
                        super::standard::signature(key, msg_id, &ts, body),
                    ),
                    (format!("{prefix}-timestamp"), ts),
                ]
            }
            Scheme::Github => one(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(hmac_sha256(key, &[body]))),
            ),
            Scheme::Stripe => {
                let sig = hmac_sha256(key, &[ts.as_bytes(), b".", body]);
                one(
                    "stripe-signature",
                    format!("t={ts},v1={}", hex::encode(sig)),
                )
            }
            Scheme::Shopify => one("x-shopify-hmac-sha256", b64(&hmac_sha256(key, &[body]))),
            Scheme::Slack => {
                let sig = hmac_sha256(key, &[b"v0:", ts.as_bytes(), b":", body]);
                vec![
                    ("x-slack-request-timestamp".into(), ts),
                    (
                        "x-slack-signature".into(),
                        format!("v0={}", hex::encode(sig)),
                    ),
                ]
            }
            Scheme::HmacSha256 => {
                let sig = hmac_sha256(key, &[body]);
                let text = match self.encoding {
                    Encoding::Hex => hex::encode(sig),
                    Encoding::Base64 => b64(&sig),
                };
                one(&self.header, format!("{}{text}", self.prefix))
            }
            Scheme::Bearer => one(
                "authorization",
                format!("Bearer {}", String::from_utf8_lossy(key)),
            ),
            Scheme::Gitlab => one("x-gitlab-token", String::from_utf8_lossy(key).into_owned()),
            Scheme::Twilio => {
                let text = super::twilio::signed_text(&self.url, body);
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
                one(
                    "x-twilio-signature",
                    b64(ring::hmac::sign(&key, &text).as_ref()),
                )
            }
            Scheme::Paddle => {
                let sig = hmac_sha256(key, &[ts.as_bytes(), b":", body]);
                one(
                    "paddle-signature",
                    format!("ts={ts};h1={}", hex::encode(sig)),
                )
            }
            // The body must carry its own `webhookTimestamp`, as Linear's do.
            Scheme::Linear => one("linear-signature", hex::encode(hmac_sha256(key, &[body]))),
            Scheme::Zoom => {
                let sig = hmac_sha256(key, &[b"v0:", ts.as_bytes(), b":", body]);
                vec![
                    ("x-zm-request-timestamp".into(), ts),
                    ("x-zm-signature".into(), format!("v0={}", hex::encode(sig))),
                ]
            }
            Scheme::Square => one(
                "x-square-hmacsha256-signature",
                b64(&hmac_sha256(key, &[self.url.as_bytes(), body])),
            ),
            Scheme::None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Scheme, Secret, SourceConfig};
    use crate::signature::{headers, Verifier};

    /// Every scheme's signature verifies with the same source's verifier.
    #[test]
    fn signatures_round_trip_for_every_scheme() {
        for scheme in Scheme::VERIFYING {
            let cfg = SourceConfig {
                header: Some("x-sig".into()),
                prefix: Some("sha256=".into()),
                url: Some("https://example.com/hook?x=1".into()),
                ..SourceConfig::new("s", scheme)
            };
            let v = Verifier::new(
                &cfg,
                &[Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
            )
            .unwrap();
            let body = br#"{"a":1,"webhookTimestamp":1000000}"#;
            let pairs = v.sign(body, 1000, "m1");
            let refs: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(v.verify(&headers(&refs), body, 1000), Ok(()), "{scheme:?}");
            // A token (bearer, GitLab's) does not cover the body; every signature does.
            let tampered = br#"{"a":2,"webhookTimestamp":1000000}"#;
            let tampered = v.verify(&headers(&refs), tampered, 1000);
            let token = matches!(scheme, Scheme::Bearer | Scheme::Gitlab);
            assert_eq!(tampered.is_err(), !token, "{scheme:?}");
        }
    }
}

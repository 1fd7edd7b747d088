//! Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp`
//! and `webhook-signature` headers; the signature is base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under a `whsec_`-prefixed base64 secret, and the
//! header may carry several space-separated `v1,<sig>` entries (rotation).
//! The asymmetric form signs the same text with ed25519: `v1a,<sig>`
//! entries, checked against `whpk_`-prefixed base64 public keys. Svix
//! sends the same scheme under `svix-id`, `svix-timestamp` and
//! `svix-signature`.

use super::{any_matches, check_tolerance, decode_b64, header, parse_timestamp, VerifyError};
use hyper::HeaderMap;
use std::time::Duration;

/// The `webhook-signature` value of `body` sent as message `id` at Unix
/// time `ts`: what a sender puts on the request, and what [`verify`] checks.
pub fn signature(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    use base64::Engine;
    let sig = super::hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(sig)
    )
}

pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "a Standard Webhooks secret is \"whsec_\" followed by base64".to_string())
}

/// A `whpk_` public key: base64 of the 32 bytes of an ed25519 key.
pub fn decode_public_key(key: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let bad =
        || "a Standard Webhooks public key is \"whpk_\" followed by base64 of 32 bytes".to_string();
    let b64 = key.strip_prefix("whpk_").ok_or_else(bad)?;
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(k) if k.len() == 32 => Ok(k),
        _ => Err(bad()),
    }
}

/// A key egress signs with: a shared secret (`v1`) or an ed25519 key pair (`v1a`).
pub enum SigningKey {
    Hmac(Vec<u8>),
    Ed25519(ring::signature::Ed25519KeyPair),
}

impl SigningKey {
    /// `whsec_…` (HMAC) or `whsk_…`: base64 of an ed25519 seed (32
    /// bytes) or of the seed and its public key (64 bytes).
    pub fn decode(key: &str) -> Result<Self, String> {
        use base64::Engine;
        let Some(b64) = key.strip_prefix("whsk_") else {
            return decode_secret(key).map(Self::Hmac);
        };
        let bad = || {
            "a Standard Webhooks private key is \"whsk_\" followed by base64 of a 32-byte ed25519 seed (or seed and public key, 64 bytes)".to_string()
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad())?;
        let pair = match bytes.len() {
            32 => ring::signature::Ed25519KeyPair::from_seed_unchecked(&bytes),
            64 => ring::signature::Ed25519KeyPair::from_seed_and_public_key(
                &bytes[..32],
                &bytes[32..],
            ),
            _ => return Err(bad()),
        };
        pair.map(Self::Ed25519).map_err(|_| bad())
    }

    /// This key's `webhook-signature` entry.
    pub fn sign(&self, id: &str, ts: &str, body: &[u8]) -> String {
        use base64::Engine;
        match self {
            Self::Hmac(key) => signature(key, id, ts, body),
            Self::Ed25519(pair) => {
                let msg = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
                let sig = pair.sign(&msg);
                format!(
                    "v1a,{}",
                    base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
                )
            }
        }
    }

    /// The header value for several keys: their entries, space-separated.
    pub fn sign_all(keys: &[SigningKey], id: &str, ts: &str, body: &[u8]) -> String {
        let entries: Vec<String> = keys.iter().map(|k| k.sign(id, ts, body)).collect();
        entries.join(" ")
    }
}

/// A source's keys: shared secrets for `v1`, public keys for `v1a`.
pub struct Keys<'a> {
    pub secrets: &'a [Vec<u8>],
    pub public: &'a [Vec<u8>],
}

/// `prefix` names the headers: `webhook` (Standard Webhooks) or `svix`.
pub fn verify(
    keys: Keys<'_>,
    prefix: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let (id_name, ts_name, sig_name) = (
        format!("{prefix}-id"),
        format!("{prefix}-timestamp"),
        format!("{prefix}-signature"),
    );
    let id = header(headers, &id_name)?;
    let ts_text = header(headers, &ts_name)?;
    let ts = parse_timestamp(ts_text, &ts_name)?;
    let sigs = header(headers, &sig_name)?;
    let entries = |version: &str| -> Result<Vec<Vec<u8>>, VerifyError> {
        sigs.split_whitespace()
            .filter_map(|entry| entry.strip_prefix(version))
            .map(|sig| decode_b64(sig, &sig_name))
            .collect()
    };
    let (hmac, ed) = (entries("v1,")?, entries("v1a,")?);
    if hmac.is_empty() && ed.is_empty() {
        return Err(VerifyError::Malformed(format!(
            "{sig_name} (no v1 or v1a entry)"
        )));
    }
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.as_bytes(), b".", body];
    let signed_by_secret =
        !keys.secrets.is_empty() && any_matches(keys.secrets, &parts, &hmac).is_ok();
    if !signed_by_secret && !ed_matches(keys.public, &parts.concat(), &ed) {
        return Err(VerifyError::Mismatch);
    }
    check_tolerance(ts, now, tolerance)
}

/// Whether any `v1a` signature verifies under any public key.
fn ed_matches(public: &[Vec<u8>], message: &[u8], sigs: &[Vec<u8>]) -> bool {
    use ring::signature::{UnparsedPublicKey, ED25519};
    public.iter().any(|k| {
        let key = UnparsedPublicKey::new(&ED25519, k);
        sigs.iter().any(|s| key.verify(message, s).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    const TOL: Duration = Duration::from_secs(300);

    fn hk(secrets: &[Vec<u8>]) -> Keys<'_> {
        Keys {
            secrets,
            public: &[],
        }
    }

    /// Signs with the Standard Webhooks reference library, not with our code.
    fn signed(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        wh.sign(id, ts, body).unwrap()
    }

    #[test]
    fn accepts_reference_library_signatures_and_rotated_secrets() {
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let body = br#"{"type":"order.created","data":{"n":1}}"#;
        let sig = signed(old, "msg_1", 1_700_000_000, body);
        let h = headers(&[
            ("webhook-id", "msg_1"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", &sig),
        ]);
        let keys = vec![decode_secret(new).unwrap(), decode_secret(old).unwrap()];
        assert_eq!(
            verify(hk(&keys), "webhook", &h, body, 1_700_000_010, TOL),
            Ok(())
        );
        let only_new = vec![decode_secret(new).unwrap()];
        assert_eq!(
            verify(hk(&only_new), "webhook", &h, body, 1_700_000_010, TOL),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn one_matching_entry_among_several_is_enough() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = b"{}";
        let good = signed(secret, "m", 100, body);
        let header_value = format!("v1,Zm9vYmFy {good} v2,ignored");
        let h = headers(&[
            ("webhook-id", "m"),
            ("webhook-timestamp", "100"),
            ("webhook-signature", &header_value),
        ]);
        assert_eq!(
            verify(
                hk(&[decode_secret(secret).unwrap()]),
                "webhook",
                &h,
                body,
                100,
                TOL
            ),
            Ok(())
        );
    }

    #[test]
    fn tampered_body_stale_time_and_missing_headers_are_refused() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let keys = [decode_secret(secret).unwrap()];
        let sig = signed(secret, "m", 1000, b"{\"a\":1}");
        let h = headers(&[
            ("webhook-id", "m"),
            ("webhook-timestamp", "1000"),
            ("webhook-signature", &sig),
        ]);
        assert_eq!(
            verify(hk(&keys), "webhook", &h, b"{\"a\":2}", 1000, TOL),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(hk(&keys), "webhook", &h, b"{\"a\":1}", 1000 + 301, TOL),
            Err(VerifyError::Stale { .. })
        ));
        assert!(matches!(
            verify(hk(&keys), "webhook", &h, b"{\"a\":1}", 1000 - 301, TOL),
            Err(VerifyError::Stale { .. })
        ));
        let h2 = headers(&[("webhook-id", "m"), ("webhook-timestamp", "1000")]);
        assert_eq!(
            verify(hk(&keys), "webhook", &h2, b"{}", 1000, TOL),
            Err(VerifyError::Missing("webhook-signature".into()))
        );
    }
}

#[cfg(test)]
mod asymmetric {
    use super::*;
    use crate::signature::headers;
    use base64::Engine;
    use ed25519_dalek::{Signer, SigningKey};

    /// Signed with ed25519-dalek, an implementation this code does not use.
    fn v1a(key: &SigningKey, id: &str, ts: &str, body: &[u8]) -> String {
        let msg = [id.as_bytes(), b".", ts.as_bytes(), b".", body].concat();
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("v1a,{}", b64.encode(key.sign(&msg).to_bytes()))
    }

    fn whpk(key: &SigningKey) -> String {
        let b64 = base64::engine::general_purpose::STANDARD;
        format!("whpk_{}", b64.encode(key.verifying_key().to_bytes()))
    }

    #[test]
    fn v1a_signatures_verify_under_whpk_keys_for_both_header_sets() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[9; 32]);
        let public = [decode_public_key(&whpk(&key)).unwrap()];
        let body = br#"{"type":"invoice.paid"}"#;
        let sig = v1a(&key, "msg_2", "1700000000", body);
        for prefix in ["webhook", "svix"] {
            let h = headers(&[
                (&*format!("{prefix}-id"), "msg_2"),
                (&*format!("{prefix}-timestamp"), "1700000000"),
                (&*format!("{prefix}-signature"), &sig),
            ]);
            let keys = Keys {
                secrets: &[],
                public: &public,
            };
            assert_eq!(verify(keys, prefix, &h, body, 1_700_000_001, TOL), Ok(()));
        }
        let forged = v1a(&other, "msg_2", "1700000000", body);
        let h = headers(&[
            ("webhook-id", "msg_2"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", &forged),
        ]);
        let keys = Keys {
            secrets: &[],
            public: &public,
        };
        assert_eq!(
            verify(keys, "webhook", &h, body, 1_700_000_001, TOL),
            Err(VerifyError::Mismatch)
        );
        assert!(decode_public_key("whpk_AAAA").is_err(), "not 32 bytes");
    }

    const TOL: Duration = Duration::from_secs(300);
}

#[cfg(test)]
mod signing {
    use super::*;
    use crate::signature::headers;
    use base64::Engine;

    /// What egress signs with several keys (an HMAC secret and an ed25519
    /// key during a move to asymmetric signing) verifies under either key
    /// alone; the `v1a` entry also with ed25519-dalek, which ring is not.
    #[test]
    fn every_key_signs_and_each_verifies_on_its_own() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let seed = [5u8; 32];
        let whsk = format!("whsk_{}", b64.encode(seed));
        let keys = [
            SigningKey::decode(secret).unwrap(),
            SigningKey::decode(&whsk).unwrap(),
        ];
        let body = br#"{"n":1}"#;
        let value = SigningKey::sign_all(&keys, "evt_1", "1700000000", body);
        let h = headers(&[
            ("webhook-id", "evt_1"),
            ("webhook-timestamp", "1700000000"),
            ("webhook-signature", &value),
        ]);
        let v1a = value
            .split(' ')
            .find_map(|e| e.strip_prefix("v1a,"))
            .unwrap();
        let dalek = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let sig = ed25519_dalek::Signature::from_slice(&b64.decode(v1a).unwrap()).unwrap();
        let msg = b"evt_1.1700000000.{\"n\":1}";
        dalek
            .verify_strict(msg, &sig)
            .expect("v1a verifies with ed25519-dalek");
        let public = [dalek.to_bytes().to_vec()];
        let only_public = Keys {
            secrets: &[],
            public: &public,
        };
        assert_eq!(
            verify(
                only_public,
                "webhook",
                &h,
                body,
                1_700_000_000,
                Duration::from_secs(5)
            ),
            Ok(())
        );
        let only_secret = [decode_secret(secret).unwrap()];
        let hmac = Keys {
            secrets: &only_secret,
            public: &[],
        };
        assert_eq!(
            verify(
                hmac,
                "webhook",
                &h,
                body,
                1_700_000_000,
                Duration::from_secs(5)
            ),
            Ok(())
        );
        assert!(SigningKey::decode("whsk_AAAA").is_err());
    }
}

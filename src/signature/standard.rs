//! Standard Webhooks (standardwebhooks.com): `webhook-id`, `webhook-timestamp`
//! and `webhook-signature` headers; the signature is base64 HMAC-SHA256 of
//! `{id}.{timestamp}.{body}` under a `whsec_`-prefixed base64 secret, and the
//! header may carry several space-separated `v1,<sig>` entries (rotation).

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

pub fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let id = header(headers, "webhook-id")?;
    let ts_text = header(headers, "webhook-timestamp")?;
    let ts = parse_timestamp(ts_text, "webhook-timestamp")?;
    let sigs = header(headers, "webhook-signature")?;
    let candidates: Vec<Vec<u8>> = sigs
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .map(|sig| decode_b64(sig, "webhook-signature"))
        .collect::<Result<_, _>>()?;
    if candidates.is_empty() {
        return Err(VerifyError::Malformed(
            "webhook-signature (no v1 entry)".into(),
        ));
    }
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", ts_text.as_bytes(), b".", body];
    any_matches(keys, &parts, &candidates)?;
    check_tolerance(ts, now, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    const TOL: Duration = Duration::from_secs(300);

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
        assert_eq!(verify(&keys, &h, body, 1_700_000_010, TOL), Ok(()));
        let only_new = vec![decode_secret(new).unwrap()];
        assert_eq!(
            verify(&only_new, &h, body, 1_700_000_010, TOL),
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
            verify(&[decode_secret(secret).unwrap()], &h, body, 100, TOL),
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
            verify(&keys, &h, b"{\"a\":2}", 1000, TOL),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(&keys, &h, b"{\"a\":1}", 1000 + 301, TOL),
            Err(VerifyError::Stale { .. })
        ));
        assert!(matches!(
            verify(&keys, &h, b"{\"a\":1}", 1000 - 301, TOL),
            Err(VerifyError::Stale { .. })
        ));
        let h2 = headers(&[("webhook-id", "m"), ("webhook-timestamp", "1000")]);
        assert_eq!(
            verify(&keys, &h2, b"{}", 1000, TOL),
            Err(VerifyError::Missing("webhook-signature".into()))
        );
    }
}

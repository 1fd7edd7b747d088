//! Slack: `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.

use super::{any_matches, check_tolerance, decode_hex, header, parse_timestamp, VerifyError};
use hyper::HeaderMap;
use std::time::Duration;

pub fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let names = ("X-Slack-Request-Timestamp", "X-Slack-Signature");
    verify_v0(keys, names, headers, body, now, tolerance)
}

/// The `v0` scheme Slack and Zoom share, under their own header names
/// (timestamp, signature): `v0=hex(HMAC-SHA256(key, "v0:{ts}:{body}"))`.
pub(super) fn verify_v0(
    keys: &[Vec<u8>],
    (ts_name, sig_name): (&str, &str),
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let ts_text = header(headers, &ts_name.to_ascii_lowercase())?;
    let ts = parse_timestamp(ts_text, ts_name)?;
    let value = header(headers, &sig_name.to_ascii_lowercase())?;
    let hex = value
        .strip_prefix("v0=")
        .ok_or_else(|| VerifyError::Malformed(format!("{sig_name} (expected v0=...)")))?;
    let sig = decode_hex(hex, sig_name)?;
    any_matches(keys, &[b"v0:", ts_text.as_bytes(), b":", body], &[sig])?;
    check_tolerance(ts, now, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    /// The example from Slack's "Verifying requests from Slack" documentation.
    #[test]
    fn published_vector() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let keys = [b"8f742231b10e8888abcd99yyyzzz85a5".to_vec()];
        let h = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            (
                "X-Slack-Signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ]);
        let tol = Duration::from_secs(300);
        assert_eq!(verify(&keys, &h, body, 1531420618, tol), Ok(()));
        assert!(matches!(
            verify(&keys, &h, body, 1531420618 + 3600, tol),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(
            verify(&keys, &h, &body[1..], 1531420618, tol),
            Err(VerifyError::Mismatch)
        );
    }
}

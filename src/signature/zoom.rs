//! Zoom: `x-zm-signature: v0=<hex>`, HMAC-SHA256 of `v0:{ts}:{body}` under
//! the app's secret token, with the time in `x-zm-request-timestamp`: Slack's
//! scheme under other header names.
//! Zoom checks an endpoint before using it (`endpoint.url_validation`):
//! the answer is the plain token and its HMAC ([`challenge`]).

use super::VerifyError;
use hyper::HeaderMap;
use std::time::Duration;

pub fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let names = ("x-zm-request-timestamp", "x-zm-signature");
    super::slack::verify_v0(keys, names, headers, body, now, tolerance)
}

/// The answer to Zoom's URL validation: `encryptedToken` is hex
/// HMAC-SHA256 of the plain token under the (first) secret token.
pub fn challenge(key: &[u8], plain_token: &str) -> serde_json::Value {
    let mac = super::hmac_sha256(key, &[plain_token.as_bytes()]);
    serde_json::json!({"plainToken": plain_token, "encryptedToken": hex::encode(mac)})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    const BODY: &[u8] =
        br#"{"event":"meeting.started","event_ts":1764496800000,"payload":{"object":{"id":"85"}}}"#;

    /// Computed with Python's hmac module, independently of this code.
    #[test]
    fn independent_vectors() {
        let keys = [b"zoom_secret_token".to_vec()];
        let sig = "v0=8e623503451054b5ad30221925ed6e33fb93766740bf286322bc4ed3b513253a";
        let h = headers(&[
            ("x-zm-request-timestamp", "1764496800"),
            ("x-zm-signature", sig),
        ]);
        let tol = Duration::from_secs(300);
        assert_eq!(verify(&keys, &h, BODY, 1_764_496_801, tol), Ok(()));
        assert_eq!(
            verify(&keys, &h, b"{}", 1_764_496_801, tol),
            Err(VerifyError::Mismatch)
        );
        let c = challenge(b"zoom_secret_token", "qgg8vlvZRS6UYooatFL8Aw");
        assert_eq!(
            c["encryptedToken"],
            "bd48235863f4a6323ccc4963c594908b7c97f88b4a6a95278f4f093690b12726"
        );
    }
}

//! Square: `x-square-hmacsha256-signature` is base64 HMAC-SHA256, under the
//! subscription's signature key, of the notification URL (the source's
//! `url`, exactly as registered with Square) followed by the body.

use super::{any_matches, decode_b64, header, VerifyError};
use hyper::HeaderMap;

pub fn verify(
    keys: &[Vec<u8>],
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let name = "x-square-hmacsha256-signature";
    let sig = decode_b64(header(headers, name)?, name)?;
    any_matches(keys, &[url.as_bytes(), body], &[sig])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    /// Computed with Python's hmac module, independently of this code.
    #[test]
    fn independent_vector() {
        let url = "https://shop.example.com/v1/webhooks/square";
        let body = br#"{"merchant_id":"ML8M","type":"payment.updated","event_id":"e1","created_at":"2026-11-30T10:00:00Z","data":{}}"#;
        let keys = [b"sq_sig_key".to_vec()];
        let h = headers(&[(
            "x-square-hmacsha256-signature",
            "9Q9Dp/NUzKXcdjFrkyi/x3d0R+SBPHi/27/Lxb6EaPE=",
        )]);
        assert_eq!(verify(&keys, url, &h, body), Ok(()));
        assert_eq!(
            verify(&keys, "https://shop.example.com/other", &h, body),
            Err(VerifyError::Mismatch)
        );
    }
}

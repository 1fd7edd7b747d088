//! GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`. GitHub
//! signs no timestamp, so replay protection rests on the delivery id dedupe.

use super::{any_matches, decode_hex, header, VerifyError};
use hyper::HeaderMap;

pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let value = header(headers, "x-hub-signature-256")?;
    let hex = value.strip_prefix("sha256=").ok_or_else(|| {
        VerifyError::Malformed("X-Hub-Signature-256 (expected sha256=...)".into())
    })?;
    let sig = decode_hex(hex, "X-Hub-Signature-256")?;
    any_matches(keys, &[body], &[sig])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    /// The example from GitHub's "Validating webhook deliveries" documentation.
    #[test]
    fn published_vector() {
        let keys = [b"It's a Secret to Everybody".to_vec()];
        let h = headers(&[(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(verify(&keys, &h, b"Hello, World!"), Ok(()));
        assert_eq!(
            verify(&keys, &h, b"Hello, World?"),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn malformed_and_missing() {
        let keys = [b"k".to_vec()];
        assert!(matches!(
            verify(&keys, &headers(&[("X-Hub-Signature-256", "md5=00")]), b""),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            verify(&keys, &headers(&[]), b""),
            Err(VerifyError::Missing(_))
        ));
    }
}

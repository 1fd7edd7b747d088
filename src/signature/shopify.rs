//! Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of the body>`, keyed
//! with the app's client secret. No timestamp is signed.

use super::{any_matches, decode_b64, header, VerifyError};
use hyper::HeaderMap;

pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap, body: &[u8]) -> Result<(), VerifyError> {
    let sig = decode_b64(
        header(headers, "x-shopify-hmac-sha256")?,
        "X-Shopify-Hmac-Sha256",
    )?;
    any_matches(keys, &[body], &[sig])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    /// Computed with Python's hmac module, independently of this code.
    #[test]
    fn independent_vector() {
        let keys = [b"shpss_test".to_vec()];
        let h = headers(&[(
            "X-Shopify-Hmac-Sha256",
            "3JxXO8Lul52iD5+qb1FHtoXK8vDwPbXpi8eB+yETk5I=",
        )]);
        assert_eq!(verify(&keys, &h, br#"{"id":820982911946154508}"#), Ok(()));
        assert_eq!(
            verify(&keys, &h, br#"{"id":820982911946154509}"#),
            Err(VerifyError::Mismatch)
        );
        let bad = headers(&[("X-Shopify-Hmac-Sha256", "not base64!")]);
        assert!(matches!(
            verify(&keys, &bad, b"{}"),
            Err(VerifyError::Malformed(_))
        ));
    }
}

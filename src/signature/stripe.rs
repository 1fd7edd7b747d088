//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`; each v1 is hex
//! HMAC-SHA256 of `{t}.{body}` keyed with the whole `whsec_...` secret string.
//! Several v1 entries appear while Stripe rolls a secret.

use super::{verify_listed, ListedHeader, VerifyError};
use hyper::HeaderMap;
use std::time::Duration;

const SCHEME: ListedHeader = ListedHeader {
    name: "Stripe-Signature",
    sep: ',',
    ts_key: "t",
    sig_key: "v1",
    joiner: b".",
};

pub fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    verify_listed(&SCHEME, keys, headers, body, now, tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    /// Computed with Python's hmac module, independently of this code.
    const SIG: &str = "22d8dc182f5c588077683bd378368e29765bfe5df2560112b4f28fef120f0e31";
    const TOL: Duration = Duration::from_secs(300);

    #[test]
    fn independent_vector_with_several_v1_entries() {
        let keys = [b"whsec_test_secret".to_vec()];
        let v = format!("t=1700000000,v1={},v1={SIG},v0=abc", "00".repeat(32));
        let h = headers(&[("Stripe-Signature", &v)]);
        assert_eq!(verify(&keys, &h, BODY, 1_700_000_100, TOL), Ok(()));
        assert!(matches!(
            verify(&keys, &h, BODY, 1_700_000_400, TOL),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(
            verify(&[b"whsec_other".to_vec()], &h, BODY, 1_700_000_100, TOL),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn header_without_timestamp_or_signature_is_malformed() {
        let keys = [b"k".to_vec()];
        for v in [format!("v1={SIG}"), "t=1700000000".to_string()] {
            let h = headers(&[("Stripe-Signature", &v)]);
            assert!(matches!(
                verify(&keys, &h, BODY, 1_700_000_000, TOL),
                Err(VerifyError::Malformed(_))
            ));
        }
    }
}

//! Linear: `Linear-Signature` is hex HMAC-SHA256 of the body under the
//! webhook's signing secret. The body's `webhookTimestamp` (Unix
//! milliseconds, inside the signed body) is held to the tolerance, as
//! Linear asks, to refuse replays.

use super::{any_matches, check_tolerance, decode_hex, header, VerifyError};
use hyper::HeaderMap;
use std::time::Duration;

pub fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: Duration,
) -> Result<(), VerifyError> {
    let sig = decode_hex(header(headers, "linear-signature")?, "Linear-Signature")?;
    any_matches(keys, &[body], &[sig])?;
    #[derive(serde::Deserialize)]
    struct Stamp {
        #[serde(rename = "webhookTimestamp")]
        ms: Option<i64>,
    }
    match serde_json::from_slice::<Stamp>(body) {
        Ok(Stamp { ms: Some(ms) }) => check_tolerance(ms / 1000, now, tolerance),
        _ => Err(VerifyError::Malformed("body (no webhookTimestamp)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    const BODY: &[u8] = br#"{"action":"create","type":"Issue","webhookTimestamp":1764496800123,"data":{"id":"iss_1"}}"#;

    /// Computed with Python's hmac module, independently of this code.
    #[test]
    fn independent_vector_and_the_signed_timestamp() {
        let keys = [b"lin_wh_secret".to_vec()];
        let sig = "d9965912f583e1c4c534686f3afdff2ef2e12382817fbd883f1271a4fc4226f6";
        let h = headers(&[("Linear-Signature", sig)]);
        let tol = Duration::from_secs(60);
        assert_eq!(verify(&keys, &h, BODY, 1_764_496_830, tol), Ok(()));
        assert!(matches!(
            verify(&keys, &h, BODY, 1_764_497_000, tol),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(verify(&keys, &h, b"{}", 0, tol), Err(VerifyError::Mismatch));
    }
}

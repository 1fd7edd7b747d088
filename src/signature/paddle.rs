//! Paddle Billing: `Paddle-Signature: ts=<unix>;h1=<hex>`, where h1 is
//! HMAC-SHA256 of `{ts}:{body}` under the notification destination's secret;
//! during a rotation the header carries several `h1` entries.

use super::{verify_listed, ListedHeader, VerifyError};
use hyper::HeaderMap;
use std::time::Duration;

const SCHEME: ListedHeader = ListedHeader {
    name: "Paddle-Signature",
    sep: ';',
    ts_key: "ts",
    sig_key: "h1",
    joiner: b":",
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

    const BODY: &[u8] = br#"{"event_id":"evt_01h8","event_type":"transaction.completed","occurred_at":"2026-11-30T10:00:00Z","data":{"id":"txn_1"}}"#;
    const TOL: Duration = Duration::from_secs(5);

    /// Computed with Python's hmac module, independently of this code.
    #[test]
    fn independent_vector_rotation_and_tolerance() {
        let keys = [b"pdl_ntfset_secret".to_vec()];
        let h1 = "9ffe2f510f688bfc36d034d8ee2dedff276bf271122a6f2c2e7c76779d571c40";
        let h = headers(&[(
            "Paddle-Signature",
            &format!("ts=1764496800;h1=00ff;h1={h1}"),
        )]);
        assert_eq!(verify(&keys, &h, BODY, 1_764_496_802, TOL), Ok(()));
        assert!(matches!(
            verify(&keys, &h, BODY, 1_764_496_900, TOL),
            Err(VerifyError::Stale { .. })
        ));
        assert_eq!(
            verify(&keys, &h, b"{}", 1_764_496_800, TOL),
            Err(VerifyError::Mismatch)
        );
        let no_ts = headers(&[("Paddle-Signature", &format!("h1={h1}"))]);
        assert!(matches!(
            verify(&keys, &no_ts, BODY, 0, TOL),
            Err(VerifyError::Malformed(_))
        ));
    }
}

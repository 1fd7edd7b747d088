//! Generic HMAC-SHA256 over the raw body, in a header the source names,
//! written as hex or base64, optionally behind a prefix such as `sha256=`.

use super::{any_matches, decode_b64, decode_hex, header, VerifyError};
use crate::config::Encoding;
use hyper::HeaderMap;

pub fn verify(
    keys: &[Vec<u8>],
    headers: &HeaderMap,
    body: &[u8],
    name: &str,
    prefix: &str,
    encoding: Encoding,
) -> Result<(), VerifyError> {
    let value = header(headers, name)?;
    let text = value
        .strip_prefix(prefix)
        .ok_or_else(|| VerifyError::Malformed(format!("{name} (expected prefix {prefix:?})")))?;
    let sig = match encoding {
        Encoding::Hex => decode_hex(text, name)?,
        Encoding::Base64 => decode_b64(text, name)?,
    };
    any_matches(keys, &[body], &[sig])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    /// Computed with Python's hmac module, independently of this code.
    #[test]
    fn independent_vectors_in_hex_and_base64() {
        let keys = [b"generic-key".to_vec()];
        let hex = "7b99d4cf3ca9a58f79f46907e1827047003839b564d686da003b416f36832977";
        let h = headers(&[("X-Sig", &format!("sha256={hex}"))]);
        assert_eq!(
            verify(&keys, &h, br#"{"a":1}"#, "X-Sig", "sha256=", Encoding::Hex),
            Ok(())
        );
        assert_eq!(
            verify(&keys, &h, br#"{"a":2}"#, "X-Sig", "sha256=", Encoding::Hex),
            Err(VerifyError::Mismatch)
        );
        let h = headers(&[("X-Sig", "e5nUzzyppY959GkH4YJwRwA4ObVk1obaADtBbzaDKXc=")]);
        assert_eq!(
            verify(&keys, &h, br#"{"a":1}"#, "X-Sig", "", Encoding::Base64),
            Ok(())
        );
    }
}

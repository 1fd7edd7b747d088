//! Twilio: `X-Twilio-Signature` is base64 HMAC-SHA1, under the account's
//! auth token, of the full URL Twilio called (the source's `url`, query
//! string included) followed by every POST parameter's name and value,
//! sorted by name. Twilio posts `application/x-www-form-urlencoded`.
//! No timestamp is signed; the parameters (`MessageSid`, `CallSid`) are.

use super::{decode_b64, header, VerifyError};
use hyper::HeaderMap;

/// The signed text: `url`, then each parameter's name and value by name.
pub(super) fn signed_text(url: &str, body: &[u8]) -> Vec<u8> {
    let mut params: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    params.sort();
    let mut text = url.as_bytes().to_vec();
    for (k, v) in params {
        text.extend_from_slice(k.as_bytes());
        text.extend_from_slice(v.as_bytes());
    }
    text
}

pub fn verify(
    keys: &[Vec<u8>],
    url: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), VerifyError> {
    let sig = decode_b64(header(headers, "x-twilio-signature")?, "X-Twilio-Signature")?;
    let text = signed_text(url, body);
    let candidates = [sig];
    // Every key is tried, so the time does not tell which one matched.
    let matched = keys.iter().fold(false, |ok, k| {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, k);
        super::mac_matches(ring::hmac::sign(&key, &text).as_ref(), &candidates) | ok
    });
    match matched {
        true => Ok(()),
        false => Err(VerifyError::Mismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    /// The example of Twilio's own documentation ("Validating Requests are
    /// coming from Twilio"): auth token 12345, this URL and these parameters.
    #[test]
    fn twilio_documentation_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let body = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675310&Digits=1234&From=%2B14158675310&To=%2B18005551212";
        let keys = [b"12345".to_vec()];
        let h = headers(&[("X-Twilio-Signature", "GvWf1cFY/Q7PnoempGyD5oXAezc=")]);
        assert_eq!(verify(&keys, url, &h, body), Ok(()));
        // The same parameters in another order sign the same.
        let shuffled = b"To=%2B18005551212&Digits=1234&CallSid=CA1234567890ABCDE&From=%2B14158675310&Caller=%2B14158675310";
        assert_eq!(verify(&keys, url, &h, shuffled), Ok(()));
        assert_eq!(
            verify(&keys, "https://mycompany.com/myapp.php", &h, body),
            Err(VerifyError::Mismatch),
            "the URL is signed"
        );
        let changed = b"CallSid=CA1234567890ABCDE&Caller=%2B14158675310&Digits=9999&From=%2B14158675310&To=%2B18005551212";
        assert_eq!(verify(&keys, url, &h, changed), Err(VerifyError::Mismatch));
    }
}

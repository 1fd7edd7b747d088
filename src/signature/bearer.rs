//! Bearer token: `Authorization: Bearer <token>`, compared in constant time
//! against every active token.

use super::{header, VerifyError};
use hyper::HeaderMap;

pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap) -> Result<(), VerifyError> {
    let value = header(headers, "authorization")?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| VerifyError::Malformed("Authorization (expected Bearer <token>)".into()))?
        .trim();
    super::any_token(keys, token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    #[test]
    fn any_active_token_is_accepted() {
        let keys = [b"old-token".to_vec(), b"new-token".to_vec()];
        assert_eq!(
            verify(&keys, &headers(&[("Authorization", "Bearer new-token")])),
            Ok(())
        );
        assert_eq!(
            verify(&keys, &headers(&[("Authorization", "Bearer nope")])),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(&keys, &headers(&[("Authorization", "Basic x")])),
            Err(VerifyError::Malformed(_))
        ));
    }
}

//! GitLab: `X-Gitlab-Token` carries the webhook's secret token itself (GitLab
//! signs nothing); it is compared in constant time with each active secret.

use super::{header, VerifyError};
use hyper::HeaderMap;

pub fn verify(keys: &[Vec<u8>], headers: &HeaderMap) -> Result<(), VerifyError> {
    super::any_token(keys, header(headers, "x-gitlab-token")?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::headers;

    #[test]
    fn the_token_must_equal_a_secret() {
        let keys = [b"old-token".to_vec(), b"glwht-new".to_vec()];
        assert_eq!(
            verify(&keys, &headers(&[("X-Gitlab-Token", "glwht-new")])),
            Ok(())
        );
        assert_eq!(
            verify(&keys, &headers(&[("X-Gitlab-Token", "glwht-ne")])),
            Err(VerifyError::Mismatch)
        );
        assert!(matches!(
            verify(&keys, &headers(&[])),
            Err(VerifyError::Missing(_))
        ));
    }
}

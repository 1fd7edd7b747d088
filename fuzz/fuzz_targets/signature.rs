//! Every signature scheme's header parsing and verification, on arbitrary
//! headers and bodies: never a panic; and what the scheme signs, whatever
//! the body and (printable) message id, always verifies.
#![no_main]

use jetedge::config::{Encoding, Scheme, Secret, SourceConfig};
use jetedge::signature::{Verifier, VerifyError};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

const SCHEMES: [Scheme; 14] = Scheme::VERIFYING;
const NOW: i64 = 1_700_000_000;

fn verifier(scheme: Scheme, variant: u8) -> Verifier {
    let mut source = SourceConfig::new("fuzz", scheme);
    if scheme == Scheme::HmacSha256 {
        source.header = Some("x-signature".into());
        source.prefix = (variant & 1 == 1).then(|| "sha256=".into());
        source.encoding = Some(if variant & 2 == 2 { Encoding::Base64 } else { Encoding::Hex });
    }
    if scheme.signs_url() {
        source.url = Some("https://example.com/hooks/fuzz?site=1".into());
    }
    let secret = match scheme {
        Scheme::StandardWebhooks | Scheme::Svix => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        _ => "fuzz-secret",
    };
    Verifier::new(&source, &[Secret::new(secret)]).expect("a valid secret")
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let scheme = SCHEMES[pick as usize % SCHEMES.len()];
    let v = verifier(scheme, pick / SCHEMES.len() as u8);
    let (headers, body) = common::headers_and_body(rest);
    // Arbitrary headers: any answer but a panic (the seeds are signed
    // with the key, so some are accepted).
    let _ = v.verify(&headers, body, NOW);
    // What the scheme signs verifies, whatever the body and id.
    // Message ids are event ids: printable ASCII, as header text must be.
    let id: String = String::from_utf8_lossy(&rest[..rest.len().min(16)])
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    let mut signed = hyper::HeaderMap::new();
    for (name, value) in v.sign(body, NOW, &id) {
        let Ok(value) = hyper::header::HeaderValue::from_str(&value) else {
            return; // an id that is no header value: nothing to send
        };
        signed.append(hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
    }
    match v.verify(&signed, body, NOW) {
        Ok(()) => {}
        // Linear's timestamp is inside the body, which an arbitrary body lacks.
        Err(VerifyError::Malformed(_) | VerifyError::Stale { .. }) if scheme == Scheme::Linear => {}
        Err(e @ VerifyError::Mismatch) => panic!("{scheme:?}: own signature refused: {e}"),
        Err(e) => panic!("{scheme:?}: own signature unreadable: {e}"),
    }
});

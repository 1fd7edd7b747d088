//! The store's record decoding from arbitrary bytes: an outbox batch, one
//! record, and a sealed value under a key (encryption at rest). Never a
//! panic; what decodes encodes to bytes that decode to the same records.
#![no_main]

use jetedge::store::{decode_batch, Record, SealKeys};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn seal() -> &'static SealKeys {
    static SEAL: OnceLock<SealKeys> = OnceLock::new();
    SEAL.get_or_init(|| SealKeys::new(Some(&[7u8; 32]), &[[9u8; 32]]))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Record::decode(data) {
        let again = Record::decode(&r.encode()).expect("an encoded record decodes");
        assert_eq!(again, r);
    }
    if let Ok(batch) = decode_batch(data) {
        for r in &batch {
            assert_eq!(Record::decode(&r.encode()).as_ref(), Ok(r));
        }
    }
    // A sealed value: refused (not sealed, unknown key, forged) or opened;
    // opened only if it was sealed with one of the keys.
    if let Ok(plain) = seal().open(data.to_vec()) {
        // Magic, key id, nonce and tag: anything shorter is a plain value.
        if data.len() >= 4 + 4 + 12 + 16 && data.starts_with(b"JES1") {
            panic!("a forged sealed value opened: {plain:?}");
        }
        assert_eq!(plain, data, "a plain value is read as it is");
    }
    let sealed = seal().seal(data.to_vec());
    assert_eq!(seal().open(sealed).expect("own seal opens"), data);
});

//! The outbox record: what the forwarder needs to publish one event, in a
//! small length-prefixed binary layout (a version byte, then each field as a
//! little-endian u32 length and its bytes). Decoding never panics on bad
//! bytes; it reports them.

/// One event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub subject: String,
    pub id: String,
    pub type_: String,
    pub source: String,
    pub traceparent: String,
    /// The envelope, CloudEvents structured JSON.
    pub payload: Vec<u8>,
}

const VERSION: u8 = 1;

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let fields: [&[u8]; 6] = [
            self.subject.as_bytes(),
            self.id.as_bytes(),
            self.type_.as_bytes(),
            self.source.as_bytes(),
            self.traceparent.as_bytes(),
            &self.payload,
        ];
        let len = 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.push(VERSION);
        for f in fields {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, String> {
        match b.split_first() {
            Some((&VERSION, rest)) => b = rest,
            Some((v, _)) => return Err(format!("unknown record version {v}")),
            None => return Err("empty record".into()),
        }
        let mut next = || -> Result<Vec<u8>, String> {
            if b.len() < 4 {
                return Err("truncated record".into());
            }
            let n = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as usize;
            if b.len() < 4 + n {
                return Err("truncated record".into());
            }
            let f = b[4..4 + n].to_vec();
            b = &b[4 + n..];
            Ok(f)
        };
        let text = |v: Vec<u8>| String::from_utf8(v).map_err(|_| "non-UTF-8 field".to_string());
        Ok(Self {
            subject: text(next()?)?,
            id: text(next()?)?,
            type_: text(next()?)?,
            source: text(next()?)?,
            traceparent: text(next()?)?,
            payload: next()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let r = Record {
            subject: "events.shop.order.created".into(),
            id: "0190-abc".into(),
            type_: "order.created".into(),
            source: "/jetedge/n/shop".into(),
            traceparent: "00-aa-bb-01".into(),
            payload: b"{\"x\":1}".to_vec(),
        };
        let bytes = r.encode();
        assert_eq!(Record::decode(&bytes), Ok(r));
        for cut in [0, 1, 5, bytes.len() - 1] {
            assert!(Record::decode(&bytes[..cut]).is_err());
        }
        let mut v2 = bytes.clone();
        v2[0] = 9;
        assert!(Record::decode(&v2).is_err());
    }
}

//! Outbox values. A [`Record`] is what the forwarder needs to publish one
//! event, in a small length-prefixed binary layout (a version byte, then
//! each field as a little-endian u32 length and its bytes). The committer
//! stores the records of one group under one outbox key, as a batch (a
//! version byte, a u32 count, then each record with its u32 length), so a
//! group costs sled one insert and one removal rather than one per event.
//! Decoding never panics on bad bytes; it reports them.

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
        encode_fields([
            self.subject.as_bytes(),
            self.id.as_bytes(),
            self.type_.as_bytes(),
            self.source.as_bytes(),
            self.traceparent.as_bytes(),
            &self.payload,
        ])
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

/// A record's encoding from its fields (subject, id, type, source,
/// traceparent, payload), in one allocation of the exact size: the ingest
/// path encodes without building a [`Record`] first.
pub fn encode_fields(fields: [&[u8]; 6]) -> Vec<u8> {
    let len = 1 + fields.iter().map(|f| 4 + f.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    for f in fields {
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    out
}

const BATCH_VERSION: u8 = 2;

/// Encodes encoded records as one outbox value (sized up front: a batch
/// can be megabytes, and growing it would copy it several times).
pub fn encode_batch<'a>(records: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let len = 5 + records.clone().map(|r| 4 + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(BATCH_VERSION);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The number of events in a batch, read from its header; `None` when the
/// header is not one or claims more records than the bytes could hold.
pub fn batch_count(b: &[u8]) -> Option<u64> {
    match b {
        [BATCH_VERSION, c0, c1, c2, c3, rest @ ..] => {
            let count = u32::from_le_bytes([*c0, *c1, *c2, *c3]) as u64;
            (count <= rest.len() as u64 / 4).then_some(count)
        }
        _ => None,
    }
}

/// The records of a batch, in order.
pub fn decode_batch(b: &[u8]) -> Result<Vec<Record>, String> {
    let count = batch_count(b).ok_or("not an outbox batch")?;
    let mut rest = &b[5..];
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        if rest.len() < 4 {
            return Err("truncated batch".into());
        }
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let record = rest.get(4..4 + n).ok_or("truncated batch")?;
        out.push(Record::decode(record)?);
        rest = &rest[4 + n..];
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the batch".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_refuse_damage() {
        let records: Vec<Record> = (0..3)
            .map(|i| Record {
                subject: format!("events.s.t{i}"),
                id: format!("id-{i}"),
                type_: "t".into(),
                source: "/s".into(),
                traceparent: "tp".into(),
                payload: vec![b'x'; i * 10],
            })
            .collect();
        let encoded: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
        let batch = encode_batch(encoded.iter().map(Vec::as_slice));
        assert_eq!(batch_count(&batch), Some(3));
        assert_eq!(decode_batch(&batch), Ok(records));
        for cut in [0, 3, 5, 9, batch.len() - 1] {
            assert!(decode_batch(&batch[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = batch.clone();
        longer.push(0);
        assert!(decode_batch(&longer).is_err());
    }

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

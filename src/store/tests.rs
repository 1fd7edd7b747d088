use super::*;
use crate::config::{ByteSize, NodeConfig};

fn cfg(dir: &std::path::Path) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_path_buf(),
        ..NodeConfig::default()
    }
}

const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn open(c: &NodeConfig) -> Store {
    Store::open(c).unwrap()
}

/// The event id a test labels `label`: event ids are UUIDs.
fn uid(label: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(label.as_bytes());
    uuid::Uuid::from_slice(&d[..16]).unwrap().to_string()
}

fn event(key: Option<&str>, id: &str, size: usize) -> NewEvent {
    let record = Record {
        subject: "events.s.t".into(),
        id: id.into(),
        type_: "t".into(),
        source: "/jetedge/n/s".into(),
        traceparent: "tp".into(),
        payload: vec![b'x'; size],
    };
    NewEvent {
        keys: key.map(|k| idem_key("s", k)).into_iter().collect(),
        dedupe_ttl: DAY,
        id: uid(id),
        record: record.encode(),
        local_first: Vec::new(),
    }
}

/// The ids of the first ten events waiting for upstream, in order.
fn pending_ids(store: &Store) -> Vec<String> {
    let pending = store.pending(None, 10).unwrap();
    pending.into_iter().map(|p| p.record.id).collect()
}

fn tempdir(name: &str) -> crate::testdir::TestDir {
    crate::testdir::TestDir::new(&format!("store-{name}"))
}

#[tokio::test]
async fn accepted_events_come_back_in_order_after_reopen() {
    let dir = tempdir("order");
    let store = open(&cfg(&dir));
    let out = store
        .persist(vec![
            event(None, "a", 10),
            event(None, "b", 10),
            event(None, "c", 10),
        ])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Accepted; 3]);
    assert_eq!(store.backlog().0, 3);
    store.close().await;

    let store = open(&cfg(&dir));
    let pending = store.pending(None, 10).unwrap();
    let ids: Vec<_> = pending.iter().map(|p| p.record.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    assert_eq!(store.backlog().0, 3);
    // One persist call is one group, stored as one batch.
    assert!(pending.iter().all(|p| p.at.seq == pending[0].at.seq));
    assert_eq!(pending.iter().filter(|p| p.batch_done.is_some()).count(), 1);
    let from_second = Position {
        seq: pending[0].at.seq,
        index: 1,
    };
    let rest: Vec<_> = store
        .pending(Some(from_second), 10)
        .unwrap()
        .into_iter()
        .map(|p| p.record.id)
        .collect();
    assert_eq!(rest, ["b", "c"]);
    assert_eq!(
        store.pending(None, 2).unwrap().len(),
        2,
        "limit is kept inside a batch"
    );

    let more = store.persist(vec![event(None, "d", 10)]).await.unwrap();
    assert_eq!(more, vec![Outcome::Accepted]);
    store
        .remove_forwarded(vec![pending[2].batch_done.unwrap()])
        .await
        .unwrap();
    // Removals are applied by the committer, in order with everything else.
    store.sync().await.unwrap();
    let ids = pending_ids(&store);
    assert_eq!(ids, ["d"]);
    assert_eq!(store.backlog().0, 1);
    store.close().await;
    let store = open(&cfg(&dir));
    assert_eq!(
        store.backlog().0,
        1,
        "the backlog is recounted from the batches on open"
    );
    store.close().await;
}

#[tokio::test]
async fn a_repeated_key_is_a_duplicate_of_the_first_id_even_in_one_batch() {
    let dir = tempdir("dedupe");
    let store = open(&cfg(&dir));
    let out = store
        .persist(vec![
            event(Some("k1"), "first", 5),
            event(Some("k1"), "second", 5),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![Outcome::Accepted, Outcome::Duplicate { id: uid("first") }]
    );
    let out = store
        .persist(vec![event(Some("k1"), "third", 5)])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Duplicate { id: uid("first") }]);
    assert_eq!(store.pending(None, 10).unwrap().len(), 1);
    store.close().await;
}

#[tokio::test]
async fn keys_expire_after_their_ttl() {
    let dir = tempdir("ttl");
    let ttl = std::time::Duration::from_millis(50);
    let store = Store::open(&cfg(&dir)).unwrap();
    let event = |k, id, size| NewEvent {
        dedupe_ttl: ttl,
        ..event(k, id, size)
    };
    assert_eq!(
        store.persist(vec![event(Some("k"), "a", 5)]).await.unwrap(),
        vec![Outcome::Accepted]
    );
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert_eq!(
        store.persist(vec![event(Some("k"), "b", 5)]).await.unwrap(),
        vec![Outcome::Accepted]
    );
    store.close().await;
}

#[tokio::test]
async fn the_quota_refuses_what_does_not_fit_and_frees_after_forwarding() {
    let dir = tempdir("quota");
    let mut c = cfg(&dir);
    c.max_buffer = ByteSize::mib(1);
    let store = open(&c);
    let big = 400 * 1024;
    let out = store
        .persist(vec![
            event(None, "a", big),
            event(None, "b", big),
            event(None, "c", big),
            event(None, "d", 10),
        ])
        .await
        .unwrap();
    // "d" would fit, but taking it would put it before "c", which the
    // sender retries later.
    assert_eq!(
        out,
        vec![
            Outcome::Accepted,
            Outcome::Accepted,
            Outcome::QuotaFull,
            Outcome::QuotaFull
        ]
    );
    let first = store.pending(None, 2).unwrap().remove(1);
    store
        .remove_forwarded(vec![first.batch_done.unwrap()])
        .await
        .unwrap();
    assert_eq!(
        store.persist(vec![event(None, "c", big)]).await.unwrap(),
        vec![Outcome::Accepted]
    );
    store.close().await;
}

#[tokio::test]
async fn a_damaged_batch_is_set_aside_and_the_rest_still_flows() {
    let dir = tempdir("damaged");
    let store = open(&cfg(&dir));
    store.persist(vec![event(None, "a", 10)]).await.unwrap();
    store.persist(vec![event(None, "b", 10)]).await.unwrap();
    store.pending(None, 1).unwrap();
    // Bit rot in the first record's body (its header is intact).
    let start = store.inner.last_read.lock().unwrap().unwrap().start;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(
            dir.join("outbox")
                .join(format!("{:016x}.log", start.segment)),
        )
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"garbage", start.offset + 40).unwrap();
    let ids = pending_ids(&store);
    assert_eq!(ids, ["b"]);
    assert_eq!(store.inner.corrupt.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_read_that_fails_skips_nothing_and_works_again_later() {
    // A read can fail without any damage (no file descriptor left, an I/O
    // error): the reader reports it, and skips nothing.
    let dir = tempdir("read-fails");
    let store = open(&cfg(&dir));
    for id in ["a", "b", "c"] {
        store.persist(vec![event(None, id, 10)]).await.unwrap();
    }
    let segment = std::fs::read_dir(dir.join("outbox"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let away = segment.with_extension("away");
    std::fs::rename(&segment, &away).unwrap();
    let failed = store.pending(None, 10);
    assert!(
        matches!(failed, Err(StoreError::Io(_))),
        "{:?}",
        failed.map(|p| p.len())
    );
    assert_eq!(store.inner.corrupt.len(), 0, "nothing set aside");
    std::fs::rename(&away, &segment).unwrap();
    assert_eq!(pending_ids(&store), ["a", "b", "c"]);
    store.close().await;
}

fn runs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("keys")).map_or(0, |d| d.count())
}

#[tokio::test]
async fn keys_outlive_a_restart_within_their_ttl_and_expired_runs_are_deleted() {
    let dir = tempdir("key-runs");
    let ttl = std::time::Duration::from_millis(400);
    let event = |k: Option<&str>, id, size| NewEvent {
        dedupe_ttl: ttl,
        ..event(k, id, size)
    };
    let store = open(&cfg(&dir));
    assert_eq!(
        store.persist(vec![event(Some("k"), "a", 5)]).await.unwrap(),
        vec![Outcome::Accepted]
    );
    store.close().await;
    // Written out as a run at the clean stop, found again after it.
    assert_eq!(runs(&dir), 1);
    let store = open(&cfg(&dir));
    assert_eq!(
        store.persist(vec![event(Some("k"), "b", 5)]).await.unwrap(),
        vec![Outcome::Duplicate { id: uid("a") }]
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    store
        .persist(vec![event(Some("other"), "x", 5)])
        .await
        .unwrap();
    store.close().await;
    // The expired run went with the next write-out; the newest stays.
    assert_eq!(runs(&dir), 1);
    let store = open(&cfg(&dir));
    assert_eq!(
        store.persist(vec![event(Some("k"), "c", 5)]).await.unwrap(),
        vec![Outcome::Accepted]
    );
    store.close().await;
}

#[tokio::test]
async fn local_first_marks_exist_exactly_for_accepted_events() {
    let dir = tempdir("local-first");
    let store = open(&cfg(&dir));
    let signal = store.local_signal();
    let marked = |key: Option<&str>, id: &str| NewEvent {
        local_first: vec!["kiosk".into()],
        ..event(key, id, 10)
    };
    let out = store
        .persist(vec![
            marked(Some("k1"), "a"),
            marked(Some("k1"), "b"),
            event(None, "c", 10),
        ])
        .await
        .unwrap();
    assert_eq!(out[1], Outcome::Duplicate { id: uid("a") });
    assert!(signal.has_changed().unwrap(), "the workers are woken");
    let pending: Vec<_> = store
        .local_pending("kiosk", 10)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        pending,
        ["a"],
        "a duplicate or an unmarked event gets no mark"
    );
    assert!(store.local_marked("kiosk", &uid("a"), 0).unwrap());
    assert!(!store.local_marked("other", &uid("a"), 0).unwrap());
    store.local_done("kiosk", &uid("a"), 1_000).unwrap();
    assert!(store.local_pending("kiosk", 10).unwrap().is_empty());
    assert!(store.local_marked("kiosk", &uid("a"), 999).unwrap());
    assert!(
        !store.local_marked("kiosk", &uid("a"), 1_000).unwrap(),
        "expired"
    );
    assert_eq!(store.local_sweep(1_000).unwrap(), 1);
    store.close().await;
}

#[tokio::test]
async fn dead_letters_survive_a_reopen_and_can_be_updated_and_purged() {
    let dir = tempdir("dlq");
    let store = open(&cfg(&dir));
    let meta = |sub: &str| LetterMeta {
        subscription: sub.into(),
        targets: vec!["webhook".into()],
        attempts: 3,
        last_error: "POST answered 503".into(),
        dead_at: "2026-11-24T00:00:00Z".into(),
    };
    let record = Record::decode(&event(None, "e1", 20).record).unwrap();
    let first = store.dead_letter(meta("a"), record.clone()).await.unwrap();
    let second = store.dead_letter(meta("b"), record.clone()).await.unwrap();
    assert!(second > first);
    store.close().await;

    let store = open(&cfg(&dir));
    assert_eq!(store.dead_letter_count(), 2);
    let all = store.dead_letters(None, 10).unwrap();
    assert_eq!(
        all.iter().map(|l| l.seq).collect::<Vec<_>>(),
        [first, second]
    );
    assert_eq!(all[0].record, record);
    assert_eq!(store.dead_letters(Some(first), 10).unwrap()[0].seq, second);
    let mut l = store.dead_letter_get(first).unwrap().unwrap();
    l.meta.attempts = 4;
    store.dead_letter_update(&l).await.unwrap();
    assert_eq!(
        store.dead_letter_get(first).unwrap().unwrap().meta.attempts,
        4
    );
    assert_eq!(store.dead_letter_purge(Some("b")).await.unwrap(), 1);
    assert!(store.dead_letter_remove(first).await.unwrap());
    assert!(!store.dead_letter_remove(first).await.unwrap());
    assert_eq!(store.dead_letter_count(), 0);
    store.close().await;
}

#[tokio::test]
async fn a_removal_is_flushed_and_synced_without_anyone_asking() {
    let dir = tempdir("removal-durable");
    let store = open(&cfg(&dir));
    let events = (0..100)
        .map(|i| event(None, &format!("e{i}"), 500))
        .collect();
    store.persist(events).await.unwrap();
    let last = store.pending(None, 100).unwrap().pop().unwrap();
    let flushes = store.flushes();
    store
        .remove_forwarded(vec![last.batch_done.unwrap()])
        .await
        .unwrap();
    // The committer applies the removal and makes it durable by itself:
    // a power cut now must not bring the events back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.flushes() == flushes || store.backlog().0 != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the removal was never flushed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    store.close().await;
    let store = open(&cfg(&dir));
    assert_eq!(store.backlog().0, 0);
    store.close().await;
}

#[tokio::test]
async fn groups_of_new_events_leave_sleds_flush_to_later_and_a_sync_still_flushes() {
    let dir = tempdir("deferred-flush");
    let store = open(&cfg(&dir));
    let flushes = store.flushes();
    for i in 0..20 {
        let out = store
            .persist(vec![event(Some(&format!("k{i}")), &format!("e{i}"), 100)])
            .await
            .unwrap();
        assert_eq!(out, vec![Outcome::Accepted]);
    }
    // Each answer waited for the outbox log's fdatasync, not for sled's.
    assert!(
        store.flushes() - flushes < 5,
        "{} sled flushes for 20 groups",
        store.flushes() - flushes
    );
    let before_sync = store.flushes();
    store.sync().await.unwrap();
    assert_eq!(store.flushes(), before_sync + 1, "a sync flushes at once");
    store.close().await;
    let store = open(&cfg(&dir));
    assert_eq!(store.backlog().0, 20);
    let out = store
        .persist(vec![event(Some("k7"), "again", 100)])
        .await
        .unwrap();
    assert!(matches!(&out[0], Outcome::Duplicate { .. }), "{out:?}");
    store.close().await;
}

#[tokio::test]
async fn keys_not_yet_written_out_come_back_from_the_log_after_a_crash() {
    let dir = tempdir("unapplied");
    let store = open(&cfg(&dir));
    let out = store
        .persist(vec![event(Some("k1"), "a", 10), event(Some("k2"), "b", 10)])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Accepted; 2]);
    store.close().await;
    // A crash before the keys were written out as a run: only the outbox
    // records hold them.
    std::fs::remove_dir_all(dir.join("keys")).unwrap();

    let store = open(&cfg(&dir));
    let out = store
        .persist(vec![event(Some("k2"), "c", 10)])
        .await
        .unwrap();
    assert_eq!(out, vec![Outcome::Duplicate { id: uid("b") }]);
    assert_eq!(store.backlog().0, 2);
    store.close().await;
}

#[tokio::test]
async fn a_drained_outbox_gives_its_disk_back_without_a_restart() {
    let dir = tempdir("drained-disk");
    let store = open(&cfg(&dir));
    for g in 0..40 {
        let events = (0..100)
            .map(|i| event(None, &format!("e{g}-{i}"), 1000))
            .collect();
        store.persist(events).await.unwrap();
    }
    let on_disk = |d: &std::path::Path| -> u64 {
        std::fs::read_dir(d.join("outbox"))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    assert!(on_disk(&dir) > 4 << 20);
    let (events, bytes) = store.backlog();
    assert_eq!(events, 4000);
    assert!((4000 * 1000..4000 * 1100).contains(&bytes), "{bytes}");
    let mut from = None;
    loop {
        let page = store.pending(from, 512).unwrap();
        let Some(last) = page.last() else { break };
        from = Some(Position {
            seq: last.at.seq,
            index: last.at.index + 1,
        });
        let done: Vec<_> = page.iter().filter_map(|p| p.batch_done).collect();
        store.remove_forwarded(done).await.unwrap();
    }
    store.sync().await.unwrap();
    assert_eq!(store.backlog(), (0, 0));
    assert_eq!(on_disk(&dir), 0, "a drained outbox keeps no segment");
    // And it takes events again, after a restart too.
    store.persist(vec![event(None, "after", 10)]).await.unwrap();
    let ids: Vec<_> = store
        .pending(from, 10)
        .unwrap()
        .into_iter()
        .map(|p| p.record.id)
        .collect();
    assert_eq!(ids, ["after"]);
    store.close().await;
    let store = open(&cfg(&dir));
    assert_eq!(store.backlog().0, 1);
    let ids = pending_ids(&store);
    assert_eq!(ids, ["after"]);
    store.close().await;
}

#[tokio::test]
async fn keys_read_back_after_a_crash_may_span_outbox_segments() {
    let dir = tempdir("replay-segments");
    let store = open(&cfg(&dir));
    // 20,000 events of 1 KB: the outbox rolls to a second segment, and the
    // keys are written out once, after 16,384 events.
    for g in 0..40 {
        let events = (0..500)
            .map(|i| {
                let n = g * 500 + i;
                event(Some(&format!("k{n}")), &format!("e{n}"), 1000)
            })
            .collect();
        store.persist(events).await.unwrap();
    }
    store.close().await;
    assert!(std::fs::read_dir(dir.join("outbox")).unwrap().count() >= 2);
    // A crash before the last write-out: its run is not there.
    let mut runs: Vec<_> = std::fs::read_dir(dir.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    runs.sort();
    assert!(runs.len() >= 2, "{runs:?}");
    std::fs::remove_file(runs.last().unwrap()).unwrap();

    let store = open(&cfg(&dir));
    for n in [0, 15_000, 16_500, 19_999] {
        let out = store
            .persist(vec![event(Some(&format!("k{n}")), "again", 10)])
            .await
            .unwrap();
        assert_eq!(
            out,
            vec![Outcome::Duplicate {
                id: uid(&format!("e{n}"))
            }],
            "key {n}"
        );
    }
    store.close().await;
}

/// A key file (outside the data dir) and the reference the config takes.
fn key_ref(dir: &std::path::Path, name: &str, byte: u8) -> crate::config::SecretRef {
    use base64::Engine;
    let path = dir.join(format!("{name}.key"));
    std::fs::write(
        &path,
        base64::engine::general_purpose::STANDARD.encode([byte; 32]),
    )
    .unwrap();
    crate::config::SecretRef::File(path.display().to_string())
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => out.extend(all_bytes(&path)),
            false => out.extend(std::fs::read(&path).unwrap()),
        }
    }
    out
}

fn marked(id: &str) -> NewEvent {
    let mut e = event(Some(id), id, 0);
    let mut r = Record::decode(&e.record).unwrap();
    r.payload = format!("{{\"card\":\"SECRET-MARKER-{id}\"}}").into_bytes();
    e.record = r.encode();
    e.local_first = vec!["kiosk".into()];
    e
}

#[tokio::test]
async fn sealed_stores_hold_no_plaintext_and_open_only_with_their_keys() {
    let dir = tempdir("sealed");
    let keys = tempdir("sealed-keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (a, b) = (key_ref(&keys, "a", 1), key_ref(&keys, "b", 2));
    let with = |key: Option<&crate::config::SecretRef>, previous: &[&crate::config::SecretRef]| {
        NodeConfig {
            encryption_key: key.cloned(),
            previous_keys: previous.iter().map(|r| (*r).clone()).collect(),
            ..cfg(&dir)
        }
    };
    let store = open(&with(Some(&a), &[]));
    assert_eq!(
        store
            .persist(vec![marked("e1"), marked("e2")])
            .await
            .unwrap(),
        vec![Outcome::Accepted; 2]
    );
    let pending = store.pending(None, 10).unwrap();
    let meta = |n| LetterMeta {
        subscription: "kiosk".into(),
        targets: vec!["webhook".into()],
        attempts: n,
        last_error: "refused".into(),
        dead_at: "2026-12-01T00:00:00Z".into(),
    };
    store
        .dead_letter(meta(1), pending[0].record.clone())
        .await
        .unwrap();
    let parked = ParkedMeta {
        reason: ParkReason::TooLarge,
        error: "too large".into(),
        parked_at: "2026-12-01T00:00:00Z".into(),
        times: 1,
    };
    store.park(parked, &pending[1].record).unwrap();
    store.close().await;
    let bytes = all_bytes(&dir);
    assert!(
        !bytes.windows(13).any(|w| w == b"SECRET-MARKER"),
        "no payload byte in clear on disk"
    );

    // Without the key, or with another one, the start stops and says why.
    for c in [with(None, &[]), with(Some(&b), &[])] {
        let err = Store::open(&c).err().expect("refused");
        assert!(matches!(err, StoreError::Key(_)), "{err}");
        assert!(err.to_string().contains("sealed with key"), "{err}");
    }
    // A rotated key opens everything through the previous one, and seals
    // what is kept again with the new key.
    let store = open(&with(Some(&b), &[&a]));
    let ids = pending_ids(&store);
    assert_eq!(ids, ["e1", "e2"]);
    assert_eq!(store.local_pending("kiosk", 10).unwrap().len(), 2);
    assert_eq!(store.dead_letters(None, 10).unwrap()[0].meta, meta(1));
    assert_eq!(store.parked(None, 10).unwrap()[0].record.id, "e2");
    let enc = store.encryption().unwrap();
    assert!(
        enc.older_records_in_outbox,
        "the outbox still holds records sealed with a"
    );
    store.close().await;
    // The outbox still needs the previous key; once it is forwarded, the
    // kept entries (sealed again at the rotation) open with the new key alone.
    let err = Store::open(&with(Some(&b), &[]))
        .err()
        .expect("the outbox needs key a");
    assert!(matches!(err, StoreError::Key(_)));
    let store = open(&with(Some(&b), &[&a]));
    let done = store
        .pending(None, 10)
        .unwrap()
        .into_iter()
        .filter_map(|p| p.batch_done)
        .collect();
    store.remove_forwarded(done).await.unwrap();
    store.sync().await.unwrap();
    assert!(!store.encryption().unwrap().older_records_in_outbox);
    store.close().await;
    let store = open(&with(Some(&b), &[]));
    assert_eq!(store.backlog().0, 0);
    assert_eq!(store.dead_letters(None, 10).unwrap()[0].meta, meta(1));
    assert_eq!(store.parked(None, 10).unwrap().len(), 1);
    assert_eq!(store.local_pending("kiosk", 10).unwrap().len(), 2);
    store.close().await;
}

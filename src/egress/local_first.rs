//! Local-first delivery: events ingested at this site that match a
//! `local_first` subscription go to its targets straight from the store's
//! pending marks, whether or not upstream is reachable. Each settled event
//! leaves a seen mark, by which its copy from upstream is recognised and
//! skipped (`consumer.rs`).

use super::{now_ms, Outcome, Stats, Subscription};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How often expired seen marks are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(600);

pub(super) async fn run(sub: Arc<Subscription>) {
    let mut signal = sub.store.local_signal();
    let slots = Arc::new(Semaphore::new(sub.cfg.max_in_flight));
    let busy = Arc::new(Mutex::new(HashSet::<String>::new()));
    let mut tasks = JoinSet::new();
    let mut last_sweep = tokio::time::Instant::now();
    while !sub.stop.is_cancelled() {
        signal.borrow_and_update();
        let pending = match sub.store.local_pending(&sub.cfg.name, 4096) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(subscription = %sub.cfg.name, error = %e, "cannot read local-first marks");
                Vec::new()
            }
        };
        for record in pending {
            if !busy.lock().expect("busy set").insert(record.id.clone()) {
                continue;
            }
            // The scan may predate a delivery that settled since.
            if !sub
                .store
                .local_is_pending(&sub.cfg.name, &record.id)
                .unwrap_or(false)
            {
                busy.lock().expect("busy set").remove(&record.id);
                continue;
            }
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p.expect("never closed"),
                _ = sub.stop.cancelled() => break,
            };
            let (sub, busy) = (sub.clone(), busy.clone());
            tasks.spawn(async move {
                let id = record.id.clone();
                settle(&sub, record).await;
                busy.lock().expect("busy set").remove(&id);
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = tokio::time::Instant::now();
            match sub.store.local_sweep(now_ms()) {
                Ok(n) if n > 0 => {
                    tracing::debug!(subscription = %sub.cfg.name, expired = n, "local-first marks expired")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sweeping local-first marks failed"),
            }
        }
        tokio::select! {
            _ = signal.changed() => {}
            // Also picks up marks whose delivery ended without settling.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = sub.stop.cancelled() => break,
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn settle(sub: &Subscription, record: crate::store::Record) {
    let id = record.id.clone();
    let settled = match sub.deliver(&record).await {
        Outcome::Delivered => {
            Stats::add(&sub.stats.local_first);
            Ok(())
        }
        Outcome::Dead(meta) => sub.bury(meta, record).await,
        // Stays pending; delivered after the restart.
        Outcome::Stopped => return,
    };
    let expiry = now_ms() + sub.cfg.local_first_ttl.0.as_millis() as u64;
    if let Err(e) = settled.and_then(|()| sub.store.local_done(&sub.cfg.name, &id, expiry)) {
        tracing::error!(subscription = %sub.cfg.name, %id, error = %e, "cannot settle a local-first delivery; it will be retried");
    }
}

//! Live tap: events as they are stored (after filtering and redaction,
//! never before), for `jetedge tap` and `GET /admin/tap`. A broadcast
//! channel of bounded size: ingest never waits for a watcher, and a
//! watcher that falls behind loses the oldest events (and is told how
//! many). With nobody watching, ingest copies nothing.

use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Events kept for a watcher that falls behind, before it loses some.
const KEPT: usize = 1024;

/// One stored event, as a watcher sees it.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// The node's source name (`[[source]] name`).
    pub source: String,
    pub type_: String,
    pub subject: String,
    /// The envelope as stored: CloudEvents JSON, redacted.
    pub envelope: Bytes,
}

/// Which events a watcher wants; an empty filter takes everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub source: Option<String>,
    pub type_: Option<String>,
    /// A NATS subject pattern (`*` one token, `>` the rest).
    pub subject: Option<String>,
}

impl Filter {
    pub fn matches(&self, t: &Tapped) -> bool {
        self.source.as_ref().is_none_or(|s| *s == t.source)
            && self.type_.as_ref().is_none_or(|s| *s == t.type_)
            && self
                .subject
                .as_ref()
                .is_none_or(|p| crate::envelope::subject_matches(p, &t.subject))
    }
}

pub struct Tap {
    tx: broadcast::Sender<Arc<Tapped>>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(KEPT).0,
        }
    }
}

impl Tap {
    /// Whether anyone watches (ingest copies events only then).
    pub fn is_watched(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Hands stored events to the watchers; never waits.
    pub fn send(&self, events: impl IntoIterator<Item = Tapped>) {
        for e in events {
            let _ = self.tx.send(Arc::new(e));
        }
    }

    pub fn watch(&self) -> broadcast::Receiver<Arc<Tapped>> {
        self.tx.subscribe()
    }
}

//! The integration tests: one binary (each extra file under `tests/` would
//! link the whole crate again), one module per area, the harness in
//! `support/`. Every test drives real sockets against real nats-server
//! processes.

mod support;

mod admin;
mod cellular;
mod cli;
mod contracts;
mod crash;
mod dedupe;
mod dup_window;
mod durability;
mod egress;
mod encryption;
mod failover;
mod filter_redact;
mod fleet;
mod forward;
mod ingress;
mod local_ingest;
mod metrics;
mod nats_security;
mod partition;
mod poison;
mod redaction;
mod reload;
mod senders;
mod service;
mod slow_link;
mod status_page;
mod tap;
mod tls;

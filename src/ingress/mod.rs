//! Events in: HTTP webhooks and CloudEvents.

pub mod verify;

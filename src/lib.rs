//! jetedge: an edge event mesh node. See ARCHITECTURE.md for the map.

pub mod config;
pub mod envelope;
pub mod ingress;
pub mod pipeline;
pub mod store;

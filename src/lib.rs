//! Roundhouse: a WAMP v2 router whose dealer routes calls through sharded, wait-free snapshots.
//!
//! The route of one CALL reads top to bottom through the modules: [`transport`] (frames) →
//! [`session`] (decode, state machine) → [`dealer`] (registry lookup, invocation rule) → the
//! callee session's queue and writer. [`wire`] owns messages and serializers, [`router`] the
//! listener and shutdown. [`client`] is a small WAMP client used by the tests and the load
//! generator.

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod dealer;
pub mod error;
pub mod meta;
pub mod metrics;
pub mod realm;
pub mod reload;
pub mod router;
pub mod session;
mod sync;
pub mod transport;
pub mod wire;
pub mod workers;

pub use config::{RealmConfig, RouterConfig};
pub use router::{Census, Router, RouterHandle};

//! WhatsApp Cloud API: the client that sends messages ([`client`]), Meta's
//! error codes and what each means for the router ([`error`]), the pacing of
//! sends ([`limiter`]), and a local simulator of the API for tests and demos
//! ([`sandbox`]).

pub mod client;
pub mod error;
pub mod graph;
pub mod limiter;
pub mod sandbox;

pub use client::{CloudClient, Content, OutboundMessage, SendError, Sent};
pub use error::{classify, ErrorClass, MetaError};
pub use limiter::Limiter;
pub use sandbox::{Sandbox, SandboxConfig, SandboxTemplate};

//! `handoff` routes inbound sales leads into WhatsApp without losing context.
//!
//! The routing language lives in [`dsl`] (parse and check), [`engine`]
//! (compile and evaluate) and [`render`] (templates); [`ruleset`] loads a
//! rules directory from disk; [`cli`] holds the commands.

pub mod backoff;
pub mod cli;
pub mod config;
pub mod diff;
pub mod dsl;
pub mod engine;
pub mod generate;
pub mod history;
pub mod intake;
pub mod notify;
pub mod pipeline;
pub mod queues;
pub mod render;
pub mod ruleset;
pub mod server;
pub mod store;
pub mod suite;
pub mod whatsapp;

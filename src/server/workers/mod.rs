//! The service's background workers, each woken when there is work and on
//! a timer: webhook events into leads ([`webhooks`]), the outbox to WhatsApp
//! and endpoints ([`delivery`]), and queues giving out and escalating
//! threads ([`queues`]).

pub mod delivery;
pub mod queues;
pub mod webhooks;

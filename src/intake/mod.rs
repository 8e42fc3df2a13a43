//! Intake: every channel's payload turned into normalized events and mapped
//! leads, and the signature checks that come before anything is stored.
//! Pure functions only: no I/O, no clock, no database, no logging.
//!
//! - [`signature`]: `X-Hub-Signature-256` and form HMACs, with secret rotation.
//! - [`parse_meta_webhook`] and the per-product readers: WhatsApp messages,
//!   statuses and marketing preferences, Instagram DMs, lead ads IDs, as
//!   [`InboundEvent`]s with their dedup key ([`InboundEvent::source_id`]);
//!   every message kind, media and attachments included, with a readable
//!   transcript line ([`WhatsappMessage::transcript_line`]).
//! - [`map_leadgen_lead`], [`map_form_json_body`], [`map_form_json`],
//!   [`map_form_pairs`]: answers mapped onto a [`MappedLead`] by a
//!   configurable [`FieldMapping`]; answers with no target kept in the order
//!   asked.
//! - [`parse_call_report`]: a voice agent's call report (our own shape).
//! - [`normalize_phone`], [`wa_id_to_e164`]: typed numbers to E.164;
//!   WhatsApp IDs kept as Meta gives them.

mod error;
mod event;
mod form;
mod instagram;
mod json;
mod leadgen;
mod line;
mod mapping;
mod meta;
pub mod phone;
pub mod signature;
mod voice;
mod whatsapp;

pub use error::{IntakeError, IntakeErrorKind};
pub use event::{
    AdReferral, Channel, DeliveryStatus, InboundEvent, InstagramMessage, LeadgenRef, MetaError,
    WhatsappMessage, WhatsappStatus, WhatsappUserPreference,
};
pub use form::{map_form_json, map_form_json_body, map_form_pairs};
pub use leadgen::map_leadgen_lead;
pub use mapping::{
    canonical_field_name, ConsentRecord, FieldMapping, MappedLead, MappingError, Target,
};
pub use meta::{
    parse_instagram_webhook, parse_meta_webhook, parse_meta_webhook_lenient, parse_page_webhook,
    parse_whatsapp_webhook, MetaObject, ParsedWebhook,
};
pub use phone::{normalize_phone, wa_id_to_e164, PhoneError};
pub use signature::{
    sign, verify_hmac_sha256, verify_meta_signature, SignatureError, META_SIGNATURE_HEADER,
};
pub use voice::{parse_call_report, CallLine, CallReport, Extracted, OptIn, Speaker, VoiceLead};

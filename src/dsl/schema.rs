//! What a playbook declares, resolved: its fields, intents, timezone and
//! hours, and the built-in paths every playbook has. The checker builds it;
//! the engine and the template checks read it.

use super::ast::{Day, FieldType};
use chrono::{Datelike, NaiveDateTime, Timelike};
use chrono_tz::Tz;

/// The channels a lead can come in by.
pub const CHANNELS: [&str; 6] = [
    "instagram",
    "web_form",
    "lead_ad",
    "voice",
    "whatsapp",
    "api",
];

/// A path built into every playbook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    Intent,
    Channel,
    LeadName,
    LeadFirstName,
    LeadPhone,
    LeadEmail,
    LeadLanguage,
    ConsentWhatsapp,
    WindowOpen,
    ThreadHuman,
    BusinessHours,
    Qualified,
    Tags,
    ThreadOpen,
    ThreadOpened,
    ThreadClosed,
    Event,
    ConsentMarketing,
    MessageText,
}

/// What a decision can be about: the values of `event`.
pub const EVENTS: [&str; 2] = ["lead", "message"];

impl Builtin {
    /// Every built-in, in the order of the language reference.
    pub const ALL: [Builtin; 19] = [
        Builtin::Intent,
        Builtin::Channel,
        Builtin::LeadName,
        Builtin::LeadFirstName,
        Builtin::LeadPhone,
        Builtin::LeadEmail,
        Builtin::LeadLanguage,
        Builtin::ConsentWhatsapp,
        Builtin::WindowOpen,
        Builtin::ThreadHuman,
        Builtin::BusinessHours,
        Builtin::Qualified,
        Builtin::Tags,
        Builtin::ThreadOpen,
        Builtin::ThreadOpened,
        Builtin::ThreadClosed,
        Builtin::Event,
        Builtin::ConsentMarketing,
        Builtin::MessageText,
    ];

    /// The path as written in rules.
    pub fn path(self) -> &'static str {
        match self {
            Builtin::Intent => "intent",
            Builtin::Channel => "channel",
            Builtin::LeadName => "lead.name",
            Builtin::LeadFirstName => "lead.first_name",
            Builtin::LeadPhone => "lead.phone",
            Builtin::LeadEmail => "lead.email",
            Builtin::LeadLanguage => "lead.language",
            Builtin::ConsentWhatsapp => "consent.whatsapp",
            Builtin::WindowOpen => "window.open",
            Builtin::ThreadHuman => "thread.human",
            Builtin::BusinessHours => "business_hours",
            Builtin::Qualified => "qualified",
            Builtin::Tags => "tags",
            Builtin::ThreadOpen => "thread.open",
            Builtin::ThreadOpened => "thread.opened",
            Builtin::ThreadClosed => "thread.closed",
            Builtin::Event => "event",
            Builtin::ConsentMarketing => "consent.marketing",
            Builtin::MessageText => "message.text",
        }
    }

    /// The built-in's type.
    pub fn ty(self) -> FieldType {
        match self {
            Builtin::Intent
            | Builtin::LeadName
            | Builtin::LeadFirstName
            | Builtin::LeadPhone
            | Builtin::LeadEmail
            | Builtin::LeadLanguage
            | Builtin::MessageText => FieldType::Text,
            Builtin::Event => FieldType::OneOf(
                EVENTS
                    .iter()
                    .map(|c| super::span::Spanned::new(c.to_string(), Default::default()))
                    .collect(),
            ),
            Builtin::ThreadOpened | Builtin::ThreadClosed => FieldType::DateTime,
            Builtin::Channel => FieldType::OneOf(
                CHANNELS
                    .iter()
                    .map(|c| super::span::Spanned::new(c.to_string(), Default::default()))
                    .collect(),
            ),
            Builtin::ConsentWhatsapp
            | Builtin::WindowOpen
            | Builtin::ThreadHuman
            | Builtin::BusinessHours
            | Builtin::Qualified
            | Builtin::ThreadOpen
            | Builtin::ConsentMarketing => FieldType::Bool,
            Builtin::Tags => FieldType::TextList,
        }
    }

    /// Whether the built-in always has a value (state, not lead data).
    pub fn always_set(self) -> bool {
        matches!(
            self,
            Builtin::ConsentWhatsapp
                | Builtin::WindowOpen
                | Builtin::ThreadHuman
                | Builtin::BusinessHours
                | Builtin::Qualified
                | Builtin::Tags
                | Builtin::ThreadOpen
                | Builtin::Event
                | Builtin::ConsentMarketing
        )
    }

    /// The built-in written as `path`, if any.
    pub fn from_path(path: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.path() == path)
    }
}

/// Names a field may not take: built-ins, the roots of dotted built-ins, and
/// the names every template context already has.
pub const RESERVED_FIELD_NAMES: [&str; 14] = [
    "intent",
    "event",
    "answers",
    "channel",
    "business_hours",
    "qualified",
    "tags",
    "lead",
    "consent",
    "window",
    "thread",
    "playbook",
    "transcript",
    "now",
];

/// Where a path's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PathRef {
    Builtin(Builtin),
    /// Index into [`Schema::fields`].
    Field(usize),
}

/// A declared qualification field.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldInfo {
    pub name: String,
    pub ty: FieldType,
    pub required: bool,
}

/// Business hours, per day of the week: minutes-after-midnight spans.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hours {
    pub days: [Vec<(u32, u32)>; 7],
}

impl Hours {
    /// Whether a local time falls within the hours.
    pub fn contains(&self, local: NaiveDateTime) -> bool {
        let day = local.weekday().num_days_from_monday() as usize;
        let minute = local.hour() * 60 + local.minute();
        self.days[day]
            .iter()
            .any(|&(open, close)| minute >= open && minute < close)
    }

    /// Adds `open..close` on `day`.
    pub fn add(&mut self, day: Day, open: u32, close: u32) {
        self.days[day.index()].push((open, close));
    }
}

/// A playbook's declarations, resolved.
#[derive(Clone, Debug)]
pub struct Schema {
    pub name: String,
    pub fields: Vec<FieldInfo>,
    /// Declared intents, lowercased; `None` when the playbook declares none.
    pub intents: Option<Vec<String>>,
    pub timezone: Tz,
    /// `None` when the playbook gives no hours: then every moment is business hours.
    pub hours: Option<Hours>,
    pub sender: Option<String>,
    /// `idle <N> days`: an open thread with no message for N days closes.
    pub idle_days: u32,
}

/// `idle` when a playbook does not say.
pub const DEFAULT_IDLE_DAYS: u32 = 30;

impl Schema {
    /// Resolves a path as written.
    pub fn resolve(&self, path: &str) -> Option<PathRef> {
        if let Some(b) = Builtin::from_path(path) {
            return Some(PathRef::Builtin(b));
        }
        self.field_index(path).map(PathRef::Field)
    }

    /// The index of a declared field.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The type of a resolved path.
    pub fn type_of(&self, path: PathRef) -> FieldType {
        match path {
            PathRef::Builtin(b) => b.ty(),
            PathRef::Field(i) => self.fields[i].ty.clone(),
        }
    }

    /// Every path a rule may name, for suggestions.
    pub fn known_paths(&self) -> Vec<&str> {
        let mut paths: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        paths.extend(Builtin::ALL.iter().map(|b| b.path()));
        paths
    }
}

/// Text as compared by `==`, `in` and `contains`: trimmed and lowercased.
pub fn normalize_text(text: &str) -> String {
    let trimmed = text.trim();
    if trimmed
        .bytes()
        .all(|b| !b.is_ascii_uppercase() && b.is_ascii())
    {
        trimmed.to_string()
    } else {
        trimmed.to_lowercase()
    }
}

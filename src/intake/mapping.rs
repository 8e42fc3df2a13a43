//! Turning a form's answers (lead ads, web forms) into a lead: the
//! configurable mapping from a source's field names to lead attributes and
//! playbook fields, and the mapped lead it produces.

use super::event::Channel;
use super::line::value_text;
use super::phone::{normalize_phone, PhoneError};
use crate::engine::lead::{Consent, Lead};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where one source field's answer goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// The lead's full name.
    Name,
    /// The lead's first name.
    FirstName,
    /// A last name, joined to the first name when no full name is given.
    LastName,
    Email,
    /// The phone number as typed; see [`MappedLead::into_lead`] for E.164.
    Phone,
    /// The lead's intent, as the playbook names intents.
    Intent,
    /// The lead's language (e.g. `en`, `hi`).
    Language,
    /// A yes/no answer that records or refuses a WhatsApp opt-in.
    ConsentWhatsapp,
    /// A playbook qualification field (`field:city`).
    Field(String),
    /// Dropped on purpose (for example to switch a default off).
    Ignore,
}

const TARGET_HELP: &str = "use name, first_name, last_name, email, phone, intent, language, \
                           consent:whatsapp, ignore or field:<playbook_field>";

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Target, String> {
        let text = text.trim();
        Ok(match text {
            "name" => Target::Name,
            "first_name" => Target::FirstName,
            "last_name" => Target::LastName,
            "email" => Target::Email,
            "phone" => Target::Phone,
            "intent" => Target::Intent,
            "language" => Target::Language,
            "consent:whatsapp" => Target::ConsentWhatsapp,
            "ignore" => Target::Ignore,
            _ => match text.strip_prefix("field:") {
                Some(field) if is_playbook_field_name(field) => Target::Field(field.to_string()),
                Some(field) => {
                    return Err(format!(
                        "`{field}` is not a playbook field name; use lowercase letters, digits \
                         and `_`, starting with a letter"
                    ))
                }
                None => return Err(format!("unknown target `{text}`; {TARGET_HELP}")),
            },
        })
    }
}

impl TryFrom<String> for Target {
    type Error = String;

    fn try_from(text: String) -> Result<Target, String> {
        text.parse()
    }
}

impl From<Target> for String {
    fn from(target: Target) -> String {
        target.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name => f.write_str("name"),
            Target::FirstName => f.write_str("first_name"),
            Target::LastName => f.write_str("last_name"),
            Target::Email => f.write_str("email"),
            Target::Phone => f.write_str("phone"),
            Target::Intent => f.write_str("intent"),
            Target::Language => f.write_str("language"),
            Target::ConsentWhatsapp => f.write_str("consent:whatsapp"),
            Target::Field(field) => write!(f, "field:{field}"),
            Target::Ignore => f.write_str("ignore"),
        }
    }
}

/// Playbook field names as the rules grammar spells them: `[a-z][a-z0-9_]*`.
pub(crate) fn is_playbook_field_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A source field name reduced to what people mean by it: lowercase, runs of
/// anything but letters and digits turned into one `_`. So `Full Name`,
/// `full-name` and `full_name` are one field, and Meta's
/// `which_city_is_your_event_in?` is `which_city_is_your_event_in`.
pub fn canonical_field_name(name: &str) -> String {
    let mut canonical = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars() {
        if c.is_alphanumeric() {
            if gap && !canonical.is_empty() {
                canonical.push('_');
            }
            gap = false;
            canonical.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    canonical
}

/// A configuration error in a field mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    /// The source field whose target is wrong.
    pub source_field: String,
    pub message: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "field mapping for `{}`: {}",
            self.source_field, self.message
        )
    }
}

impl std::error::Error for MappingError {}

/// How a source's field names (a lead ads form, a web form) map onto the
/// lead: source field name -> [`Target`]. Names are matched after
/// [`canonical_field_name`]. The default maps `full_name`/`name`,
/// `first_name`, `last_name`, `email` and `phone_number`/`phone`; fields with
/// no target land in [`MappedLead::unmapped`].
///
/// In configuration it is a map of strings, layered over the defaults:
/// `{"which_city_is_your_event_in?": "field:city", "whatsapp_updates": "consent:whatsapp"}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct FieldMapping {
    targets: BTreeMap<String, Target>,
}

impl Default for FieldMapping {
    fn default() -> FieldMapping {
        FieldMapping::empty()
            .with("full_name", Target::Name)
            .with("name", Target::Name)
            .with("first_name", Target::FirstName)
            .with("last_name", Target::LastName)
            .with("email", Target::Email)
            .with("phone_number", Target::Phone)
            .with("phone", Target::Phone)
    }
}

impl FieldMapping {
    /// A mapping with no entries, not even the defaults.
    pub fn empty() -> FieldMapping {
        FieldMapping {
            targets: BTreeMap::new(),
        }
    }

    /// This mapping with `source_field` sent to `target` (replacing any
    /// earlier target for it).
    pub fn with(mut self, source_field: &str, target: Target) -> FieldMapping {
        self.insert(source_field, target);
        self
    }

    /// Sends `source_field` to `target`.
    pub fn insert(&mut self, source_field: &str, target: Target) {
        self.targets
            .insert(canonical_field_name(source_field), target);
    }

    /// The defaults overridden by `pairs` of (source field, target text).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<FieldMapping, MappingError> {
        let mut mapping = FieldMapping::default();
        for (source_field, target) in pairs {
            let target = target.parse().map_err(|message| MappingError {
                source_field: source_field.to_string(),
                message,
            })?;
            mapping.insert(source_field, target);
        }
        Ok(mapping)
    }

    /// Where `source_field`'s answer goes, if anywhere.
    pub fn target(&self, source_field: &str) -> Option<&Target> {
        self.targets.get(&canonical_field_name(source_field))
    }
}

impl TryFrom<BTreeMap<String, String>> for FieldMapping {
    type Error = MappingError;

    fn try_from(pairs: BTreeMap<String, String>) -> Result<FieldMapping, MappingError> {
        FieldMapping::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// A recorded yes or no to WhatsApp messages, with the evidence for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    /// `true` for an opt-in, `false` for a refusal.
    pub whatsapp: bool,
    /// Where it was given: "lead ad field `whatsapp_updates`", "voice call `c-1`".
    pub source: String,
    /// What the person answered or said, verbatim.
    pub evidence: String,
    /// When it was given, when the source says.
    pub at: Option<DateTime<Utc>>,
}

/// A lead read from a form or a call: plain data, before identity
/// resolution. `phone` is as typed; [`MappedLead::into_lead`] normalizes it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MappedLead {
    pub name: Option<String>,
    pub first_name: Option<String>,
    pub email: Option<String>,
    /// The phone number exactly as the person typed it (trimmed).
    pub phone: Option<String>,
    pub intent: Option<String>,
    pub language: Option<String>,
    /// Playbook qualification fields, by playbook field name.
    pub fields: Map<String, Value>,
    /// Answers the mapping has no target for, in the order the source asked
    /// them: (question as the source named it, answer as text, several
    /// values joined with `, `). Blank answers are left out; when a question
    /// comes twice, its first answer is kept.
    pub unmapped: Vec<(String, String)>,
    /// The WhatsApp opt-in (or refusal) the source recorded, if any.
    pub consent: Option<ConsentRecord>,
}

impl MappedLead {
    /// The phone in E.164, if there is one; `default_region` (ISO 3166, like
    /// `IN`) reads numbers typed without a country code.
    pub fn phone_e164(&self, default_region: &str) -> Option<Result<String, PhoneError>> {
        self.phone
            .as_deref()
            .map(|phone| normalize_phone(phone, default_region))
    }

    /// The lead as the engine decides it. The phone is put in E.164; when it
    /// cannot be, it is kept as typed (nothing the person gave is lost) and
    /// the reason is returned beside the lead for the caller to surface.
    /// A WhatsApp opt-in counts only when the source recorded a yes.
    pub fn into_lead(self, channel: Channel, default_region: &str) -> (Lead, Option<PhoneError>) {
        let (phone, problem) = match self.phone_e164(default_region) {
            Some(Ok(e164)) => (Some(e164), None),
            Some(Err(error)) => (self.phone.clone(), Some(error)),
            None => (None, None),
        };
        let lead = Lead {
            name: self.name,
            first_name: self.first_name,
            phone,
            email: self.email,
            language: self.language,
            channel: Some(channel.as_str().to_string()),
            intent: self.intent,
            consent: Consent {
                whatsapp: self.consent.as_ref().is_some_and(|c| c.whatsapp),
            },
            fields: self.fields,
            ..Lead::default()
        };
        (lead, problem)
    }
}

/// Maps answers — (source field name, its values) in source order — onto a
/// lead. `origin` names the source in consent records ("lead ad", "web form").
/// The first non-empty answer for a target wins, except that a "no" to
/// WhatsApp overrides an earlier "yes": when a form says both, do not message.
pub(crate) fn apply_mapping(
    answers: impl IntoIterator<Item = (String, Vec<Value>)>,
    mapping: &FieldMapping,
    origin: &str,
) -> MappedLead {
    let mut lead = MappedLead::default();
    let mut last_name = None;
    for (source_field, values) in answers {
        let values: Vec<Value> = values.into_iter().filter_map(cleaned).collect();
        if values.is_empty() {
            continue;
        }
        let slot = match mapping.target(&source_field) {
            Some(Target::Name) => &mut lead.name,
            Some(Target::FirstName) => &mut lead.first_name,
            Some(Target::LastName) => &mut last_name,
            Some(Target::Email) => &mut lead.email,
            Some(Target::Phone) => &mut lead.phone,
            Some(Target::Intent) => &mut lead.intent,
            Some(Target::Language) => &mut lead.language,
            Some(Target::Field(field)) => {
                if !lead.fields.contains_key(field) {
                    lead.fields.insert(field.clone(), one_or_many(values));
                }
                continue;
            }
            Some(Target::ConsentWhatsapp) => {
                let answer = values.iter().filter_map(as_text).next();
                match answer.as_deref().and_then(yes_or_no) {
                    Some(whatsapp) if lead.consent.as_ref().is_none_or(|c| c.whatsapp) => {
                        lead.consent = Some(ConsentRecord {
                            whatsapp,
                            source: format!("{origin} field `{source_field}`"),
                            evidence: format!(
                                "{source_field}: {}",
                                answer.as_deref().unwrap_or_default()
                            ),
                            at: None,
                        });
                    }
                    Some(_) => {}
                    // Neither yes nor no: not consent, but not thrown away.
                    None => keep_unmapped(&mut lead.unmapped, source_field, &values),
                }
                continue;
            }
            Some(Target::Ignore) => continue,
            None => {
                keep_unmapped(&mut lead.unmapped, source_field, &values);
                continue;
            }
        };
        if slot.is_none() {
            *slot = values.iter().filter_map(as_text).next();
        }
    }
    if lead.name.is_none() {
        let parts: Vec<&str> = [lead.first_name.as_deref(), last_name.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if !parts.is_empty() {
            lead.name = Some(parts.join(" "));
        }
    }
    lead
}

/// Keeps an answer that has no target, after any earlier ones: the order a
/// form asked its questions in is part of what the buyer said. The first
/// answer to a question wins, as for targets.
fn keep_unmapped(unmapped: &mut Vec<(String, String)>, question: String, values: &[Value]) {
    if unmapped.iter().any(|(known, _)| *known == question) {
        return;
    }
    let answers: Vec<String> = values.iter().filter_map(value_text).collect();
    if !answers.is_empty() {
        unmapped.push((question, answers.join(", ")));
    }
}

/// A value with surrounding blanks removed; `None` for null and empty text.
fn cleaned(value: Value) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::String(text) => {
            let trimmed = text.trim();
            if trimmed.is_empty() {
                None
            } else if trimmed.len() == text.len() {
                Some(Value::String(text))
            } else {
                Some(Value::String(trimmed.to_string()))
            }
        }
        other => Some(other),
    }
}

fn one_or_many(mut values: Vec<Value>) -> Value {
    if values.len() == 1 {
        values.swap_remove(0)
    } else {
        Value::Array(values)
    }
}

/// A scalar as text (a phone sent as a JSON number is still a phone).
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Reads an answer as yes or no by its first word, in the languages of the
/// router's markets: "Yes, send me updates" is yes, "No thanks" is no,
/// "Maybe" is neither.
pub(crate) fn yes_or_no(answer: &str) -> Option<bool> {
    const YES: [&str; 17] = [
        "yes",
        "y",
        "true",
        "1",
        "on",
        "checked",
        "agree",
        "agreed",
        "ok",
        "okay",
        "si",
        "sí",
        "sim",
        "oui",
        "ja",
        "نعم",
        "हाँ",
    ];
    const NO: [&str; 12] = [
        "no",
        "n",
        "false",
        "0",
        "off",
        "unchecked",
        "nao",
        "não",
        "non",
        "nein",
        "لا",
        "नहीं",
    ];
    let first = answer
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '-' | '/'))
        .find(|word| !word.is_empty())?
        .to_lowercase();
    if YES.contains(&first.as_str()) || first == "हां" {
        Some(true)
    } else if NO.contains(&first.as_str()) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answers(pairs: &[(&str, Value)]) -> Vec<(String, Vec<Value>)> {
        pairs
            .iter()
            .map(|(name, value)| {
                let values = match value {
                    Value::Array(values) => values.clone(),
                    other => vec![other.clone()],
                };
                (name.to_string(), values)
            })
            .collect()
    }

    #[test]
    fn targets_parse_and_print_back() {
        for text in [
            "name",
            "first_name",
            "last_name",
            "email",
            "phone",
            "intent",
            "language",
            "consent:whatsapp",
            "ignore",
            "field:event_date",
        ] {
            assert_eq!(text.parse::<Target>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_targets_say_what_is_allowed() {
        assert_eq!(
            "mobile".parse::<Target>().unwrap_err(),
            format!("unknown target `mobile`; {TARGET_HELP}")
        );
        assert!("field:City"
            .parse::<Target>()
            .unwrap_err()
            .starts_with("`City` is not a playbook field name"));
        assert!("field:".parse::<Target>().is_err());
        let error = FieldMapping::from_pairs([("city", "field:1city")]).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("field mapping for `city`: `1city` is not a playbook field name"));
    }

    #[test]
    fn field_names_match_whatever_their_spelling() {
        assert_eq!(
            canonical_field_name("Which city is your event in?"),
            "which_city_is_your_event_in"
        );
        assert_eq!(canonical_field_name("  E-mail "), "e_mail");
        assert_eq!(canonical_field_name("Full_Name"), "full_name");
        let mapping = FieldMapping::default();
        assert_eq!(mapping.target("Full Name"), Some(&Target::Name));
        assert_eq!(mapping.target("PHONE-NUMBER"), Some(&Target::Phone));
        assert_eq!(mapping.target("city"), None);
    }

    #[test]
    fn mappings_deserialize_over_the_defaults() {
        let mapping: FieldMapping = serde_json::from_value(json!({
            "which_city_is_your_event_in?": "field:city",
            "email": "ignore"
        }))
        .unwrap();
        assert_eq!(
            mapping.target("which_city_is_your_event_in?"),
            Some(&Target::Field("city".into()))
        );
        assert_eq!(mapping.target("email"), Some(&Target::Ignore));
        assert_eq!(mapping.target("full_name"), Some(&Target::Name));
        let error = serde_json::from_value::<FieldMapping>(json!({"x": "nope"})).unwrap_err();
        assert!(error
            .to_string()
            .contains("field mapping for `x`: unknown target `nope`"));
    }

    #[test]
    fn first_answer_wins_and_unmapped_answers_are_kept() {
        let lead = apply_mapping(
            answers(&[
                ("full_name", json!(" Aisha Khan ")),
                ("name", json!("Someone Else")),
                ("email", json!("")),
                ("Email", json!("aisha@example.com")),
                ("guests", json!(120)),
                ("interests", json!(["goa", "jaipur"])),
            ]),
            &FieldMapping::default().with("guests", Target::Field("guests".into())),
            "web form",
        );
        assert_eq!(lead.name.as_deref(), Some("Aisha Khan"));
        assert_eq!(lead.email.as_deref(), Some("aisha@example.com"));
        assert_eq!(lead.fields["guests"], json!(120));
        assert_eq!(lead.unmapped, [("interests".into(), "goa, jaipur".into())]);
        assert_eq!(lead.consent, None);
    }

    #[test]
    fn unmapped_answers_keep_the_order_asked_and_the_first_answer() {
        let lead = apply_mapping(
            answers(&[
                ("Which city is your event in?", json!("Udaipur")),
                ("full_name", json!("Aisha Khan")),
                ("Guests", json!(120)),
                ("Services", json!(["decor", " ", "catering"])),
                ("Anything else?", json!("  ")),
                ("Budget (INR)", json!("25 lakh")),
                ("Which city is your event in?", json!("Jaipur")),
            ]),
            &FieldMapping::default(),
            "lead ad",
        );
        assert_eq!(
            lead.unmapped,
            [
                ("Which city is your event in?".into(), "Udaipur".into()),
                ("Guests".into(), "120".into()),
                ("Services".into(), "decor, catering".into()),
                ("Budget (INR)".into(), "25 lakh".into()),
            ]
        );
    }

    #[test]
    fn first_and_last_names_make_a_name_when_there_is_none() {
        let lead = apply_mapping(
            answers(&[
                ("first_name", json!("Rahul")),
                ("last_name", json!("Verma")),
            ]),
            &FieldMapping::default(),
            "lead ad",
        );
        assert_eq!(lead.name.as_deref(), Some("Rahul Verma"));
        assert_eq!(lead.first_name.as_deref(), Some("Rahul"));
    }

    #[test]
    fn consent_answers_are_read_as_yes_or_no_and_a_no_wins() {
        let mapping = FieldMapping::default()
            .with("whatsapp_updates", Target::ConsentWhatsapp)
            .with("whatsapp_ok", Target::ConsentWhatsapp);
        let lead = apply_mapping(
            answers(&[("whatsapp_updates", json!("Yes, send me updates"))]),
            &mapping,
            "web form",
        );
        assert_eq!(
            lead.consent,
            Some(ConsentRecord {
                whatsapp: true,
                source: "web form field `whatsapp_updates`".into(),
                evidence: "whatsapp_updates: Yes, send me updates".into(),
                at: None,
            })
        );
        let lead = apply_mapping(
            answers(&[
                ("whatsapp_updates", json!("yes")),
                ("whatsapp_ok", json!(false)),
            ]),
            &mapping,
            "web form",
        );
        assert_eq!(lead.consent.map(|c| c.whatsapp), Some(false));
        let lead = apply_mapping(
            answers(&[("whatsapp_updates", json!("Maybe later"))]),
            &mapping,
            "web form",
        );
        assert_eq!(lead.consent, None);
        assert_eq!(
            lead.unmapped,
            [("whatsapp_updates".into(), "Maybe later".into())]
        );
    }

    #[test]
    fn yes_and_no_in_the_markets_languages() {
        for yes in [
            "Yes",
            "y",
            "1",
            "true",
            "Sí",
            "sim",
            "Oui",
            "نعم",
            "हाँ",
            "OK!",
        ] {
            assert_eq!(yes_or_no(yes), Some(true), "{yes}");
        }
        for no in ["No thanks", "0", "false", "não", "Nein", "لا", "नहीं"] {
            assert_eq!(yes_or_no(no), Some(false), "{no}");
        }
        for neither in ["", "maybe", "yesterday", "nobody"] {
            assert_eq!(yes_or_no(neither), None, "{neither}");
        }
    }

    #[test]
    fn into_lead_normalizes_the_phone_and_counts_only_a_yes() {
        let mut mapped = MappedLead {
            name: Some("Rahul Verma".into()),
            phone: Some("09876543210".into()),
            consent: Some(ConsentRecord {
                whatsapp: true,
                source: "lead ad field `whatsapp_updates`".into(),
                evidence: "whatsapp_updates: Yes".into(),
                at: None,
            }),
            ..MappedLead::default()
        };
        mapped.fields.insert("city".into(), json!("Jaipur"));
        let (lead, problem) = mapped.clone().into_lead(Channel::LeadAd, "IN");
        assert_eq!(problem, None);
        assert_eq!(lead.phone.as_deref(), Some("+919876543210"));
        assert_eq!(lead.channel.as_deref(), Some("lead_ad"));
        assert!(lead.consent.whatsapp);
        assert_eq!(lead.fields["city"], json!("Jaipur"));

        mapped.phone = Some("98765".into());
        mapped.consent = None;
        let (lead, problem) = mapped.into_lead(Channel::WebForm, "IN");
        assert!(problem.is_some());
        assert_eq!(lead.phone.as_deref(), Some("98765"), "kept as typed");
        assert!(!lead.consent.whatsapp);
    }
}

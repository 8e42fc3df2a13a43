//! Voice agents' call reports: our own documented JSON shape, read strictly
//! (unknown members are errors, so a vendor's typo is caught at integration,
//! not discovered as a lost field), into a lead, its transcript and the
//! WhatsApp opt-in the caller gave on the call.
//!
//! ```json
//! {
//!   "call_id": "call-7f3a",
//!   "from": "+91 98145 67890",
//!   "started_at": "2027-01-10T04:10:00Z",
//!   "ended_at": "2027-01-10T04:14:30Z",
//!   "language": "en",
//!   "transcript": [
//!     {"speaker": "agent", "text": "May we send the options on WhatsApp?", "at": "2027-01-10T04:13:50Z"},
//!     {"speaker": "caller", "text": "Yes, WhatsApp is best.", "at": "2027-01-10T04:13:55Z"}
//!   ],
//!   "extracted": {"name": "Gurpreet Kaur", "intent": "event_enquiry", "city": "Amritsar", "guests": 800},
//!   "opt_in": {"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "Yes, WhatsApp is best."}
//! }
//! ```
//!
//! `ended_at`, `language`, `transcript`, `extracted` and `opt_in` may be left
//! out. In `extracted`, `name`, `first_name`, `email` and `intent` are the
//! lead's; every other member is a playbook field. An opt-in (`whatsapp:
//! true`) needs `spoken_at` and `evidence`, and the evidence must be one of
//! the caller's transcript lines, verbatim: it is the consent record.

use super::error::{IntakeError, IntakeErrorKind};
use super::event::Channel;
use super::json::without_position;
use super::mapping::{is_playbook_field_name, ConsentRecord, MappedLead};
use super::phone::PhoneError;
use crate::engine::lead::{Lead, TranscriptMessage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const SHAPE_HELP: &str = "see the call report shape documented in src/intake/voice.rs";

/// A voice agent's report of one call, read strictly: unknown members are
/// refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallReport {
    /// The voice platform's ID for the call; reports are deduplicated on it.
    #[schema(min_length = 1)]
    pub call_id: String,
    /// The caller's number as the platform has it.
    #[schema(min_length = 1)]
    pub from: String,
    #[serde(deserialize_with = "time::required")]
    pub started_at: DateTime<Utc>,
    /// Not before `started_at`.
    #[serde(
        default,
        deserialize_with = "time::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default)]
    pub transcript: Vec<CallLine>,
    #[serde(default)]
    pub extracted: Extracted,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opt_in: Option<OptIn>,
}

/// One line of the call's transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallLine {
    pub speaker: Speaker,
    pub text: String,
    #[serde(deserialize_with = "time::required")]
    pub at: DateTime<Utc>,
}

/// Who said a transcript line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Agent,
    Caller,
}

/// What the voice agent understood. `name`, `first_name`, `email` and
/// `intent` are the lead's; every other member is a playbook field, named
/// as playbooks name fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Extracted {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    /// Playbook qualification fields, by playbook field name.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// The caller's answer to being messaged on WhatsApp. An opt-in
/// (`whatsapp: true`) needs `spoken_at` and `evidence`; `evidence`, when
/// given, must be one of the caller's transcript lines, verbatim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OptIn {
    pub whatsapp: bool,
    #[serde(
        default,
        deserialize_with = "time::optional",
        skip_serializing_if = "Option::is_none"
    )]
    pub spoken_at: Option<DateTime<Utc>>,
    /// The caller's transcript line that gave (or refused) the opt-in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

/// RFC 3339 times, with an error that shows the expected form (chrono's
/// own says only "input contains invalid characters").
mod time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer};

    pub(super) fn required<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(text.trim())
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is not an RFC 3339 time such as `2027-01-10T04:10:00Z`"
                ))
            })
    }

    pub(super) fn optional<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct Time(#[serde(deserialize_with = "required")] DateTime<Utc>);
        Ok(Option::<Time>::deserialize(deserializer)?.map(|Time(time)| time))
    }
}

/// A call report read into what the router keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiceLead {
    /// The dedup key.
    pub call_id: String,
    pub started_at: DateTime<Utc>,
    /// The lead; its `consent` is the opt-in record from the call.
    pub lead: MappedLead,
    /// The call, line by line, as the lead's transcript keeps it.
    pub transcript: Vec<TranscriptMessage>,
}

impl VoiceLead {
    /// The lead as the engine decides it, transcript included; see
    /// [`MappedLead::into_lead`] for the phone.
    pub fn into_lead(self, default_region: &str) -> (Lead, Option<PhoneError>) {
        let (mut lead, problem) = self.lead.into_lead(Channel::Voice, default_region);
        lead.transcript = self.transcript;
        (lead, problem)
    }
}

/// Reads a call report body (see the module documentation for the shape).
pub fn parse_call_report(body: &[u8]) -> Result<VoiceLead, IntakeError> {
    let report: CallReport = serde_json::from_slice(body).map_err(|error| {
        let kind = if error.is_syntax() || error.is_eof() {
            IntakeErrorKind::NotJson
        } else if error.to_string().starts_with("unknown field") {
            IntakeErrorKind::UnknownField
        } else if error.to_string().starts_with("missing field") {
            IntakeErrorKind::Missing
        } else {
            IntakeErrorKind::InvalidValue
        };
        IntakeError::new(
            kind,
            format!("line {}, column {}", error.line(), error.column()),
            without_values(&without_position(&error)),
        )
        .with_help(SHAPE_HELP)
    })?;
    check(&report)?;
    Ok(into_voice_lead(report))
}

/// serde's "invalid type: string \"...\", expected ..." quotes the value,
/// which may be a transcript line or a phone number; errors get logged, so
/// keep only the value's kind.
fn without_values(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead) {
            if let Some(cut) = rest.rfind(", expected") {
                let kind = rest[..cut]
                    .split([' ', '`', '"'])
                    .next()
                    .unwrap_or_default();
                return format!("{lead}{kind}{}", &rest[cut..]);
            }
        }
    }
    message.to_string()
}

fn invalid(at: &str, message: impl Into<String>, help: &str) -> IntakeError {
    IntakeError::new(IntakeErrorKind::InvalidValue, at, message).with_help(help)
}

fn check(report: &CallReport) -> Result<(), IntakeError> {
    if report.call_id.trim().is_empty() {
        return Err(invalid(
            "call_id",
            "empty",
            "send the voice platform's call ID",
        ));
    }
    if report.from.trim().is_empty() {
        return Err(invalid("from", "empty", "send the caller's number"));
    }
    if report
        .ended_at
        .is_some_and(|ended| ended < report.started_at)
    {
        return Err(invalid(
            "ended_at",
            "before `started_at`",
            "send both times in UTC (RFC 3339)",
        ));
    }
    for name in report.extracted.fields.keys() {
        if !is_playbook_field_name(name) {
            return Err(invalid(
                "extracted",
                format!("`{name}` is not a playbook field name"),
                "name extracted fields as the playbook does: lowercase letters, digits and `_`",
            ));
        }
    }
    if let Some(opt_in) = &report.opt_in {
        if opt_in.whatsapp && opt_in.spoken_at.is_none() {
            return Err(invalid(
                "opt_in",
                "missing `spoken_at`, which an opt-in needs",
                "send when the caller agreed",
            ));
        }
        match opt_in.evidence.as_deref().map(str::trim) {
            None | Some("") if opt_in.whatsapp => {
                return Err(invalid(
                    "opt_in",
                    "missing `evidence`, which an opt-in needs",
                    "quote the caller's transcript line that agreed",
                ));
            }
            Some(evidence) if !evidence.is_empty() => {
                let said = report
                    .transcript
                    .iter()
                    .any(|line| line.speaker == Speaker::Caller && line.text.trim() == evidence);
                if !said {
                    return Err(invalid(
                        "opt_in.evidence",
                        "not one of the caller's transcript lines",
                        "quote the caller's line exactly as it appears in `transcript`",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn into_voice_lead(report: CallReport) -> VoiceLead {
    let consent = report.opt_in.and_then(|opt_in| {
        let evidence = opt_in.evidence.map(|e| e.trim().to_string())?;
        Some(ConsentRecord {
            whatsapp: opt_in.whatsapp,
            source: format!("voice call `{}`", report.call_id),
            evidence,
            at: opt_in.spoken_at,
        })
    });
    let extracted = report.extracted;
    let lead = MappedLead {
        name: extracted.name,
        first_name: extracted.first_name,
        email: extracted.email,
        phone: Some(report.from.trim().to_string()),
        intent: extracted.intent,
        language: report.language,
        fields: extracted.fields,
        unmapped: Vec::new(),
        consent,
    };
    let transcript = report
        .transcript
        .into_iter()
        .map(|line| TranscriptMessage {
            channel: Channel::Voice.as_str().to_string(),
            from: match line.speaker {
                Speaker::Caller => "lead".to_string(),
                Speaker::Agent => "agent".to_string(),
            },
            text: line.text,
            at: line.at,
        })
        .collect();
    VoiceLead {
        call_id: report.call_id,
        started_at: report.started_at,
        lead,
        transcript,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report() -> Value {
        json!({
            "call_id": "call-7f3a",
            "from": "+91 98145 67890",
            "started_at": "2027-01-10T04:10:00Z",
            "ended_at": "2027-01-10T04:14:30Z",
            "language": "en",
            "transcript": [
                {"speaker": "agent", "text": "May we send the options on WhatsApp?", "at": "2027-01-10T04:13:50Z"},
                {"speaker": "caller", "text": "Yes, WhatsApp is best.", "at": "2027-01-10T04:13:55Z"}
            ],
            "extracted": {"name": "Gurpreet Kaur", "intent": "event_enquiry", "city": "Amritsar", "guests": 800, "event_date": "2027-10-30"},
            "opt_in": {"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "Yes, WhatsApp is best."}
        })
    }

    fn parse(value: &Value) -> Result<VoiceLead, IntakeError> {
        parse_call_report(&serde_json::to_vec(value).unwrap())
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_report_becomes_a_lead_a_transcript_and_a_consent_record() {
        let voice = parse(&report()).unwrap();
        assert_eq!(voice.call_id, "call-7f3a");
        assert_eq!(voice.started_at, at("2027-01-10T04:10:00Z"));
        assert_eq!(voice.lead.name.as_deref(), Some("Gurpreet Kaur"));
        assert_eq!(voice.lead.intent.as_deref(), Some("event_enquiry"));
        assert_eq!(voice.lead.language.as_deref(), Some("en"));
        assert_eq!(voice.lead.phone.as_deref(), Some("+91 98145 67890"));
        assert_eq!(voice.lead.fields["city"], json!("Amritsar"));
        assert_eq!(voice.lead.fields["guests"], json!(800));
        assert_eq!(voice.lead.fields.len(), 3);
        assert_eq!(
            voice.lead.consent,
            Some(ConsentRecord {
                whatsapp: true,
                source: "voice call `call-7f3a`".into(),
                evidence: "Yes, WhatsApp is best.".into(),
                at: Some(at("2027-01-10T04:13:55Z")),
            })
        );
        assert_eq!(
            voice.transcript,
            vec![
                TranscriptMessage {
                    channel: "voice".into(),
                    from: "agent".into(),
                    text: "May we send the options on WhatsApp?".into(),
                    at: at("2027-01-10T04:13:50Z"),
                },
                TranscriptMessage {
                    channel: "voice".into(),
                    from: "lead".into(),
                    text: "Yes, WhatsApp is best.".into(),
                    at: at("2027-01-10T04:13:55Z"),
                },
            ]
        );
        let (lead, problem) = voice.into_lead("IN");
        assert_eq!(problem, None);
        assert_eq!(lead.phone.as_deref(), Some("+919814567890"));
        assert_eq!(lead.channel.as_deref(), Some("voice"));
        assert!(lead.consent.whatsapp);
        assert_eq!(lead.transcript.len(), 2);
    }

    #[test]
    fn the_smallest_report_is_a_call_id_a_number_and_a_time() {
        let voice = parse(
            &json!({"call_id": "c", "from": "+971501234567", "started_at": "2027-01-10T04:10:00Z"}),
        )
        .unwrap();
        assert_eq!(voice.lead.consent, None);
        assert!(voice.transcript.is_empty());
        let (lead, _) = voice.into_lead("AE");
        assert!(!lead.consent.whatsapp);
    }

    #[test]
    fn a_refusal_is_recorded_as_a_no() {
        let mut value = report();
        value["transcript"][1]["text"] = json!("No, just call me.");
        value["opt_in"] = json!({"whatsapp": false, "evidence": "No, just call me."});
        let voice = parse(&value).unwrap();
        assert_eq!(voice.lead.consent.as_ref().map(|c| c.whatsapp), Some(false));
        assert!(!voice.into_lead("IN").0.consent.whatsapp);
    }

    #[test]
    fn unknown_members_are_errors_with_their_position() {
        let error = parse_call_report(
            br#"{"call_id": "c", "from": "1", "started_at": "2027-01-10T04:10:00Z", "caller_name": "x"}"#,
        )
        .unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::UnknownField);
        assert!(
            error.to_string().starts_with(
                "line 1, column 81: unknown field `caller_name`, expected one of `call_id`"
            ),
            "{error}"
        );
        assert_eq!(error.help(), Some(SHAPE_HELP));
        let mut value = report();
        value["transcript"][0]["tone"] = json!("warm");
        let error = parse(&value).unwrap_err();
        assert!(
            error.message().starts_with("unknown field `tone`"),
            "{error}"
        );
    }

    #[test]
    fn wrong_and_missing_members_are_named() {
        let mut value = report();
        value["transcript"][0]["speaker"] = json!("bot");
        let error = parse(&value).unwrap_err();
        assert!(
            error
                .message()
                .starts_with("unknown variant `bot`, expected `agent` or `caller`"),
            "{error}"
        );
        let mut value = report();
        value.as_object_mut().unwrap().remove("from");
        let error = parse(&value).unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::Missing);
        assert_eq!(error.message(), "missing field `from`");
        let mut value = report();
        value["started_at"] = json!("yesterday");
        let error = parse(&value).unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::InvalidValue);
        assert_eq!(
            error.message(),
            "`yesterday` is not an RFC 3339 time such as `2027-01-10T04:10:00Z`"
        );
        let mut value = report();
        value["opt_in"]["spoken_at"] = json!("13:55");
        assert!(parse(&value)
            .unwrap_err()
            .message()
            .starts_with("`13:55` is not an RFC 3339 time"));
        let mut value = report();
        value["opt_in"]["spoken_at"] = json!(null);
        value["opt_in"]["whatsapp"] = json!(false);
        assert!(parse(&value).is_ok());
        let error = parse_call_report(b"{\"call_id\": ").unwrap_err();
        assert_eq!(error.kind(), IntakeErrorKind::NotJson);
    }

    #[test]
    fn type_errors_do_not_quote_what_was_said_or_the_number() {
        let mut value = report();
        value["transcript"] = json!("Caller: my number is 98145 67890");
        let error = parse(&value).unwrap_err();
        assert_eq!(error.message(), "invalid type: string, expected a sequence");
        let mut value = report();
        value["from"] = json!(919814567890_u64);
        let error = parse(&value).unwrap_err();
        assert_eq!(error.message(), "invalid type: integer, expected a string");
    }

    #[test]
    fn an_opt_in_needs_evidence_the_caller_said() {
        let cases = [
            (
                json!({"whatsapp": true, "evidence": "Yes, WhatsApp is best."}),
                "opt_in: missing `spoken_at`, which an opt-in needs",
            ),
            (
                json!({"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z"}),
                "opt_in: missing `evidence`, which an opt-in needs",
            ),
            (
                json!({"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": " "}),
                "opt_in: missing `evidence`, which an opt-in needs",
            ),
            (
                json!({"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "Sure, go ahead"}),
                "opt_in.evidence: not one of the caller's transcript lines",
            ),
            // The agent's line is not the caller's consent.
            (
                json!({"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "May we send the options on WhatsApp?"}),
                "opt_in.evidence: not one of the caller's transcript lines",
            ),
        ];
        for (opt_in, expected) in cases {
            let mut value = report();
            value["opt_in"] = opt_in;
            let error = parse(&value).unwrap_err();
            assert_eq!(error.to_string(), expected);
            assert!(error.help().is_some());
        }
    }

    #[test]
    fn other_content_checks() {
        let mut value = report();
        value["call_id"] = json!(" ");
        assert_eq!(parse(&value).unwrap_err().to_string(), "call_id: empty");
        let mut value = report();
        value["ended_at"] = json!("2027-01-10T04:00:00Z");
        assert_eq!(
            parse(&value).unwrap_err().to_string(),
            "ended_at: before `started_at`"
        );
        let mut value = report();
        value["extracted"]["Event Date"] = json!("2027-10-30");
        assert_eq!(
            parse(&value).unwrap_err().to_string(),
            "extracted: `Event Date` is not a playbook field name"
        );
    }
}

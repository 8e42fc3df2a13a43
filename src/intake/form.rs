//! Web forms: a form builder's JSON object or the form-urlencoded pairs of a
//! plain HTML form, mapped onto a lead with the same [`FieldMapping`] as
//! lead ads. Signatures, where the builder sends one, are checked with
//! [`super::signature::verify_hmac_sha256`].

use super::error::IntakeError;
use super::json::{ordered_members, parse_body, Node};
use super::mapping::{apply_mapping, FieldMapping, MappedLead};
use serde_json::Value;

/// Maps a JSON form submission, read from the request body, onto a lead,
/// keeping the questions in the order the form sent them: answers with no
/// target are kept in the order asked. The body must be an object of
/// field -> answer, as for [`map_form_json`].
pub fn map_form_json_body(body: &[u8], mapping: &FieldMapping) -> Result<MappedLead, IntakeError> {
    let value = parse_body(body)?;
    let fields = Node::root(&value, "body").object()?;
    // The body was just read as an object, so the ordered reading succeeds;
    // the sorted members are only a fallback that keeps every answer.
    let members = ordered_members(body).unwrap_or_else(|| {
        fields
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    });
    Ok(apply_mapping(
        members.into_iter().map(answer_values),
        mapping,
        "web form",
    ))
}

/// Maps a JSON form submission (an object of field -> answer) onto a lead.
/// An answer may be text, a number, a boolean, a list of those (checkboxes)
/// or null (left blank); a nested object is kept whole. A parsed `Value`
/// holds its members sorted by name, so answers with no target come in that
/// order; [`map_form_json_body`] keeps the order the form asked them in.
pub fn map_form_json(body: &Value, mapping: &FieldMapping) -> Result<MappedLead, IntakeError> {
    let fields = Node::root(body, "body").object()?;
    let answers = fields
        .iter()
        .map(|(name, value)| answer_values((name.clone(), value.clone())));
    Ok(apply_mapping(answers, mapping, "web form"))
}

/// A field's answer as a list of values: a list (checkboxes) as its items,
/// anything else as the one value.
fn answer_values((name, value): (String, Value)) -> (String, Vec<Value>) {
    let values = match value {
        Value::Array(values) => values,
        other => vec![other],
    };
    (name, values)
}

/// Maps decoded form-urlencoded pairs onto a lead; a name repeated (as
/// checkboxes send it) gives a list of answers.
pub fn map_form_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    mapping: &FieldMapping,
) -> MappedLead {
    let mut answers: Vec<(String, Vec<Value>)> = Vec::new();
    for (name, value) in pairs {
        let value = Value::String(value.to_string());
        match answers.iter_mut().find(|(known, _)| known == name) {
            Some((_, values)) => values.push(value),
            None => answers.push((name.to_string(), vec![value])),
        }
    }
    apply_mapping(answers, mapping, "web form")
}

#[cfg(test)]
mod tests {
    use super::super::mapping::Target;
    use super::*;
    use serde_json::json;

    fn clinic_mapping() -> FieldMapping {
        FieldMapping::from_pairs([
            ("Treatment", "field:treatment"),
            ("Preferred date", "field:preferred_date"),
            ("Reason", "intent"),
            ("WhatsApp me", "consent:whatsapp"),
        ])
        .unwrap()
    }

    #[test]
    fn a_json_form_maps_names_fields_and_consent() {
        let body = json!({
            "Full Name": "Fatima Al Marri",
            "E-mail": "fatima@example.com",
            "Phone": "050 123 4567",
            "Treatment": ["whitening", "cleaning"],
            "Preferred date": "2027-03-02",
            "Reason": "consultation",
            "WhatsApp me": true,
            "utm_source": "google",
            "notes": null
        });
        let mapping = clinic_mapping().with("E-mail", Target::Email);
        let lead = map_form_json(&body, &mapping).unwrap();
        assert_eq!(lead.name.as_deref(), Some("Fatima Al Marri"));
        assert_eq!(lead.email.as_deref(), Some("fatima@example.com"));
        assert_eq!(lead.phone.as_deref(), Some("050 123 4567"));
        assert_eq!(
            lead.phone_e164("AE").unwrap().as_deref(),
            Ok("+971501234567")
        );
        assert_eq!(lead.intent.as_deref(), Some("consultation"));
        assert_eq!(lead.fields["treatment"], json!(["whitening", "cleaning"]));
        assert_eq!(lead.fields["preferred_date"], json!("2027-03-02"));
        assert_eq!(lead.consent.as_ref().map(|c| c.whatsapp), Some(true));
        assert_eq!(
            lead.consent.map(|c| c.source),
            Some("web form field `WhatsApp me`".into())
        );
        assert_eq!(lead.unmapped, [("utm_source".into(), "google".into())]);
    }

    #[test]
    fn a_json_body_keeps_unmapped_answers_in_the_order_asked() {
        let body = br#"{
            "Full Name": "Fatima Al Marri",
            "Phone": "050 123 4567",
            "Which treatment interests you?": ["whitening", "cleaning"],
            "Anything else we should know?": "  Nervous about needles ",
            "Budget": 1500,
            "notes": null,
            "How did you hear about us?": "Instagram",
            "Which treatment interests you?": "implants"
        }"#;
        let lead = map_form_json_body(body, &FieldMapping::default()).unwrap();
        assert_eq!(lead.name.as_deref(), Some("Fatima Al Marri"));
        assert_eq!(
            lead.unmapped,
            [
                (
                    "Which treatment interests you?".into(),
                    "whitening, cleaning".into()
                ),
                (
                    "Anything else we should know?".into(),
                    "Nervous about needles".into()
                ),
                ("Budget".into(), "1500".into()),
                ("How did you hear about us?".into(), "Instagram".into()),
            ],
            "in the order asked, blanks skipped, the first answer kept"
        );
    }

    #[test]
    fn a_json_body_that_is_not_an_object_says_so() {
        let mapping = FieldMapping::default();
        assert_eq!(
            map_form_json_body(b"[1]", &mapping)
                .unwrap_err()
                .to_string(),
            "body: expected an object, found an array"
        );
        assert!(map_form_json_body(b"{\"name\": ", &mapping)
            .unwrap_err()
            .to_string()
            .starts_with("body: not JSON:"));
    }

    #[test]
    fn a_phone_sent_as_a_number_is_still_a_phone() {
        let lead = map_form_json(
            &json!({"phone": 919820012345_u64}),
            &FieldMapping::default(),
        )
        .unwrap();
        assert_eq!(lead.phone.as_deref(), Some("919820012345"));
    }

    #[test]
    fn a_json_form_must_be_an_object() {
        let error = map_form_json(&json!(["a"]), &FieldMapping::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "body: expected an object, found an array"
        );
    }

    #[test]
    fn urlencoded_pairs_map_the_same_way_and_repeat_into_lists() {
        let pairs = [
            ("name", "Ravi Menon"),
            ("phone", "+91 98200 12345"),
            ("Treatment", "implants"),
            ("Treatment", "braces"),
            ("WhatsApp me", "no"),
        ];
        let lead = map_form_pairs(pairs, &clinic_mapping());
        assert_eq!(lead.name.as_deref(), Some("Ravi Menon"));
        assert_eq!(lead.phone.as_deref(), Some("+91 98200 12345"));
        assert_eq!(lead.fields["treatment"], json!(["implants", "braces"]));
        assert_eq!(lead.consent.map(|c| c.whatsapp), Some(false));
    }

    #[test]
    fn urlencoded_unmapped_answers_keep_the_order_asked() {
        let pairs = [
            ("phone", "+91 98200 12345"),
            ("venue_style", "beach"),
            ("addons", "mehendi"),
            ("addons", "sangeet"),
            ("guests", ""),
            ("budget", "15 lakh"),
        ];
        let lead = map_form_pairs(pairs, &FieldMapping::default());
        assert_eq!(
            lead.unmapped,
            [
                ("venue_style".into(), "beach".into()),
                ("addons".into(), "mehendi, sangeet".into()),
                ("budget".into(), "15 lakh".into()),
            ]
        );
    }
}

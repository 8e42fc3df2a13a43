//! Web forms: a form builder's JSON object or the form-urlencoded pairs of a
//! plain HTML form, mapped onto a lead with the same [`FieldMapping`] as
//! lead ads. Signatures, where the builder sends one, are checked with
//! [`super::signature::verify_hmac_sha256`].

use super::error::IntakeError;
use super::json::Node;
use super::mapping::{apply_mapping, FieldMapping, MappedLead};
use serde_json::Value;

/// Maps a JSON form submission (an object of field -> answer) onto a lead.
/// An answer may be text, a number, a boolean, a list of those (checkboxes)
/// or null (left blank); a nested object is kept whole.
pub fn map_form_json(body: &Value, mapping: &FieldMapping) -> Result<MappedLead, IntakeError> {
    let fields = Node::root(body, "body").object()?;
    let answers = fields.iter().map(|(name, value)| {
        let values = match value {
            Value::Array(values) => values.clone(),
            other => vec![other.clone()],
        };
        (name.clone(), values)
    });
    Ok(apply_mapping(answers, mapping, "web form"))
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
        assert_eq!(lead.unmapped["utm_source"], json!("google"));
        assert!(!lead.unmapped.contains_key("notes"));
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
}

//! Meta lead ads: the `page` webhook's `leadgen` changes (IDs only) and the
//! lead that `GET /{leadgen_id}` returns, mapped onto a lead.

use super::error::IntakeError;
use super::event::{InboundEvent, LeadgenRef};
use super::json::{Node, TimeUnit};
use super::mapping::{apply_mapping, FieldMapping, MappedLead};
use super::meta::{read_changes, Sink};
use serde_json::Value;

/// Reads one `entry` of a `page` webhook; changes other than `leadgen`
/// (feed, Messenger) are skipped.
pub(crate) fn read_entry(entry: &Node<'_>, sink: &mut Sink) {
    read_changes(entry, sink, |field, entry, value, sink| {
        if field == "leadgen" {
            sink.take(read_leadgen(entry, value).map(Some));
        }
        Ok(())
    });
}

fn read_leadgen(entry: &Node<'_>, value: &Node<'_>) -> Result<InboundEvent, IntakeError> {
    let page_id = match value.opt_id_at("page_id")? {
        Some(page_id) => page_id,
        None => entry.id_at("id")?,
    };
    Ok(InboundEvent::LeadgenRef(LeadgenRef {
        leadgen_id: value.id_at("leadgen_id")?,
        page_id,
        form_id: value.id_at("form_id")?,
        ad_id: value.opt_id_at("ad_id")?,
        adgroup_id: value.opt_id_at("adgroup_id")?,
        created_time: value.field("created_time")?.unix_time(TimeUnit::Seconds)?,
    }))
}

/// Maps a lead fetched from Graph (`GET /{leadgen_id}`) onto a lead:
/// `field_data: [{"name", "values": [...]}]` through `mapping`, plus the
/// form's custom disclaimer checkboxes (`custom_disclaimer_responses`, each
/// read as a field named by its `checkbox_key`), so a checkbox can be mapped
/// to `consent:whatsapp`. The phone stays as typed.
pub fn map_leadgen_lead(
    graph_json: &Value,
    mapping: &FieldMapping,
) -> Result<MappedLead, IntakeError> {
    let root = Node::root(graph_json, "lead");
    let mut answers = Vec::new();
    for field in root.field("field_data")?.items()? {
        let name = field.str_at("name")?.to_string();
        let mut values = Vec::new();
        for value in field.opt_items_at("values")? {
            values.push(scalar(&value)?);
        }
        answers.push((name, values));
    }
    for response in root.opt_items_at("custom_disclaimer_responses")? {
        let key = response.str_at("checkbox_key")?.to_string();
        let checked = response.field("is_checked")?;
        answers.push((key, vec![scalar(&checked)?]));
    }
    Ok(apply_mapping(answers, mapping, "lead ad"))
}

/// An answer: Graph sends strings, but a number or boolean is taken as is.
fn scalar(node: &Node<'_>) -> Result<Value, IntakeError> {
    match node.value() {
        value @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => Ok(value.clone()),
        _ => Err(node.invalid(format!(
            "expected a string, found {}",
            super::json::type_name(node.value())
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::mapping::{ConsentRecord, Target};
    use super::super::meta::parse_page_webhook;
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    const CHANGE: &[u8] = include_bytes!("../../tests/fixtures/meta/leadgen-change.json");
    const LEAD: &[u8] = include_bytes!("../../tests/fixtures/meta/leadgen-lead.json");

    fn events_mapping() -> FieldMapping {
        FieldMapping::default()
            .with("which_city_is_your_event_in?", Target::Field("city".into()))
            .with("event_date", Target::Field("event_date".into()))
            .with("whatsapp_updates", Target::ConsentWhatsapp)
    }

    #[test]
    fn fixture_change_becomes_a_leadgen_ref() {
        let events = parse_page_webhook(CHANGE).unwrap();
        assert_eq!(
            events,
            vec![InboundEvent::LeadgenRef(LeadgenRef {
                leadgen_id: "2250000000000001".into(),
                page_id: "108800000000001".into(),
                form_id: "991000000000001".into(),
                ad_id: Some("238500000000002".into()),
                adgroup_id: Some("238500000000001".into()),
                created_time: DateTime::from_timestamp(1_799_996_990, 0).unwrap(),
            })]
        );
        assert_eq!(events[0].source_id(), "2250000000000001");
        assert_eq!(events[0].channel(), crate::intake::Channel::LeadAd);
    }

    #[test]
    fn fixture_lead_maps_to_name_phone_email_fields_and_consent() {
        let graph: Value = serde_json::from_slice(LEAD).unwrap();
        let lead = map_leadgen_lead(&graph, &events_mapping()).unwrap();
        assert_eq!(lead.name.as_deref(), Some("Rahul Verma"));
        assert_eq!(lead.email.as_deref(), Some("rahul.verma@example.com"));
        assert_eq!(lead.phone.as_deref(), Some("09876543210"), "as typed");
        assert_eq!(
            lead.phone_e164("IN").unwrap().as_deref(),
            Ok("+919876543210")
        );
        assert_eq!(lead.fields["city"], json!("Jaipur"));
        assert_eq!(lead.fields["event_date"], json!("2027-02-20"));
        assert_eq!(lead.fields.len(), 2);
        assert!(lead.unmapped.is_empty());
        assert_eq!(
            lead.consent,
            Some(ConsentRecord {
                whatsapp: true,
                source: "lead ad field `whatsapp_updates`".into(),
                evidence: "whatsapp_updates: Yes".into(),
                at: None,
            })
        );
    }

    #[test]
    fn with_the_default_mapping_custom_questions_are_kept_unmapped() {
        let graph: Value = serde_json::from_slice(LEAD).unwrap();
        let lead = map_leadgen_lead(&graph, &FieldMapping::default()).unwrap();
        assert_eq!(lead.name.as_deref(), Some("Rahul Verma"));
        assert!(lead.fields.is_empty());
        assert_eq!(lead.consent, None, "consent is never assumed");
        assert_eq!(
            lead.unmapped,
            [
                ("which_city_is_your_event_in?".into(), "Jaipur".into()),
                ("event_date".into(), "2027-02-20".into()),
                ("whatsapp_updates".into(), "Yes".into()),
            ],
            "in the order the form asked"
        );
    }

    #[test]
    fn unmapped_lead_ad_answers_keep_the_order_asked() {
        let graph = json!({
            "created_time": "2027-01-10T09:30:00+0000",
            "id": "2250000000000002",
            "field_data": [
                {"name": "full_name", "values": ["Neha Kapoor"]},
                {"name": "when_is_the_wedding?", "values": ["December 2027"]},
                {"name": "phone_number", "values": ["+919820011111"]},
                {"name": "guest_count", "values": ["200-300"]},
                {"name": "functions_needed", "values": ["mehendi", "sangeet", "reception"]},
                {"name": "anything_else?", "values": [""]},
                {"name": "budget_range", "values": ["40-60 lakh"]}
            ],
            "custom_disclaimer_responses": [{"checkbox_key": "newsletter", "is_checked": "1"}]
        });
        let lead = map_leadgen_lead(&graph, &FieldMapping::default()).unwrap();
        assert_eq!(
            lead.unmapped,
            [
                ("when_is_the_wedding?".into(), "December 2027".into()),
                ("guest_count".into(), "200-300".into()),
                (
                    "functions_needed".into(),
                    "mehendi, sangeet, reception".into()
                ),
                ("budget_range".into(), "40-60 lakh".into()),
                ("newsletter".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn disclaimer_checkboxes_can_carry_consent() {
        let graph = json!({
            "field_data": [{"name": "full_name", "values": ["Aisha Khan"]}],
            "custom_disclaimer_responses": [{"checkbox_key": "whatsapp_optin", "is_checked": "1"}]
        });
        let mapping = FieldMapping::default().with("whatsapp_optin", Target::ConsentWhatsapp);
        let lead = map_leadgen_lead(&graph, &mapping).unwrap();
        assert_eq!(lead.consent.map(|c| c.whatsapp), Some(true));
    }

    #[test]
    fn checkbox_answers_with_several_values_become_lists() {
        let graph = json!({"field_data": [
            {"name": "services", "values": ["decor", "catering"]},
            {"name": "empty", "values": []}
        ]});
        let mapping = FieldMapping::default().with("services", Target::Field("services".into()));
        let lead = map_leadgen_lead(&graph, &mapping).unwrap();
        assert_eq!(lead.fields["services"], json!(["decor", "catering"]));
        assert!(lead
            .unmapped
            .iter()
            .all(|(question, _)| question != "empty"));
    }

    #[test]
    fn malformed_graph_leads_say_what_and_where() {
        let cases = [
            (json!({"id": "1"}), "lead: missing `field_data`"),
            (
                json!({"field_data": [{"values": ["x"]}]}),
                "field_data[0]: missing `name`",
            ),
            (
                json!({"field_data": [{"name": "a", "values": "x"}]}),
                "field_data[0].values: expected an array, found a string",
            ),
            (
                json!({"field_data": [{"name": "a", "values": [{"x": 1}]}]}),
                "field_data[0].values[0]: expected a string, found an object",
            ),
        ];
        for (graph, expected) in cases {
            let error = map_leadgen_lead(&graph, &FieldMapping::default()).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn leadgen_changes_are_read_from_batches_and_other_fields_skipped() {
        let body = serde_json::to_vec(&json!({
            "object": "page",
            "entry": [
                {"id": "P1", "time": 1, "changes": [
                    {"field": "feed", "value": {"item": "status"}},
                    {"field": "leadgen", "value": {"leadgen_id": "L1", "form_id": "F", "created_time": 1799996990}}
                ]},
                {"id": "P2", "time": 1, "messaging": [{"message": {"mid": "x"}}], "changes": [
                    {"field": "leadgen", "value": {"leadgen_id": 42, "page_id": "P2", "form_id": "F", "created_time": "1799996991", "ad_id": null}}
                ]}
            ]
        }))
        .unwrap();
        let events = parse_page_webhook(&body).unwrap();
        let refs: Vec<(String, String, Option<String>)> = events
            .iter()
            .map(|event| match event {
                InboundEvent::LeadgenRef(r) => {
                    (r.leadgen_id.clone(), r.page_id.clone(), r.ad_id.clone())
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            refs,
            vec![
                ("L1".into(), "P1".into(), None),
                ("42".into(), "P2".into(), None)
            ]
        );
    }

    #[test]
    fn a_leadgen_change_without_its_id_is_an_error() {
        let body = br#"{"object":"page","entry":[{"id":"P","changes":[{"field":"leadgen","value":{"form_id":"F","created_time":1}}]}]}"#;
        assert_eq!(
            parse_page_webhook(body).unwrap_err().to_string(),
            "entry[0].changes[0].value: missing `leadgen_id`"
        );
    }
}

//! The OpenAPI 3.1 description of the HTTP service, generated: every
//! operation from the `#[utoipa::path]` of its handler, registered on the
//! router by the same call that routes it ([`super::api_routes`]), and every
//! schema from the Rust type a handler reads or answers with. What the
//! types cannot say is added here, once for every operation: the refusals
//! any route can answer (400 for a malformed path or query, 408), the API
//! key scheme, and the error responses with their examples, built from
//! [`ErrorCode`].

use super::error::ErrorCode;
use serde_json::{json, Value};
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi as Document, RefOr, Response, ResponseBuilder,
};
use utoipa::{Modify, OpenApi, ToResponse};

/// The document's frame: its information, tags, security and the
/// components no operation names by type. The operations are added by the
/// router ([`super::api_routes`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "handoff",
        description = "Leads come in through the API (`POST /v1/leads`) or through webhooks (Meta, web forms, voice agents), are stored, decided by the account's playbook and, when the decision sends a WhatsApp message, put in the outbox. Every error body is `{\"error\": {\"code\", \"message\", \"at\"?}}`, except where a response says otherwise. Every refusal, including a malformed path or query (400), a wrong method (405), a request taking longer than 10 seconds (408) and a body over 1 MiB (413), has that shape. A path the router does not know is answered 404 (`not_found`). JSON bodies must be sent with a JSON `Content-Type` (415 otherwise). What text may hold and how long each field may be is one policy for every entry point (README, \"What the service accepts\"): control characters (NUL included) are refused except line breaks and tabs in multi-line text, and times are within the years 1970 to 9999.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "health", description = "Liveness, readiness, metrics and this document."),
        (name = "leads", description = "Lead intake, reading, takeover and dry runs (API key)."),
        (name = "threads", description = "What the inbox does, for other tools: the thread list, replies, notes, reassignment, template previews (API key)."),
        (name = "rules", description = "The rules in force and reloading them (API key)."),
        (name = "webhooks", description = "Intake from Meta, web forms and voice agents. Events are stored before the answer and processed into leads by a background worker."),
    ),
    security(("apiKey" = [])),
    components(
        schemas(super::error::ErrorBody, ErrorCode),
        responses(
            BadRequest,
            Unauthorized,
            BadSignature,
            Conflict,
            NotFound,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unprocessable,
            Internal,
            Timeout,
            Forbidden
        )
    ),
    modifiers(&Frame)
)]
pub struct ApiDoc;

/// The OpenAPI document `GET /openapi.json` serves, made once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, mut doc) = super::api_routes().split_for_parts();
        shared_responses(&mut doc);
        refine(&mut doc);
        // Types and strings serialize without fail.
        serde_json::to_value(doc).unwrap_or(Value::Null)
    })
}

/// What every operation shares, and the security scheme.
struct Frame;

impl Modify for Frame {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An account's API key, sent as `Authorization: Bearer <key>` (the server accepts the `Bearer ` and `bearer ` prefixes). The key selects the account; every lead read or written belongs to it."))
                    .build(),
            ),
        );
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    }
}

/// Adds to every operation the answers any route can give: 408 (the
/// router's timeout), and 400 for a path or query that cannot be read.
fn shared_responses(doc: &mut Document) {
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            shared(op);
        }
    }
}

fn shared(op: &mut Operation) {
    let responses = &mut op.responses.responses;
    responses
        .entry("400".to_string())
        .or_insert_with(|| RefOr::Ref(utoipa::openapi::Ref::from_response_name("BadRequest")));
    responses.insert(
        "408".to_string(),
        RefOr::Ref(utoipa::openapi::Ref::from_response_name("Timeout")),
    );
}

/// What the derives cannot say, said once here:
/// - a public operation (`security(())`) needs no key: `security: []`;
/// - an optional body is absent, never a JSON `null`;
/// - `POST /v1/leads` needs at least one identity: `phone`, `email` or
///   `external_id`;
/// - the fields a voice agent extracted are named as playbooks name fields
///   (the reader refuses other names; serde's `flatten` loses that).
fn refine(doc: &mut Document) {
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            if let Some(security) = &mut op.security {
                if security.len() == 1 && serde_json::to_value(&security[0]).ok() == Some(json!({}))
                {
                    security.clear();
                }
            }
            let Some(body) = &mut op.request_body else {
                continue;
            };
            let optional = !matches!(body.required, Some(utoipa::openapi::Required::True));
            for content in body.content.values_mut() {
                if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
                    if optional && one_of.items.len() == 2 {
                        let not_null = one_of.items.iter().find(|s| {
                            serde_json::to_value(s).ok() != Some(json!({"type": "null"}))
                        });
                        content.schema = not_null.cloned();
                    }
                }
                if op.operation_id.as_deref() == Some("createLead") {
                    if let Some(lead) = content.schema.take() {
                        let identity = |name: &str| {
                            Schema::Object(ObjectBuilder::new().required(name).build())
                        };
                        let any_of = utoipa::openapi::schema::AnyOfBuilder::new()
                            .item(identity("phone"))
                            .item(identity("email"))
                            .item(identity("external_id"))
                            .build();
                        let schema = utoipa::openapi::schema::AllOfBuilder::new()
                            .item(lead)
                            .item(Schema::AnyOf(any_of))
                            .build();
                        content.schema = Some(RefOr::T(Schema::AllOf(schema)));
                    }
                }
            }
        }
    }
    if let Some(components) = &mut doc.components {
        if let Some(RefOr::T(Schema::Object(extracted))) = components.schemas.get_mut("Extracted") {
            extracted.property_names = Some(Box::new(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[a-z][a-z0-9_]*$"))
                    .into(),
            ));
        }
    }
}

/// An error response: the one error body, with an example of `code`.
fn error_response(
    description: &str,
    code: ErrorCode,
    message: &str,
    at: Option<&str>,
    www_authenticate: bool,
) -> RefOr<Response> {
    let mut example = json!({"error": {"code": code.as_str(), "message": message}});
    if let Some(at) = at {
        example["error"]["at"] = json!(at);
    }
    let content = ContentBuilder::new()
        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
            "Error",
        ))))
        .example(Some(example))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content);
    if www_authenticate {
        response = response.header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(
                    utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::String)
                        .enum_values(Some(["Bearer"])),
                )
                .description(Some("Always `Bearer` on a 401."))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// Declares the error responses: a type per response, for the handlers'
/// `responses(...)`, with its description and example.
macro_rules! error_responses {
    ($($name:ident => ($code:expr, $description:expr, $message:expr, $at:expr, $auth:expr);)*) => {
        $(
            #[doc = $description]
            pub struct $name;

            impl<'s> ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<Response>) {
                    (
                        stringify!($name),
                        error_response($description, $code, $message, $at, $auth),
                    )
                }
            }
        )*
    };
}

error_responses! {
    BadRequest => (
        ErrorCode::BadRequest,
        "The body is not JSON of the right shape, or a header, path or query is malformed (code `bad_request`). `at` names the field path, when there is one.",
        "the body is not a valid lead: invalid type: string \"city=Goa\", expected a map at line 1 column 47",
        Some("fields"),
        false
    );
    Unauthorized => (
        ErrorCode::Unauthorized,
        "No API key, or not one of an account's keys (code `unauthorized`).",
        "send a valid API key as `Authorization: Bearer <key>`",
        None,
        true
    );
    BadSignature => (
        ErrorCode::BadSignature,
        "The signature header is missing or does not match the body (code `bad_signature`).",
        "`X-Hub-Signature-256` does not match the body",
        None,
        true
    );
    Forbidden => (
        ErrorCode::Forbidden,
        "Not verified: a parameter is missing or wrong, or the account has no verify token configured (code `forbidden`).",
        "verification failed: `hub.mode` must be `subscribe` and `hub.verify_token` the account's `meta_verify_token`",
        None,
        false
    );
    Conflict => (
        ErrorCode::Conflict,
        "The thread is not in a state for this (code `conflict`).",
        "the thread of `0194c0de-7f3a-7000-8000-000000000001` is not open in a queue (it is done already, or its queue has no members)",
        None,
        false
    );
    NotFound => (
        ErrorCode::NotFound,
        "No such lead, account or form for this caller (code `not_found`).",
        "no lead `0194c0de-7f3a-7000-8000-000000000001`",
        None,
        false
    );
    PayloadTooLarge => (
        ErrorCode::TooLarge,
        "The body is larger than 1 MiB (code `too_large`).",
        "the request body is larger than 1 MiB",
        None,
        false
    );
    UnsupportedMediaType => (
        ErrorCode::UnsupportedMediaType,
        "The body is declared as something other than JSON, or not declared (code `unsupported_media_type`).",
        "the body is sent as `application/x-www-form-urlencoded`; send JSON with `Content-Type: application/json`",
        Some("Content-Type"),
        false
    );
    Unprocessable => (
        ErrorCode::Invalid,
        "Well-formed JSON with a value that is not acceptable (code `invalid`; `at` names the field), or an idempotency key, form submission ID or `call_id` already used for a different request (code `idempotency_key_reused`; nothing was done).",
        "`phone` cannot be read as a phone number: not a number",
        Some("phone"),
        false
    );
    Internal => (
        ErrorCode::Internal,
        "Something failed on the server (the details are logged, not sent); the request was not applied (code `internal`).",
        "something went wrong on our side; the request was not applied",
        None,
        false
    );
    Timeout => (
        ErrorCode::Timeout,
        "The request took longer than 10 seconds and was not applied (code `timeout`).",
        "the request took longer than 10 seconds and was not applied",
        None,
        false
    );
}

/// Declares the sets of error responses operations share, by their
/// response types above: `responses((status = 200, ...), JsonErrors)`.
macro_rules! error_sets {
    ($($(#[$meta:meta])* $name:ident => [$($status:literal $response:ident),*];)*) => {
        $(
            $(#[$meta])*
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> std::collections::BTreeMap<String, RefOr<Response>> {
                    [$(($status, stringify!($response))),*]
                        .into_iter()
                        .map(|(status, name): (&str, &str)| {
                            (
                                status.to_string(),
                                RefOr::Ref(utoipa::openapi::Ref::from_response_name(name)),
                            )
                        })
                        .collect()
                }
            }
        )*
    };
}

error_sets! {
    /// An API-key operation without a body or a lead.
    KeyErrors => ["401" Unauthorized, "500" Internal];
    /// An API-key operation on a lead, without a body.
    LeadErrors => ["401" Unauthorized, "404" NotFound, "500" Internal];
    /// An API-key operation that reads a JSON body.
    JsonErrors => [
        "400" BadRequest, "401" Unauthorized, "413" PayloadTooLarge,
        "415" UnsupportedMediaType, "422" Unprocessable, "500" Internal
    ];
    /// An API-key operation on a lead that reads a JSON body.
    LeadJsonErrors => [
        "400" BadRequest, "401" Unauthorized, "404" NotFound, "413" PayloadTooLarge,
        "415" UnsupportedMediaType, "422" Unprocessable, "500" Internal
    ];
    /// A signed webhook's body (the signature in place of the API key).
    WebhookErrors => [
        "400" BadRequest, "401" BadSignature, "404" NotFound, "413" PayloadTooLarge,
        "415" UnsupportedMediaType, "500" Internal
    ];
}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 description of this service.", body = Object))
)]
pub async fn serve() -> axum::Json<&'static Value> {
    axum::Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths is an object") {
            for (method, op) in item.as_object().expect("a path item is an object") {
                out.push((method.clone(), path.clone(), op));
            }
        }
        out
    }

    fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(r) => doc.pointer(&r[1..]).unwrap_or(&Value::Null),
            None => value,
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_every_api_route() {
        let doc = document();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let documented: BTreeSet<String> = operations(doc)
            .into_iter()
            .map(|(m, p, _)| format!("{m} {p}"))
            .collect();
        // The routes a client of the API uses; the inbox's pages and the
        // sandbox are not part of it.
        for route in [
            "get /healthz",
            "get /readyz",
            "get /metrics",
            "get /openapi.json",
            "post /v1/leads",
            "get /v1/leads",
            "get /v1/leads/{id}",
            "post /v1/leads/{id}/takeover",
            "post /v1/leads/{id}/release",
            "post /v1/leads/{id}/reply",
            "post /v1/leads/{id}/notes",
            "post /v1/leads/{id}/reassign",
            "get /v1/leads/{id}/templates",
            "post /v1/leads/{id}/close",
            "get /v1/threads",
            "get /v1/queues",
            "post /v1/dry-run",
            "get /v1/rulesets",
            "post /v1/rulesets/reload",
            "get /webhooks/meta/{account}",
            "post /webhooks/meta/{account}",
            "post /webhooks/forms/{account}/{form}",
            "post /webhooks/voice/{account}",
        ] {
            assert!(documented.contains(route), "{route} is not documented");
        }
        assert!(!documented
            .iter()
            .any(|r| r.contains("/inbox") || r.contains("/sandbox")));
    }

    #[test]
    fn every_operation_is_well_formed() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (method, path, op) in operations(doc) {
            let at = format!("{method} {path}");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no operationId"));
            assert!(ids.insert(id.to_string()), "{at}: operationId `{id}` twice");
            assert!(op["summary"].is_string(), "{at}: no summary");
            let responses = op["responses"].as_object().unwrap();
            for shared in ["400", "408"] {
                assert!(responses.contains_key(shared), "{at}: no {shared}");
            }
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success response"
            );
            // Every error response is the one error body.
            for (status, response) in responses {
                let response = resolve(doc, response);
                if status.starts_with('4') || status.starts_with('5') {
                    let schema = &response["content"]["application/json"]["schema"];
                    let name = schema["$ref"].as_str().unwrap_or_default();
                    let reload = id == "reloadRules" && status == "422";
                    let readiness = id == "readyz" && status == "503";
                    assert!(
                        name.ends_with("/Error") || reload || readiness,
                        "{at} {status}: not the error body"
                    );
                }
            }
            // Every `{name}` of the path is a declared path parameter.
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| resolve(doc, p))
                        .filter(|p| p["in"] == "path")
                        .map(|p| p["name"].as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default();
            let in_path: BTreeSet<String> = path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                .map(str::to_string)
                .collect();
            assert_eq!(declared, in_path, "{at}: path parameters");
            // An API-key route answers 401; a public one says `security: []`.
            if op.get("security") != Some(&json!([])) {
                assert!(responses.contains_key("401"), "{at}: API key but no 401");
            }
            // A body is described for every method that reads one.
            if method == "post" && !["reloadRules", "closeThread"].contains(&id) {
                assert!(
                    op["requestBody"]["content"].is_object(),
                    "{at}: no request body"
                );
            }
        }
    }

    #[test]
    fn every_reference_points_to_a_component() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r);
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut found = Vec::new();
        refs(doc, &mut found);
        assert!(found.len() > 50);
        for r in found {
            assert!(doc.pointer(&r[1..]).is_some(), "`{r}` points nowhere");
        }
    }

    /// The members a `deny_unknown_fields` struct accepts, read from serde's
    /// "unknown field `x`, expected one of `a`, `b`" error.
    fn accepted_members<T: serde::de::DeserializeOwned>() -> BTreeSet<String> {
        let Err(e) = serde_json::from_value::<T>(json!({"zz_not_a_member": 0})) else {
            panic!("an unknown member was accepted");
        };
        let text = e.to_string();
        assert!(text.starts_with("unknown field"), "{text}");
        text.split('`')
            .skip(1)
            .step_by(2)
            .skip(1)
            .map(str::to_string)
            .collect()
    }

    fn documented_members(name: &str) -> BTreeSet<String> {
        let schema = &document()["components"]["schemas"][name];
        assert_eq!(
            schema["additionalProperties"], false,
            "{name} is not closed"
        );
        schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{name} has no properties"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn request_schemas_are_closed_and_name_the_members_read() {
        use super::super::leads::{ConsentInput, DryRunInput, LeadInput, TakeoverInput};
        use super::super::threads::{NoteInput, ReassignInput, ReplyInput};
        use crate::engine::lead::{Answer, ThreadInput, TranscriptMessage};
        use crate::intake::{CallLine, CallReport, OptIn};
        assert_eq!(
            documented_members("LeadInput"),
            accepted_members::<LeadInput>()
        );
        assert_eq!(
            documented_members("DryRunInput"),
            accepted_members::<DryRunInput>()
        );
        let situation: BTreeSet<String> =
            ["now", "window", "human", "event", "thread", "marketing"]
                .map(String::from)
                .into();
        assert_eq!(
            &accepted_members::<DryRunInput>() - &accepted_members::<LeadInput>(),
            situation
        );
        assert_eq!(
            documented_members("ConsentInput"),
            accepted_members::<ConsentInput>()
        );
        assert_eq!(
            documented_members("TakeoverInput"),
            accepted_members::<TakeoverInput>()
        );
        assert_eq!(
            documented_members("ReplyInput"),
            accepted_members::<ReplyInput>()
        );
        assert_eq!(
            documented_members("NoteInput"),
            accepted_members::<NoteInput>()
        );
        assert_eq!(
            documented_members("ReassignInput"),
            accepted_members::<ReassignInput>()
        );
        assert_eq!(
            documented_members("TranscriptMessage"),
            accepted_members::<TranscriptMessage>()
        );
        assert_eq!(documented_members("Answer"), accepted_members::<Answer>());
        assert_eq!(
            documented_members("ThreadInput"),
            accepted_members::<ThreadInput>()
        );
        assert_eq!(
            documented_members("CallReport"),
            accepted_members::<CallReport>()
        );
        assert_eq!(
            documented_members("CallLine"),
            accepted_members::<CallLine>()
        );
        assert_eq!(documented_members("OptIn"), accepted_members::<OptIn>());
    }

    #[test]
    fn the_thread_states_documented_are_the_ones_the_filter_takes() {
        let doc = document();
        let state = doc["paths"]["/v1/threads"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "state")
            .unwrap();
        let documented: Vec<&str> = state["schema"]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{state}"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(documented, crate::store::inbox::THREAD_STATES);
    }

    #[test]
    fn length_limits_are_the_input_policy() {
        use crate::pipeline::policy;
        let lead = &document()["components"]["schemas"]["LeadInput"]["properties"];
        for (member, max) in [
            ("name", policy::NAME),
            ("first_name", policy::FIRST_NAME),
            ("phone", policy::PHONE),
            ("email", policy::EMAIL),
            ("language", policy::LANGUAGE),
            ("channel", policy::CHANNEL),
            ("intent", policy::INTENT),
            ("external_id", policy::IDENTITY),
        ] {
            assert_eq!(lead[member]["maxLength"], json!(max), "{member}");
        }
        assert_eq!(lead["answers"]["maxItems"], json!(policy::ANSWERS));
        let answer = &document()["components"]["schemas"]["Answer"]["properties"];
        assert_eq!(answer["question"]["maxLength"], json!(policy::QUESTION));
        assert_eq!(answer["answer"]["maxLength"], json!(policy::ANSWER));
        let reply = &document()["components"]["schemas"]["ReplyInput"]["properties"];
        assert_eq!(
            reply["text"]["maxLength"],
            json!(super::super::threads::MAX_TEXT)
        );
    }

    #[test]
    fn the_examples_are_read_by_the_handlers_types() {
        use super::super::leads::{DryRunInput, LeadInput};
        let doc = document();
        let example = |path: &str| {
            doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["example"]
                .clone()
        };
        serde_json::from_value::<LeadInput>(example("/v1/leads")).unwrap();
        serde_json::from_value::<DryRunInput>(example("/v1/dry-run")).unwrap();
        let report = example("/webhooks/voice/{account}").to_string();
        crate::intake::parse_call_report(report.as_bytes()).unwrap();
    }

    #[test]
    fn the_error_codes_are_the_ones_the_server_sends() {
        use super::super::error::ApiError;
        use axum::response::IntoResponse;
        let doc = document();
        let documented: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let all: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(documented, all);
        let errors = [
            ApiError::bad("x", None),
            ApiError::invalid("x", "x"),
            ApiError::KeyReused {
                message: "x".into(),
                at: "x".into(),
            },
            ApiError::Unauthorized,
            ApiError::BadSignature("x".into()),
            ApiError::Forbidden("x".into()),
            ApiError::NotFound("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::PayloadTooLarge,
            ApiError::UnsupportedMediaType("x".into()),
            ApiError::Internal("x".into()),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for e in errors {
            let code = e.code();
            let response = e.into_response();
            assert_eq!(response.status(), code.status());
            let bytes = rt
                .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["error"]["code"], code.as_str());
            assert!(documented.contains(code.as_str()));
        }
    }
}

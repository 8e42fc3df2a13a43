//! The OpenAPI 3.1 description of the HTTP service, written by hand to match
//! the handlers in this module's siblings: every route of [`super::app`],
//! every status a handler answers with, and the JSON shapes it reads and
//! writes. The tests below fail when a route is added to the router but not
//! here (or the other way round), when a `$ref` points nowhere, and when a
//! request schema's members drift from the struct that reads the body.

use serde_json::{json, Map, Value};

/// The channels a lead can come in by ([`crate::dsl::schema::CHANNELS`]).
fn channels() -> Value {
    json!(crate::dsl::schema::CHANNELS)
}

/// One line of text: no control characters (the input policy's `Line`).
const LINE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Text of several lines: line breaks and tabs, no other control characters.
const TEXT: &str = "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f]*$";

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn response(name: &str) -> Value {
    json!({"$ref": format!("#/components/responses/{name}")})
}

fn parameter(name: &str) -> Value {
    json!({"$ref": format!("#/components/parameters/{name}")})
}

fn nullable(kind: &str) -> Value {
    json!({"type": [kind, "null"]})
}

fn nullable_text(description: &str) -> Value {
    json!({"type": ["string", "null"], "description": description})
}

fn object(entries: Vec<(&str, Value)>) -> Value {
    Value::Object(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

/// `responses` plus the 408 every route can answer (the router's timeout).
fn responses(entries: Vec<(&str, Value)>) -> Value {
    let mut map = match object(entries) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    map.insert("408".into(), response("Timeout"));
    // A malformed path or query is refused before any handler runs.
    map.entry("400").or_insert_with(|| response("BadRequest"));
    Value::Object(map)
}

/// The error codes, from the one enum the server sends them from.
fn error_codes() -> Value {
    use super::error::ErrorCode;
    let described: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| format!("`{}` {}", c.as_str(), c.status().as_u16()))
        .collect();
    json!({
        "type": "string",
        "description": format!("{}.", described.join(", ")),
        "enum": ErrorCode::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()
    })
}

/// The OpenAPI document.
pub fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "handoff",
            "version": env!("CARGO_PKG_VERSION"),
            "summary": "Routes inbound sales leads into WhatsApp without losing context.",
            "description": "Leads come in through the API (`POST /v1/leads`) or through webhooks (Meta, web forms, voice agents), are stored, decided by the account's playbook and, when the decision sends a WhatsApp message, put in the outbox. Every error body is `{\"error\": {\"code\", \"message\", \"at\"?}}`, except where a response says otherwise. Every refusal, including a malformed path or query (400), a wrong method (405), a request taking longer than 10 seconds (408) and a body over 1 MiB (413), has that shape. A path the router does not know is answered 404 (`not_found`). JSON bodies must be sent with a JSON `Content-Type` (415 otherwise). What text may hold and how long each field may be is one policy for every entry point (README, \"What the service accepts\"): control characters (NUL included) are refused except line breaks and tabs in multi-line text, and times are within the years 1970 to 9999.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}
        },
        "tags": [
            {"name": "health", "description": "Liveness, readiness, metrics and this document."},
            {"name": "leads", "description": "Lead intake, reading, takeover and dry runs (API key)."},
            {"name": "threads", "description": "What the inbox does, for other tools: the thread list, replies, notes, reassignment, template previews (API key)."},
            {"name": "rules", "description": "The rules in force and reloading them (API key)."},
            {"name": "webhooks", "description": "Intake from Meta, web forms and voice agents. Events are stored before the answer and processed into leads by a background worker."}
        ],
        "security": [{"apiKey": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An account's API key, sent as `Authorization: Bearer <key>` (the server accepts the `Bearer ` and `bearer ` prefixes). The key selects the account; every lead read or written belongs to it."
                },
            },
            "schemas": schemas(),
            "responses": component_responses(),
            "parameters": parameters(),
            "headers": {
                "IdempotentReplayed": {
                    "description": "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key` (nothing was done again), `false` otherwise.",
                    "schema": {"type": "string", "enum": ["true", "false"]}
                },
                "WWWAuthenticate": {
                    "description": "Always `Bearer` on a 401.",
                    "schema": {"type": "string", "const": "Bearer"}
                }
            }
        }
    })
}

fn paths() -> Value {
    object(vec![
        ("/healthz", json!({"get": healthz()})),
        ("/readyz", json!({"get": readyz()})),
        ("/metrics", json!({"get": metrics()})),
        ("/openapi.json", json!({"get": openapi_json()})),
        (
            "/v1/leads",
            json!({"post": create_lead(), "get": search_leads()}),
        ),
        ("/v1/leads/{id}", json!({"get": get_lead()})),
        ("/v1/leads/{id}/takeover", json!({"post": thread_op(true)})),
        ("/v1/leads/{id}/release", json!({"post": thread_op(false)})),
        ("/v1/leads/{id}/reply", json!({"post": reply_op()})),
        ("/v1/leads/{id}/notes", json!({"post": note_op()})),
        ("/v1/leads/{id}/reassign", json!({"post": reassign_op()})),
        ("/v1/leads/{id}/templates", json!({"get": templates_op()})),
        ("/v1/threads", json!({"get": threads_op()})),
        ("/v1/queues", json!({"get": queues_op()})),
        ("/v1/leads/{id}/close", json!({"post": close_op()})),
        ("/v1/dry-run", json!({"post": dry_run()})),
        ("/v1/rulesets", json!({"get": rulesets()})),
        ("/v1/rulesets/reload", json!({"post": reload()})),
        (
            "/webhooks/meta/{account}",
            json!({"get": meta_verify(), "post": meta_events()}),
        ),
        ("/webhooks/forms/{account}/{form}", json!({"post": form()})),
        ("/webhooks/voice/{account}", json!({"post": voice()})),
    ])
}

fn healthz() -> Value {
    json!({
        "operationId": "healthz",
        "tags": ["health"],
        "summary": "Liveness: the process answers.",
        "security": [],
        "responses": responses(vec![
            ("200", json!({
                "description": "Always `ok`.",
                "content": {"text/plain": {"schema": {"type": "string", "const": "ok"}}}
            })),
        ])
    })
}

fn readyz() -> Value {
    json!({
        "operationId": "readyz",
        "tags": ["health"],
        "summary": "Readiness: a ruleset is loaded and the database answers.",
        "security": [],
        "responses": responses(vec![
            ("200", json!({
                "description": "Ready.",
                "content": {"application/json": {
                    "schema": schema("Readiness"),
                    "example": {"database": true, "rules": true}
                }}
            })),
            ("503", json!({
                "description": "Not ready: no ruleset is loaded or the database does not answer. The body says which.",
                "content": {"application/json": {
                    "schema": schema("Readiness"),
                    "example": {"database": false, "rules": true}
                }}
            })),
        ])
    })
}

fn metrics() -> Value {
    json!({
        "operationId": "metrics",
        "tags": ["health"],
        "summary": "Prometheus metrics.",
        "security": [],
        "responses": responses(vec![
            ("200", json!({
                "description": "Metrics in the Prometheus text exposition format.",
                "content": {super::metrics::CONTENT_TYPE: {"schema": {"type": "string"}}}
            })),
        ])
    })
}

fn openapi_json() -> Value {
    json!({
        "operationId": "openapi",
        "tags": ["health"],
        "summary": "This document.",
        "security": [],
        "responses": responses(vec![
            ("200", json!({
                "description": "The OpenAPI 3.1 description of this service.",
                "content": {"application/json": {"schema": {"type": "object"}}}
            })),
        ])
    })
}

fn create_lead() -> Value {
    json!({
        "operationId": "createLead",
        "tags": ["leads"],
        "summary": "Take in a lead: store it, decide it, queue what the decision sends.",
        "description": "The lead is matched to an existing lead of the account by any of its identities (phone, email, `external_id`); leads that turn out to be one person are merged, the oldest surviving. The event, its decision, the outbox rows and the idempotency record commit together. The playbook is the lead's `playbook`, else the account's routing by `form`, by `channel`, by `source`, its default, else the only playbook the account may use. A lead that already has a playbook keeps it.",
        "parameters": [parameter("IdempotencyKey")],
        "requestBody": {
            "required": true,
            "content": {"application/json": {
                "schema": {
                    "allOf": [schema("LeadInput")],
                    "anyOf": [
                        {"required": ["phone"]},
                        {"required": ["email"]},
                        {"required": ["external_id"]}
                    ]
                },
                "example": lead_example()
            }}
        },
        "responses": responses(vec![
            ("201", json!({
                "description": "A new lead was stored and decided.",
                "headers": {"idempotent-replayed": {"$ref": "#/components/headers/IdempotentReplayed"}},
                "content": {"application/json": {"schema": schema("LeadResult")}}
            })),
            ("200", json!({
                "description": "The event was added to an existing lead and decided (`idempotent-replayed: false`), or the request repeats an earlier `Idempotency-Key` and this is the first answer, unchanged (`idempotent-replayed: true`; the body is not compared).",
                "headers": {"idempotent-replayed": {"$ref": "#/components/headers/IdempotentReplayed"}},
                "content": {"application/json": {"schema": schema("LeadResult")}}
            })),
            ("400", response("BadRequest")),
            ("401", response("Unauthorized")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

fn search_leads() -> Value {
    json!({
        "operationId": "searchLeads",
        "tags": ["leads"],
        "summary": "The account's leads, most recently updated first.",
        "description": "Merged-away leads are not listed.",
        "parameters": [
            {
                "name": "q",
                "in": "query",
                "required": false,
                "description": "A fragment of the name, phone or email to match (`%` and `_` are ignored). Empty means every lead.",
                "schema": {"type": "string"}
            },
            {
                "name": "limit",
                "in": "query",
                "required": false,
                "description": "How many leads at most; values outside 1 to 500 are clamped into it.",
                "schema": {"type": "integer", "format": "int64", "default": 50}
            }
        ],
        "responses": responses(vec![
            ("200", json!({
                "description": "The matching leads.",
                "content": {"application/json": {"schema": schema("LeadList")}}
            })),
            ("400", response("BadRequest")),
            ("401", response("Unauthorized")),
            ("500", response("Internal")),
        ])
    })
}

fn get_lead() -> Value {
    json!({
        "operationId": "getLead",
        "tags": ["leads"],
        "summary": "Everything about a lead.",
        "description": "The ID of a lead merged into another answers with the surviving lead (whose `id` differs from the one asked for). Another account's lead is answered exactly as a lead that does not exist.",
        "parameters": [parameter("LeadId")],
        "responses": responses(vec![
            ("200", json!({
                "description": "The lead.",
                "content": {"application/json": {"schema": schema("LeadRecord")}}
            })),
            ("401", response("Unauthorized")),
            ("404", response("NotFound")),
            ("500", response("Internal")),
        ])
    })
}

fn thread_op(takeover: bool) -> Value {
    let (id, summary, thread) = if takeover {
        (
            "takeOverThread",
            "A person takes the lead's thread over: automation pauses (outcome `paused_human`).",
            "human",
        )
    } else {
        (
            "releaseThread",
            "Give the lead's thread back to automation.",
            "automated",
        )
    };
    json!({
        "operationId": id,
        "tags": ["leads"],
        "summary": summary,
        "description": "The body may be empty. `queue`, when given, moves the thread to that queue. The ID must be the lead's current ID: a lead merged into another is not found here.",
        "parameters": [parameter("LeadId")],
        "requestBody": {
            "required": false,
            "content": {"application/json": {
                "schema": schema("TakeoverInput"),
                "example": {"queue": "events-senior-closers"}
            }}
        },
        "responses": responses(vec![
            ("200", json!({
                "description": "The thread's new state.",
                "content": {"application/json": {
                    "schema": schema("ThreadState"),
                    "example": {"lead_id": "0194c0de-7f3a-7000-8000-000000000001", "thread": thread}
                }}
            })),
            ("400", response("BadRequest")),
            ("401", response("Unauthorized")),
            ("404", response("NotFound")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

/// A thread operation with a JSON body: what the inbox does, for other tools.
fn thread_body_op(
    id: &str,
    summary: &str,
    description: &str,
    input: &str,
    example: Value,
    result: &str,
) -> Value {
    json!({
        "operationId": id,
        "tags": ["threads"],
        "summary": summary,
        "description": description,
        "parameters": [parameter("LeadId")],
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": schema(input), "example": example}}
        },
        "responses": responses(vec![
            ("200", json!({"description": "Done.", "content": {"application/json": {"schema": schema(result)}}})),
            ("400", response("BadRequest")),
            ("401", response("Unauthorized")),
            ("404", response("NotFound")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

fn reply_op() -> Value {
    thread_body_op(
        "replyOnThread",
        "A person's WhatsApp reply: free text inside the 24-hour window, an approved template outside it.",
        "The reply is queued and sent even though the thread is taken over (it is a person's), is written to the transcript, and takes the thread over: automation stays quiet until the thread is released. Free text outside the window is refused (422 at `text`); a template is filled in from the lead (see `GET /v1/leads/{id}/templates`).",
        "ReplyInput",
        json!({"text": "Yes, the beach venue is free that weekend.", "by": "Priya"}),
        "ReplyResult",
    )
}

fn note_op() -> Value {
    thread_body_op(
        "addNote",
        "A note for the team on the thread's trail; never sent to the lead.",
        "`by` names who wrote it (default `api`).",
        "NoteInput",
        json!({"text": "Prefers calls after 6pm", "by": "Priya"}),
        "NoteResult",
    )
}

fn reassign_op() -> Value {
    thread_body_op(
        "reassignThread",
        "Moves the thread to another queue, on the thread's trail.",
        "`queue` is letters, digits, `-`, `_` or `.`, as rules write them in `assign`.",
        "ReassignInput",
        json!({"queue": "events-senior-closers"}),
        "ReassignResult",
    )
}

fn queues_op() -> Value {
    json!({
        "operationId": "listQueues",
        "tags": ["threads"],
        "summary": "The account's queues with members: who is available, each member's load, and the threads waiting.",
        "description": "A member is available when signed in to the inbox, marked available there and active within the account's `idle_minutes`; an agent always is. A load counts the member's open threads in every queue.",
        "responses": responses(vec![
            ("200", json!({"description": "Each queue, by name.", "content": {"application/json": {"schema": schema("QueueList")}}})),
            ("401", response("Unauthorized")),
            ("500", response("Internal")),
        ])
    })
}

fn close_op() -> Value {
    json!({
        "operationId": "closeThread",
        "tags": ["threads"],
        "summary": "The thread is done: its conversation ends, it leaves its member's load, and waiting threads may go to them.",
        "description": "Works on any thread with a conversation open (whatever its queue, one without members too) or waiting or assigned in a queue; else 409. The next handoff message opens a new conversation, and a new message from the lead puts the thread back in its queue.",
        "parameters": [parameter("LeadId")],
        "responses": responses(vec![
            ("200", json!({"description": "Closed.", "content": {"application/json": {"schema": schema("CloseResult"), "example": {"lead_id": "0194c0de-7f3a-7000-8000-000000000001", "open": false, "closed_at": "2027-01-10T10:05:00.000000Z", "queue_state": "done"}}}})),
            ("401", response("Unauthorized")),
            ("404", response("NotFound")),
            ("409", response("Conflict")),
            ("500", response("Internal")),
        ])
    })
}

fn templates_op() -> Value {
    json!({
        "operationId": "threadTemplates",
        "tags": ["threads"],
        "summary": "The approved templates filled in for the lead, and whether free text can be sent now.",
        "parameters": [parameter("LeadId")],
        "responses": responses(vec![
            ("200", json!({"description": "Every approved template, with its preview or why it cannot be filled.", "content": {"application/json": {"schema": schema("TemplateChoices")}}})),
            ("401", response("Unauthorized")),
            ("404", response("NotFound")),
            ("500", response("Internal")),
        ])
    })
}

fn threads_op() -> Value {
    let filter = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}});
    json!({
        "operationId": "listThreads",
        "tags": ["threads"],
        "summary": "An account's threads, newest activity first.",
        "parameters": [
            filter("queue", "Only this queue."),
            {"name": "state", "in": "query", "required": false, "description": "`automated`, `human` (taken over), `blocked` (the last decision's handoff was blocked), `failed` (a WhatsApp message failed for good) or `waiting` (in a queue, nobody has it yet).", "schema": {"type": "string", "enum": ["automated", "human", "blocked", "failed", "waiting"]}},
            filter("playbook", "Only this playbook."),
            filter("q", "A fragment of the name or phone."),
            {"name": "limit", "in": "query", "required": false, "description": "How many threads at most; values outside 1 to 500 are clamped into it.", "schema": {"type": "integer", "format": "int64", "default": 100}}
        ],
        "responses": responses(vec![
            ("200", json!({"description": "The threads.", "content": {"application/json": {"schema": schema("ThreadList")}}})),
            ("401", response("Unauthorized")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

fn dry_run() -> Value {
    let mut example = lead_example();
    example["now"] = json!("2027-01-10T10:00:00+05:30");
    example["window"] = json!("open");
    example["human"] = json!(false);
    json!({
        "operationId": "dryRun",
        "tags": ["leads"],
        "summary": "The decision and trace for a lead; nothing is stored or sent.",
        "description": "The body is a `POST /v1/leads` body plus `now`, `window` and `human`, which set the situation (default: now, window closed, no person on the thread). Unlike `POST /v1/leads`, no identity is required and `channel`, `email` and the text lengths are not checked; `phone` is still normalized.",
        "requestBody": {
            "required": true,
            "content": {"application/json": {
                "schema": schema("DryRunInput"),
                "example": example
            }}
        },
        "responses": responses(vec![
            ("200", json!({
                "description": "What the playbook decides, and why.",
                "content": {"application/json": {"schema": schema("DryRunResult")}}
            })),
            ("400", response("BadRequest")),
            ("401", response("Unauthorized")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

fn rulesets() -> Value {
    json!({
        "operationId": "listRulesets",
        "tags": ["rules"],
        "summary": "The ruleset in force, the playbooks this account may use, and the last reload.",
        "responses": responses(vec![
            ("200", json!({
                "description": "The rules in force.",
                "content": {"application/json": {"schema": schema("Rulesets")}}
            })),
            ("401", response("Unauthorized")),
            ("500", response("Internal")),
        ])
    })
}

fn reload() -> Value {
    json!({
        "operationId": "reloadRules",
        "tags": ["rules"],
        "summary": "Load the rules from disk and, when they check, put them in force.",
        "description": "Any request body is ignored. Rules that do not check never replace the rules in force. (The server also reloads on its own when a rules or template file changes, and on SIGHUP.) Rules are global: any account's key reloads them for every account.",
        "responses": responses(vec![
            ("200", json!({
                "description": "The rules checked and are in force.",
                "content": {"application/json": {"schema": schema("ReloadResult")}}
            })),
            ("422", json!({
                "description": "The rules on disk do not check; the previous ruleset stays in force. The body is a reload result (with `ok: false` and the diagnostics), not an error body.",
                "content": {"application/json": {"schema": schema("ReloadResult")}}
            })),
            ("401", response("Unauthorized")),
            ("500", response("Internal")),
        ])
    })
}

fn meta_verify() -> Value {
    let query = |name: &str, description: &str| {
        json!({
            "name": name,
            "in": "query",
            "required": true,
            "description": description,
            "schema": {"type": "string"}
        })
    };
    json!({
        "operationId": "verifyMetaWebhook",
        "tags": ["webhooks"],
        "summary": "Meta's webhook subscription check.",
        "security": [],
        "parameters": [
            parameter("Account"),
            query("hub.mode", "Must be `subscribe`."),
            query("hub.verify_token", "Must equal the account's configured Meta verify token."),
            query("hub.challenge", "Echoed back on success."),
        ],
        "responses": responses(vec![
            ("200", json!({
                "description": "Verified: the body is `hub.challenge`, as given.",
                "content": {"text/plain": {"schema": {"type": "string"}}}
            })),
            ("403", error_response(
                "Not verified: a parameter is missing or wrong, or the account has no verify token configured (code `forbidden`).",
                "forbidden",
                "verification failed: `hub.mode` must be `subscribe` and `hub.verify_token` the account's `meta_verify_token`",
                None,
            )),
            ("404", response("NotFound")),
        ])
    })
}

fn meta_events() -> Value {
    json!({
        "operationId": "receiveMetaWebhook",
        "tags": ["webhooks"],
        "summary": "Signed WhatsApp, Instagram and lead-ad (`page`) webhook events.",
        "description": "The signature is checked over the raw body against each of the account's Meta app secrets. Readable events are stored (a redelivered event, by its source ID, is stored once) and then acknowledged; items that cannot be read are counted in `rejected` and skipped. Text beyond the input policy (control characters, over-long values) is cleaned rather than refused, since Meta would redeliver a refused event. The body must be sent as JSON, as Meta does.",
        "security": [],
        "parameters": [parameter("Account"), parameter("XHubSignature256")],
        "requestBody": {
            "required": true,
            "content": {"application/json": {"schema": schema("MetaWebhook")}}
        },
        "responses": responses(vec![
            ("200", json!({
                "description": "Stored.",
                "content": {"application/json": {
                    "schema": schema("MetaReceipt"),
                    "example": {"received": 1, "new": 1, "rejected": 0}
                }}
            })),
            ("400", response("BadRequest")),
            ("401", response("BadSignature")),
            ("404", response("NotFound")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("500", response("Internal")),
        ])
    })
}

fn form() -> Value {
    json!({
        "operationId": "receiveForm",
        "tags": ["webhooks"],
        "summary": "A web form submission, mapped onto a lead by the form's configuration.",
        "description": "A body sent as `application/json` is read as a JSON object of field -> answer; one sent as `application/x-www-form-urlencoded` as form pairs (a repeated name gives a list of answers; text that is not UTF-8 once percent-decoded is refused with 400); any other content type is refused with 415. The mapped lead is checked against the input policy before it is stored (422 at the field). The submission is stored and acknowledged; a background worker makes it a lead. A retry is recognised by its `Idempotency-Key` when sent, else by the exact body; it is answered 202 with `duplicate: true`. The same `Idempotency-Key` with a different submission is refused with 422 (`idempotency_key_reused`) and nothing is stored.",
        "security": [],
        "parameters": [
            parameter("Account"),
            {
                "name": "form",
                "in": "path",
                "required": true,
                "description": "The form's name in the account's configuration.",
                "schema": {"type": "string"}
            },
            {
                "name": "x-signature-256",
                "in": "header",
                "required": false,
                "description": "Required when the form has a secret: the HMAC-SHA256 of the raw body with the secret, as `sha256=<hex>` or bare hex. The header's name is the form's `signature_header` (default `x-signature-256`).",
                "schema": {"type": "string"}
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": false,
                "description": "The form tool's ID for the submission; a second submission with the same key for the same form is stored once. No `idempotent-replayed` header is sent back: see `duplicate`.",
                "schema": {"type": "string"}
            }
        ],
        "requestBody": {
            "required": true,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
                    "example": {"your_name": "Meera Iyer", "mobile": "098200 55555", "city": "Goa", "whatsapp_me": "yes"}
                },
                "application/json": {
                    "schema": schema("FormSubmission"),
                    "example": {"your_name": "Meera Iyer", "mobile": "098200 55555", "city": "Goa", "whatsapp_me": true}
                }
            }
        },
        "responses": responses(vec![
            ("202", json!({
                "description": "Stored for processing.",
                "content": {"application/json": {"schema": schema("WebhookAccepted")}}
            })),
            ("400", response("BadRequest")),
            ("401", response("BadSignature")),
            ("404", response("NotFound")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

fn voice() -> Value {
    json!({
        "operationId": "receiveCallReport",
        "tags": ["webhooks"],
        "summary": "A voice agent's call report.",
        "description": "Authenticated with the account's API key; `{account}` must be that key's account (another account answers 404). The report is read strictly, stored (a report with the same `call_id` is stored once) and acknowledged; a background worker makes it a lead. Errors in the body are answered 400 with the place (a line and column, or a field path such as `opt_in.evidence`) at the start of `message`, not in `at`; an unreadable caller number is 422 at `from`, text beyond the input policy 422 at its field, and a `call_id` stored before with a different report 422 (`idempotency_key_reused`, at `call_id`). The body must be sent as JSON.",
        "parameters": [parameter("Account")],
        "requestBody": {
            "required": true,
            "content": {"application/json": {
                "schema": schema("CallReport"),
                "example": call_report_example()
            }}
        },
        "responses": responses(vec![
            ("202", json!({
                "description": "Stored for processing.",
                "content": {"application/json": {"schema": schema("WebhookAccepted")}}
            })),
            ("400", response("BadRequest")),
            ("401", response("Unauthorized")),
            ("404", response("NotFound")),
            ("413", response("PayloadTooLarge")),
            ("415", response("UnsupportedMediaType")),
            ("422", response("Unprocessable")),
            ("500", response("Internal")),
        ])
    })
}

fn parameters() -> Value {
    json!({
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Makes a retry safe: a second request with the same key (for the same account) is answered with the first answer and changes nothing (`idempotent-replayed: true`). The body is not compared. 1 to 255 visible ASCII characters; surrounding spaces are trimmed.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}
        },
        "LeadId": {
            "name": "id",
            "in": "path",
            "required": true,
            "description": "The lead's ID (a UUID v7, as `lead_id` in the intake answer).",
            "schema": {"type": "string"}
        },
        "Account": {
            "name": "account",
            "in": "path",
            "required": true,
            "description": "The account's ID in the configuration.",
            "schema": {"type": "string"}
        },
        "XHubSignature256": {
            "name": "X-Hub-Signature-256",
            "in": "header",
            "required": true,
            "description": "`sha256=<hex>`: the HMAC-SHA256 of the raw body with the Meta app secret. Missing or wrong: 401 `bad_signature`.",
            "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"}
        }
    })
}

fn error_response(description: &str, code: &str, message: &str, at: Option<&str>) -> Value {
    let mut example = json!({"error": {"code": code, "message": message}});
    if let Some(at) = at {
        example["error"]["at"] = json!(at);
    }
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema("Error"), "example": example}}
    })
}

fn component_responses() -> Value {
    let mut unauthorized = error_response(
        "No API key, or not one of an account's keys (code `unauthorized`).",
        "unauthorized",
        "send a valid API key as `Authorization: Bearer <key>`",
        None,
    );
    unauthorized["headers"] =
        json!({"WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}});
    let mut bad_signature = error_response(
        "The signature header is missing or does not match the body (code `bad_signature`).",
        "bad_signature",
        "`X-Hub-Signature-256` does not match the body",
        None,
    );
    bad_signature["headers"] =
        json!({"WWW-Authenticate": {"$ref": "#/components/headers/WWWAuthenticate"}});
    json!({
        "BadRequest": error_response(
            "The body is not JSON of the right shape, or a header is malformed (code `bad_request`). `at` names the field path, when there is one.",
            "bad_request",
            "the body is not a valid lead: invalid type: string \"city=Goa\", expected a map at line 1 column 47",
            Some("fields"),
        ),
        "Unauthorized": unauthorized,
        "BadSignature": bad_signature,
        "Conflict": error_response(
            "The thread is not in a state for this (code `conflict`).",
            "conflict",
            "the thread of `0194c0de-7f3a-7000-8000-000000000001` is not open in a queue (it is done already, or its queue has no members)",
            None,
        ),
        "NotFound": error_response(
            "No such lead, account or form for this caller (code `not_found`).",
            "not_found",
            "no lead `0194c0de-7f3a-7000-8000-000000000001`",
            None,
        ),
        "PayloadTooLarge": error_response(
            "The body is larger than 1 MiB (code `too_large`).",
            "too_large",
            "the request body is larger than 1 MiB",
            None,
        ),
        "UnsupportedMediaType": error_response(
            "The body is declared as something other than JSON, or not declared (code `unsupported_media_type`).",
            "unsupported_media_type",
            "the body is sent as `application/x-www-form-urlencoded`; send JSON with `Content-Type: application/json`",
            Some("Content-Type"),
        ),
        "Unprocessable": error_response(
            "Well-formed JSON with a value that is not acceptable (code `invalid`; `at` names the field), or an idempotency key, form submission ID or `call_id` already used for a different request (code `idempotency_key_reused`; nothing was done).",
            "invalid",
            "`phone` cannot be read as a phone number: not a number",
            Some("phone"),
        ),
        "Internal": error_response(
            "Something failed on the server (the details are logged, not sent); the request was not applied (code `internal`).",
            "internal",
            "something went wrong on our side; the request was not applied",
            None,
        ),
        "Timeout": error_response(
            "The request took longer than 10 seconds and was not applied (code `timeout`).",
            "timeout",
            "the request took longer than 10 seconds and was not applied",
            None,
        )
    })
}

/// Every request member of `POST /v1/leads` ([`super::leads::LeadInput`]).
fn lead_input_properties() -> Map<String, Value> {
    let text = |max: usize, description: &str| {
        json!({
            "type": ["string", "null"],
            "maxLength": max,
            "description": format!("{description} Trimmed; empty is the same as absent; at most {max} characters, no control characters except newline and tab (checked by `POST /v1/leads` only).")
        })
    };
    let entries = vec![
        ("name", text(200, "The lead's full name.")),
        (
            "first_name",
            text(100, "The first name, when it is known apart from `name`."),
        ),
        (
            "phone",
            text(
                40,
                "The phone number in any common format; stored in E.164, read with the account's default region when it has no country code.",
            ),
        ),
        ("email", text(254, "The email address; stored lowercased.")),
        ("language", text(35, "The lead's language (a BCP 47 tag).")),
        (
            "channel",
            json!({
                "type": ["string", "null"],
                "maxLength": 32,
                "description": "The channel the lead came in by, case-insensitive; default `api`. `POST /v1/leads` answers 422 for any other value.",
                "examples": channels()
            }),
        ),
        (
            "intent",
            text(100, "What the lead wants, as the playbook names intents."),
        ),
        (
            "playbook",
            nullable_text("The playbook that decides the lead; must be one the account may use."),
        ),
        (
            "consent",
            json!({"oneOf": [schema("ConsentInput"), {"type": "null"}]}),
        ),
        (
            "fields",
            json!({
                "type": "object",
                "description": "Qualification fields by playbook field name; coerced to the declared types when the rules read them. On an existing lead, a field given replaces the stored one and `null` removes it.",
                "additionalProperties": true
            }),
        ),
        (
            "tags",
            json!({"type": "array", "items": {"type": "string"}, "description": "Added to the lead's tags."}),
        ),
        (
            "transcript",
            json!({"type": "array", "items": schema("TranscriptMessage"), "description": "Earlier messages, added to the lead's transcript."}),
        ),
        (
            "answers",
            json!({"type": "array", "maxItems": 200, "items": schema("Answer"), "description": "Answers to questions no field is declared for, in the order asked; a question answered again keeps its place with the new answer."}),
        ),
        (
            "external_id",
            text(200, "The lead's ID in the system that sent it (a CRM, a form tool); an identity like phone and email."),
        ),
        (
            "form",
            nullable_text("The form it came from, for the account's routing by form."),
        ),
        (
            "source",
            nullable_text("Free-form origin (campaign, site), for the account's routing by source."),
        ),
    ];
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn lead_input() -> Value {
    json!({
        "type": "object",
        "description": "A lead as the API takes it. Every member may be left out; `POST /v1/leads` needs at least one of `phone`, `email` and `external_id` (else 422 at `phone`). Unknown members are rejected (400).",
        "properties": lead_input_properties(),
        "additionalProperties": false
    })
}

fn dry_run_input() -> Value {
    let mut properties = lead_input_properties();
    properties.insert(
        "now".into(),
        json!({"type": ["string", "null"], "format": "date-time", "description": "The time to decide at (RFC 3339); default: now."}),
    );
    properties.insert(
        "window".into(),
        json!({"type": ["string", "null"], "enum": ["open", "closed", null], "description": "Whether the WhatsApp 24-hour window is open; default `closed`."}),
    );
    properties.insert(
        "human".into(),
        json!({"type": ["boolean", "null"], "description": "Whether a person has taken the thread over; default `false`."}),
    );
    properties.insert(
        "event".into(),
        json!({"type": ["string", "null"], "enum": ["lead", "message", null], "description": "What is decided: an upstream lead, or a message the lead wrote on WhatsApp (its latest transcript line `from: lead`); default `lead`."}),
    );
    properties.insert(
        "thread".into(),
        json!({
            "type": ["object", "null"],
            "description": "The lead's thread; default: none open. `opened` defaults to `now` when `open` is true.",
            "additionalProperties": false,
            "properties": {
                "open": {"type": "boolean"},
                "opened": {"type": ["string", "null"], "format": "date-time"},
                "closed": {"type": ["string", "null"], "format": "date-time"},
                "asked": {"type": "array", "items": {"type": "string"}, "description": "Fields `ask` already reported in the open thread."}
            }
        }),
    );
    properties.insert(
        "marketing".into(),
        json!({"type": ["string", "null"], "enum": ["subscribed", "opted_out", null], "description": "The lead's marketing preference; default `subscribed`."}),
    );
    json!({
        "type": "object",
        "description": "A `LeadInput` plus the situation to decide it in. `now`, `window`, `human`, `event`, `thread` and `marketing` of the wrong type or value are answered 422 at that member.",
        "properties": properties,
        "additionalProperties": false
    })
}

fn lead_example() -> Value {
    json!({
        "name": "Aisha Khan",
        "phone": "+91 98123 45678",
        "channel": "instagram",
        "intent": "event_enquiry",
        "playbook": "events",
        "consent": {"whatsapp": true, "evidence": "Ticked 'Message me on WhatsApp' in the Instagram lead form"},
        "fields": {"city": "Goa", "event_date": "2027-03-14", "guests": 120},
        "transcript": [
            {"channel": "instagram", "from": "lead", "text": "Hi! Planning a wedding in Goa on March 14, around 120 guests.", "at": "2026-11-20T04:10:00Z"}
        ]
    })
}

fn call_report_example() -> Value {
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
        "extracted": {"name": "Gurpreet Kaur", "intent": "event_enquiry", "city": "Amritsar", "guests": 800},
        "opt_in": {"whatsapp": true, "spoken_at": "2027-01-10T04:13:55Z", "evidence": "Yes, WhatsApp is best."}
    })
}

fn schemas() -> Value {
    let mut map = Map::new();
    let mut add = |name: &str, value: Value| {
        map.insert(name.to_string(), value);
    };
    add(
        "Error",
        json!({
            "type": "object",
            "required": ["error"],
            "additionalProperties": false,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": false,
                    "properties": {
                        "code": schema("ErrorCode"),
                        "message": {"type": "string", "description": "What went wrong, for a person."},
                        "at": {"type": "string", "description": "The field (a path such as `transcript[0].at`) or header at fault, when there is one."}
                    }
                }
            }
        }),
    );
    add("ErrorCode", error_codes());
    add(
        "Readiness",
        json!({
            "type": "object",
            "required": ["database", "rules"],
            "additionalProperties": false,
            "properties": {
                "database": {"type": "boolean", "description": "The database answers."},
                "rules": {"type": "boolean", "description": "A ruleset is loaded."}
            }
        }),
    );
    add("LeadInput", lead_input());
    add("DryRunInput", dry_run_input());
    let by = json!({"type": ["string", "null"], "maxLength": 80, "pattern": LINE, "description": "Who does it, as the trail shows it (default `api`): one line, no control characters."});
    add(
        "ReplyInput",
        json!({
            "type": "object",
            "description": "Exactly one of `text` and `template`; `by` (a person) or `agent` (an AI agent replying as itself), not both.",
            "additionalProperties": false,
            "properties": {
                "text": {"type": ["string", "null"], "maxLength": 4096, "pattern": TEXT, "description": "Free text; only inside the 24-hour window. Line breaks and tabs, no other control characters."},
                "template": {"type": ["string", "null"], "description": "An approved template's name, filled in from the lead."},
                "by": by,
                "agent": {"type": ["string", "null"], "description": "An endpoint of the account that is a queue member (`agent:<endpoint>`) and has the thread: the reply goes out as the agent and the thread stays automated. Answered 409 when the thread is not the agent's (a person took it over, or it is with someone else)."}
            }
        }),
    );
    add(
        "NoteInput",
        json!({
            "type": "object",
            "required": ["text"],
            "additionalProperties": false,
            "properties": {"text": {"type": "string", "minLength": 1, "maxLength": 4096, "pattern": TEXT}, "by": by}
        }),
    );
    add(
        "ReassignInput",
        json!({
            "type": "object",
            "required": ["queue"],
            "additionalProperties": false,
            "properties": {"queue": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "by": by}
        }),
    );
    add(
        "ReplyResult",
        json!({
            "type": "object",
            "required": ["lead_id", "outbox_id", "thread", "message"],
            "additionalProperties": false,
            "properties": {
                "lead_id": {"type": "string"},
                "outbox_id": {"type": "string", "description": "The queued message (see the lead's `outbox`)."},
                "thread": {"type": "string", "enum": ["human", "automated"], "description": "`automated` for an agent's reply: the thread stays with automation."},
                "message": schema("WhatsappOutboxPayload")
            }
        }),
    );
    add(
        "NoteResult",
        json!({
            "type": "object",
            "required": ["lead_id", "note", "by"],
            "additionalProperties": false,
            "properties": {"lead_id": {"type": "string"}, "note": {"type": "string"}, "by": {"type": "string"}}
        }),
    );
    add(
        "CloseResult",
        json!({
            "type": "object",
            "required": ["lead_id", "open", "closed_at", "queue_state"],
            "additionalProperties": false,
            "properties": {
                "lead_id": {"type": "string"},
                "open": {"type": "boolean", "const": false},
                "closed_at": {"type": ["string", "null"], "format": "date-time", "description": "When the conversation closed; null when none was open (only the queue entry ended)."},
                "queue_state": {"type": ["string", "null"], "enum": ["done", null], "description": "`done` in a queue with members; null in a queue without."}
            }
        }),
    );
    add(
        "QueueList",
        json!({
            "type": "object",
            "required": ["queues"],
            "additionalProperties": false,
            "properties": {"queues": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "strategy", "capacity", "open", "has_hours", "escalate_after", "escalate_to", "members", "available", "waiting"],
                "additionalProperties": false,
                "properties": {
                    "name": {"type": "string"},
                    "strategy": {"type": "string", "enum": ["round_robin", "least_loaded"]},
                    "capacity": {"type": "integer", "minimum": 1, "description": "Open threads a member may hold before the queue passes them over."},
                    "open": {"type": "boolean", "description": "Within the queue's business hours now (its own, else its playbook's). Outside them nothing is assigned and the escalation clock stands still."},
                    "has_hours": {"type": "boolean"},
                    "escalate_after": nullable_text("Business time a thread may wait without a human reply or takeover, as `15m`."),
                    "escalate_to": nullable_text("The queue it then moves to."),
                    "available": {"type": "integer", "description": "Members who can be given a thread now."},
                    "members": {"type": "array", "items": {
                        "type": "object",
                        "required": ["key", "name", "available", "load", "member", "status"],
                        "additionalProperties": false,
                        "properties": {
                            "key": {"type": "string", "description": "The operator's ID, or `agent:<endpoint>`."},
                            "name": {"type": "string"},
                            "member": {"type": "string", "description": "As configured: the email, or the agent's endpoint."},
                            "available": {"type": "boolean"},
                            "load": {"type": "integer", "description": "Open threads given to them, in every queue."},
                            "status": {"type": "string", "enum": ["available", "idle", "away", "signed_out", "unknown", "agent"]}
                        }
                    }},
                    "waiting": {"type": "array", "description": "The threads waiting, oldest first (at most 100; `handoff_threads_waiting` counts them all).", "items": {
                        "type": "object",
                        "required": ["lead_id", "name", "queued_at"],
                        "additionalProperties": false,
                        "properties": {"lead_id": {"type": "string"}, "name": nullable("string"), "queued_at": {"type": "string", "format": "date-time"}}
                    }}
                }
            }}}
        }),
    );
    add(
        "ReassignResult",
        json!({
            "type": "object",
            "required": ["lead_id", "queue"],
            "additionalProperties": false,
            "properties": {"lead_id": {"type": "string"}, "queue": {"type": "string"}}
        }),
    );
    add(
        "TemplateChoices",
        json!({
            "type": "object",
            "required": ["lead_id", "window_open", "window_closes_at", "templates"],
            "additionalProperties": false,
            "properties": {
                "lead_id": {"type": "string"},
                "window_open": {"type": "boolean"},
                "window_closes_at": {"type": ["string", "null"], "format": "date-time"},
                "templates": {"type": "array", "items": {
                    "type": "object",
                    "required": ["name", "language", "params", "preview", "error"],
                    "additionalProperties": false,
                    "properties": {
                        "name": {"type": "string"},
                        "language": nullable("string"),
                        "params": {"type": "array", "items": {"type": "string"}},
                        "preview": nullable_text("The message as the lead would read it."),
                        "error": nullable_text("Why the template cannot be filled for this lead.")
                    }
                }}
            }
        }),
    );
    add(
        "ThreadList",
        json!({
            "type": "object",
            "required": ["threads"],
            "additionalProperties": false,
            "properties": {"threads": {"type": "array", "items": {
                "type": "object",
                "required": ["lead_id", "name", "phone", "channel", "playbook", "state", "queue", "flag", "taken_by", "queue_state", "queued_at", "assignee", "outcome", "last_inbound_at", "last_text", "activity_at", "unread"],
                "additionalProperties": false,
                "properties": {
                    "lead_id": {"type": "string"},
                    "name": nullable("string"), "phone": nullable("string"), "channel": nullable("string"), "playbook": nullable("string"),
                    "state": {"type": "string", "enum": ["automated", "human"]},
                    "queue": nullable("string"),
                    "flag": nullable_text("`delivery_failed` when a WhatsApp message failed for good."),
                    "taken_by": nullable_text("Who took the thread over."),
                    "queue_state": {"type": ["string", "null"], "enum": ["waiting", "assigned", "done", null], "description": "In a queue with members: `waiting` (nobody has it yet), `assigned`, or `done` (closed; a new message from the lead puts it back). Null in a queue without members."},
                    "queued_at": {"type": ["string", "null"], "format": "date-time", "description": "When it entered its queue: the escalation clock starts here."},
                    "assignee": nullable_text("The member who has it: an operator's name, or an agent's endpoint."),
                    "outcome": nullable_text("The last decision's handoff outcome."),
                    "last_inbound_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_text": nullable_text("The latest message of the transcript."),
                    "activity_at": {"type": "string", "format": "date-time"},
                    "unread": {"type": "boolean", "description": "Always true through the API (no reader); the inbox tracks each operator."}
                }
            }}}
        }),
    );
    add(
        "ConsentInput",
        json!({
            "type": "object",
            "description": "A WhatsApp opt-in. `whatsapp: false` records nothing.",
            "required": ["whatsapp"],
            "additionalProperties": false,
            "properties": {
                "whatsapp": {"type": "boolean"},
                "evidence": nullable_text("How it was given: the checkbox text, the words spoken."),
                "at": {"type": ["string", "null"], "format": "date-time", "description": "When it was given; default: when received."}
            }
        }),
    );
    add(
        "TranscriptMessage",
        json!({
            "type": "object",
            "description": "One message, on any channel.",
            "required": ["channel", "from", "text", "at"],
            "additionalProperties": false,
            "properties": {
                "channel": {"type": "string"},
                "from": {"type": "string", "description": "`lead`, `business`, `operator:<name>`, or `agent:<endpoint>` for an AI agent's reply."},
                "text": {"type": "string"},
                "at": {"type": "string", "format": "date-time"}
            }
        }),
    );
    add(
        "Answer",
        json!({
            "type": "object",
            "description": "An answer to a form or lead-ad question no field is declared for.",
            "required": ["question", "answer"],
            "additionalProperties": false,
            "properties": {
                "question": {"type": "string", "maxLength": 300},
                "answer": {"type": "string", "maxLength": 2000}
            }
        }),
    );
    add(
        "TakeoverInput",
        json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "queue": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9._-]{1,64}$", "description": "The queue the thread moves to; absent keeps the current queue."}
            }
        }),
    );
    add(
        "ThreadState",
        json!({
            "type": "object",
            "required": ["lead_id", "thread"],
            "additionalProperties": false,
            "properties": {
                "lead_id": {"type": "string", "description": "The ID from the path."},
                "thread": {"type": "string", "enum": ["human", "automated"]}
            }
        }),
    );
    add(
        "LeadResult",
        json!({
            "type": "object",
            "description": "The answer to `POST /v1/leads`, also replayed for a repeated `Idempotency-Key`.",
            "required": ["created", "decision", "lead_id", "decision_id"],
            "additionalProperties": false,
            "properties": {
                "created": {"type": "boolean", "description": "Whether the event made a new lead (else it reached an existing one)."},
                "decision": {"oneOf": [schema("Decision"), schema("DecisionError")]},
                "lead_id": {"type": "string", "description": "The lead (the survivor, when leads merged)."},
                "decision_id": {"type": "string"}
            }
        }),
    );
    add(
        "DecisionError",
        json!({
            "type": "object",
            "description": "In place of a decision when the lead's playbook was removed by a reload while the request was in flight.",
            "required": ["error"],
            "additionalProperties": false,
            "properties": {"error": {"type": "string"}}
        }),
    );
    add(
        "Decision",
        json!({
            "type": "object",
            "description": "What the playbook decided, and what the handoff would send.",
            "required": ["playbook", "event", "ruleset", "rules", "otherwise", "actions", "warnings"],
            "additionalProperties": false,
            "properties": {
                "playbook": {"type": "string"},
                "event": {"type": "string", "enum": ["lead", "message"], "description": "What was decided: an upstream lead event, or a message the lead wrote on WhatsApp."},
                "ruleset": {"type": "string", "description": "The hash (SHA-256, hex) of the ruleset that decided."},
                "rules": {"type": "array", "items": {"type": "string"}, "description": "Every rule that fired, in order."},
                "otherwise": {"type": "boolean", "description": "Whether `otherwise` applied (no rule fired)."},
                "actions": schema("Actions"),
                "handoff": schema("HandoffDecision"),
                "warnings": {"type": "array", "items": {"type": "string"}, "description": "Values that could not be read as their type, what could not be rendered, and similar."}
            }
        }),
    );
    add(
        "Actions",
        json!({
            "type": "object",
            "description": "The actions of a decision, merged over the rules that fired. Optional members are left out when unset.",
            "required": ["tags", "notify", "ask"],
            "additionalProperties": false,
            "properties": {
                "handoff": schema("HandoffAction"),
                "assign": {"type": "string", "description": "The queue to assign the lead to."},
                "takeover": {"type": "string", "description": "The queue whose people take the thread over."},
                "tags": {"type": "array", "items": {"type": "string"}},
                "notify": {"type": "array", "items": {"type": "string"}, "description": "Endpoints to notify."},
                "ask": {"type": "array", "items": {"type": "string"}, "description": "Fields to ask the lead for."},
                "drop": {"type": "string", "description": "Why the lead is dropped."}
            }
        }),
    );
    add(
        "HandoffAction",
        json!({
            "type": "object",
            "description": "`handoff whatsapp { open ... template ... }` as the rules wrote it.",
            "required": ["open", "template", "rule"],
            "additionalProperties": false,
            "properties": {
                "open": nullable_text("The template file for a session message."),
                "template": nullable_text("The approved template."),
                "rule": nullable_text("The rule that asked for the handoff (`null` for `otherwise`).")
            }
        }),
    );
    add(
        "HandoffOutcome",
        json!({
            "type": "string",
            "description": "How the WhatsApp handoff resolves: a session message (window open), an approved template (window closed), or nothing sent because there is no opt-in, because a person has the thread, because the lead's thread is already open (one opener per conversation), because the template is a marketing one and the lead opted out of marketing messages, or because the window is closed and there is no template.",
            "enum": ["session", "template", "blocked_no_opt_in", "blocked_window_closed", "paused_human", "already_open", "blocked_marketing_opt_out"]
        }),
    );
    add(
        "HandoffDecision",
        json!({
            "type": "object",
            "description": "The WhatsApp handoff, rendered. Optional members are left out when unset.",
            "required": ["outcome"],
            "additionalProperties": false,
            "properties": {
                "outcome": schema("HandoffOutcome"),
                "open": {"type": "string", "description": "The template file rendered for a session message."},
                "template": {"type": "string", "description": "The approved template sent (or kept as the fallback)."},
                "message": {"type": "string", "description": "The session text, or the template's preview: what the buyer would read."},
                "approved": schema("RenderedTemplate"),
                "error": {"type": "string", "description": "Why the message could not be rendered; nothing is sent."}
            }
        }),
    );
    add(
        "RenderedTemplate",
        json!({
            "type": "object",
            "description": "An approved template with its parameters in order, and its preview.",
            "required": ["name", "language", "params", "preview"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string"},
                "language": {"type": "string"},
                "params": {"type": "array", "items": {"type": "string"}},
                "preview": {"type": "string"}
            }
        }),
    );
    add(
        "Trace",
        json!({
            "type": "object",
            "description": "Why the decision is what it is.",
            "required": ["rules", "stopped_by", "not_reached", "skipped_for_intent", "otherwise"],
            "additionalProperties": false,
            "properties": {
                "rules": {"type": "array", "items": schema("RuleTrace"), "description": "The rules tried, in order."},
                "stopped_by": nullable_text("The rule that stopped evaluation (fired without `continue`)."),
                "not_reached": {"type": "integer", "minimum": 0, "description": "Rules after the stop that were not tried."},
                "skipped_for_intent": {"type": "integer", "minimum": 0, "description": "Rules not tried because they test for other intents."},
                "otherwise": {"type": "boolean"}
            }
        }),
    );
    add(
        "RuleTrace",
        json!({
            "type": "object",
            "required": ["rule", "line", "result", "tests"],
            "additionalProperties": false,
            "properties": {
                "rule": {"type": "string"},
                "line": {"type": "integer", "minimum": 1, "description": "The rule's line in its rules file."},
                "result": {"type": "string", "enum": ["fired", "no_match"]},
                "tests": {"type": "array", "items": schema("TestTrace")}
            }
        }),
    );
    add(
        "TestTrace",
        json!({
            "type": "object",
            "required": ["test", "value", "result"],
            "additionalProperties": false,
            "properties": {
                "test": {"type": "string", "description": "The test as written."},
                "value": nullable_text("The value the test saw, as a person reads it (`not set` when the lead has none); `null` when the test was not run."),
                "result": {"type": ["boolean", "null"], "description": "`null` when an earlier test already decided the rule."}
            }
        }),
    );
    add(
        "DryRunResult",
        json!({
            "type": "object",
            "required": ["decision", "trace"],
            "additionalProperties": false,
            "properties": {"decision": schema("Decision"), "trace": schema("Trace")}
        }),
    );
    add(
        "LeadList",
        json!({
            "type": "object",
            "required": ["leads"],
            "additionalProperties": false,
            "properties": {"leads": {"type": "array", "items": schema("LeadSummary")}}
        }),
    );
    add(
        "LeadSummary",
        json!({
            "type": "object",
            "required": ["id", "name", "phone", "email", "channel", "intent", "playbook", "updated_at"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string"},
                "name": nullable("string"),
                "phone": nullable("string"),
                "email": nullable("string"),
                "channel": nullable("string"),
                "intent": nullable("string"),
                "playbook": nullable("string"),
                "updated_at": {"type": "string", "format": "date-time"}
            }
        }),
    );
    add(
        "LeadRecord",
        json!({
            "type": "object",
            "description": "Everything stored about a lead.",
            "required": ["id", "created_at", "updated_at", "name", "first_name", "phone", "email", "language", "channel", "intent", "playbook", "fields", "tags", "answers", "identities", "consents", "marketing_opt_out", "transcript", "thread", "decisions", "outbox"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string"},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
                "name": nullable("string"),
                "first_name": nullable("string"),
                "phone": nullable_text("E.164."),
                "email": nullable("string"),
                "language": nullable("string"),
                "channel": nullable_text("The channel the lead first came in by."),
                "intent": nullable("string"),
                "playbook": nullable_text("The playbook that first decided the lead."),
                "fields": {"type": "object", "additionalProperties": true},
                "tags": {"type": "array", "items": {"type": "string"}},
                "answers": {"type": "array", "items": schema("Answer"), "description": "Form and lead-ad answers no field is declared for, in the order asked."},
                "marketing_opt_out": {"type": "boolean", "description": "The lead's WhatsApp user stopped marketing messages (Meta's `user_preferences`, or send error 131050); marketing templates are not sent."},
                "identities": {"type": "array", "items": schema("Identity")},
                "consents": {"type": "array", "items": schema("ConsentRecord"), "description": "Oldest first; the latest WhatsApp one is in force."},
                "transcript": {"type": "array", "items": schema("TranscriptMessage"), "description": "Oldest first."},
                "thread": {"oneOf": [schema("Thread"), {"type": "null"}]},
                "decisions": {"type": "array", "items": schema("StoredDecision"), "description": "Oldest first."},
                "outbox": {"type": "array", "items": schema("OutboxItem"), "description": "Oldest first."}
            }
        }),
    );
    add(
        "Identity",
        json!({
            "type": "object",
            "required": ["kind", "value"],
            "additionalProperties": false,
            "properties": {
                "kind": {"type": "string", "enum": ["phone", "email", "whatsapp", "instagram", "external"]},
                "value": {"type": "string"}
            }
        }),
    );
    add(
        "ConsentRecord",
        json!({
            "type": "object",
            "required": ["channel", "granted", "source", "at", "evidence"],
            "additionalProperties": false,
            "properties": {
                "channel": {"type": "string", "description": "`whatsapp`, or `whatsapp_marketing` from WhatsApp user preferences."},
                "granted": {"type": "boolean", "description": "`true` an opt-in, `false` an opt-out."},
                "source": {"type": "string", "description": "Where it came from: `api`, a channel, `voice call `<id>``, and so on."},
                "at": {"type": "string", "format": "date-time"},
                "evidence": nullable("string")
            }
        }),
    );
    add(
        "Thread",
        json!({
            "type": "object",
            "required": ["state", "queue", "last_inbound_at", "flag", "flag_reason", "queue_state", "queued_at", "assignee", "assigned_at", "picked_up_at", "open", "opened_at", "closed_at"],
            "additionalProperties": false,
            "properties": {
                "state": {"type": "string", "enum": ["automated", "human"]},
                "open": {"type": "boolean", "description": "A conversation is open: a handoff message was queued and the thread has not been closed since (Done, `POST /v1/leads/{id}/close`, or the playbook's `idle` time without a message). No second opening message is sent into it."},
                "opened_at": {"type": ["string", "null"], "format": "date-time", "description": "When the open conversation's first handoff message was queued."},
                "closed_at": {"type": ["string", "null"], "format": "date-time", "description": "When the last conversation closed."},
                "queue": nullable("string"),
                "queue_state": {"type": ["string", "null"], "enum": ["waiting", "assigned", "done", null], "description": "In a queue with members: `waiting` (nobody has it yet), `assigned`, or `done` (closed; a new message from the lead puts it back). Null in a queue without members."},
                "queued_at": {"type": ["string", "null"], "format": "date-time", "description": "When it entered its queue: the escalation clock starts here."},
                "assignee": nullable_text("The member who has it: an operator's name, or an agent's endpoint."),
                "assigned_at": {"type": ["string", "null"], "format": "date-time"},
                "picked_up_at": {"type": ["string", "null"], "format": "date-time", "description": "The first human reply or takeover since it entered its queue: the escalation clock stops."},
                "last_inbound_at": {"type": ["string", "null"], "format": "date-time", "description": "The lead's last WhatsApp message (it opens the 24-hour window)."},
                "flag": {"type": ["string", "null"], "enum": ["delivery_failed", null], "description": "Set when a WhatsApp message to the lead failed for good: an operator should reach them another way."},
                "flag_reason": nullable_text("Why, with Meta's code.")
            }
        }),
    );
    add(
        "StoredDecision",
        json!({
            "type": "object",
            "required": ["id", "at", "playbook", "ruleset", "decision", "trace"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string"},
                "at": {"type": "string", "format": "date-time"},
                "playbook": {"type": "string"},
                "ruleset": {"type": "string", "description": "The ruleset hash."},
                "decision": {"oneOf": [schema("Decision"), schema("DecisionError")]},
                "trace": {"oneOf": [schema("Trace"), {"type": "null"}]}
            }
        }),
    );
    add(
        "OutboxItem",
        json!({
            "type": "object",
            "required": ["id", "kind", "payload", "state", "attempts", "created_at", "updated_at", "next_attempt", "message_id", "delivery", "error_code", "error", "replaces"],
            "additionalProperties": false,
            "properties": {
                "id": {"type": "string", "description": "Also sent to Meta as `biz_opaque_callback_data`, and to endpoints as `webhook-id`."},
                "kind": {"type": "string", "enum": ["whatsapp", "notify"]},
                "payload": {"oneOf": [schema("WhatsappOutboxPayload"), schema("NotifyOutboxPayload")]},
                "state": {"type": "string", "enum": ["pending", "sending", "sent", "failed", "cancelled"], "description": "`pending` until due, `sending` while claimed (or while a send whose outcome is unknown waits for its status), `sent` once accepted, `failed` for good, `cancelled` when a person took the thread over first."},
                "attempts": {"type": "integer", "minimum": 0},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": ["string", "null"], "format": "date-time"},
                "next_attempt": {"type": ["string", "null"], "format": "date-time", "description": "Not retried before this time."},
                "message_id": nullable_text("Meta's message ID (`wamid.`)."),
                "delivery": {"type": ["string", "null"], "enum": ["accepted", "sent", "delivered", "read", "failed", null], "description": "The furthest status: `accepted` by the Cloud API, then Meta's `sent`, `delivered`, `read` or `failed`; `delivered` for an endpoint that answered 2xx."},
                "error_code": {"type": ["integer", "null"], "description": "Meta's error code of the last failure."},
                "error": nullable_text("The last failure, in words."),
                "replaces": nullable_text("The message this one falls back from (a session message the closed window refused).")
            }
        }),
    );
    add(
        "WhatsappOutboxPayload",
        json!({
            "type": "object",
            "description": "A WhatsApp message to send (kind `whatsapp`).",
            "required": ["to", "outcome", "text", "template", "sender"],
            "additionalProperties": false,
            "properties": {
                "to": nullable_text("The lead's phone, E.164."),
                "outcome": {"type": "string", "enum": ["session", "template"]},
                "text": nullable_text("The session message (outcome `session`)."),
                "template": {"oneOf": [schema("RenderedTemplate"), {"type": "null"}], "description": "The approved template: the message itself, or the fallback."},
                "sender": nullable_text("The playbook's sender number."),
                "by": {"type": "string", "description": "Who wrote it, for a person's reply; absent for automation."}
            }
        }),
    );
    add(
        "NotifyOutboxPayload",
        json!({
            "type": "object",
            "description": "A notification to send (kind `notify`).",
            "required": ["endpoint", "event"],
            "additionalProperties": false,
            "properties": {
                "endpoint": {"type": "string", "description": "The name of one of the account's `endpoints`."},
                "event": {"type": "string", "enum": ["lead.notify", "lead.updated"], "description": "`lead.notify` for a rule's `notify`, `lead.updated` for the account's `lead_updates`."}
            }
        }),
    );
    add(
        "Rulesets",
        json!({
            "type": "object",
            "required": ["ruleset", "loaded_at", "playbooks", "warnings", "last_reload"],
            "additionalProperties": false,
            "properties": {
                "ruleset": nullable_text("The hash of the ruleset in force."),
                "loaded_at": {"type": "string", "format": "date-time"},
                "playbooks": {
                    "type": "array",
                    "description": "The playbooks this account may use.",
                    "items": {
                        "type": "object",
                        "required": ["name", "file", "rules"],
                        "additionalProperties": false,
                        "properties": {
                            "name": {"type": "string"},
                            "file": {"type": "string"},
                            "rules": {"type": "integer", "minimum": 0, "description": "How many rules it has."}
                        }
                    }
                },
                "warnings": {
                    "type": "array",
                    "description": "Problems that do not stop the rules but will stop messages, such as a playbook whose `sender` is not one of this account's WhatsApp numbers.",
                    "items": {"type": "string"}
                },
                "last_reload": {
                    "type": "object",
                    "required": ["ok", "diagnostics"],
                    "additionalProperties": false,
                    "properties": {
                        "ok": {"type": "boolean"},
                        "diagnostics": {"type": "array", "items": schema("Diagnostic")}
                    }
                }
            }
        }),
    );
    add(
        "ReloadResult",
        json!({
            "type": "object",
            "required": ["ok", "ruleset", "diagnostics"],
            "additionalProperties": false,
            "properties": {
                "ok": {"type": "boolean", "description": "Whether the rules on disk checked and are now in force."},
                "ruleset": nullable_text("The hash of the ruleset in force (the previous one when `ok` is false)."),
                "diagnostics": {"type": "array", "items": schema("Diagnostic")}
            }
        }),
    );
    add(
        "Diagnostic",
        json!({
            "type": "object",
            "description": "A finding of the rules checker.",
            "required": ["severity", "code", "message", "file", "line", "column", "end_line", "end_column", "label", "help", "rendered"],
            "additionalProperties": false,
            "properties": {
                "severity": {"type": "string", "enum": ["error", "warning"]},
                "code": {"type": "string", "description": "Such as `E002`."},
                "message": {"type": "string"},
                "file": {"type": "string"},
                "line": nullable("integer"),
                "column": nullable("integer"),
                "end_line": nullable("integer"),
                "end_column": nullable("integer"),
                "label": nullable("string"),
                "help": nullable("string"),
                "rendered": {"type": "string", "description": "The diagnostic as `handoff check` prints it."}
            }
        }),
    );
    add(
        "MetaWebhook",
        json!({
            "type": "object",
            "description": "A Meta webhook notification. Only the envelope is required to be readable; entries and items that cannot be read are skipped and counted in `rejected`.",
            "required": ["object", "entry"],
            "properties": {
                "object": {"type": "string", "enum": ["whatsapp_business_account", "instagram", "page"]},
                "entry": {"type": "array", "items": {"type": "object"}}
            }
        }),
    );
    add(
        "MetaReceipt",
        json!({
            "type": "object",
            "required": ["received", "new", "rejected"],
            "additionalProperties": false,
            "properties": {
                "received": {"type": "integer", "minimum": 0, "description": "Events read from the body."},
                "new": {"type": "integer", "minimum": 0, "description": "Of those, events not seen before (stored now)."},
                "rejected": {"type": "integer", "minimum": 0, "description": "Items that could not be read and were skipped."}
            }
        }),
    );
    add(
        "WebhookAccepted",
        json!({
            "type": "object",
            "required": ["accepted", "duplicate"],
            "additionalProperties": false,
            "properties": {
                "accepted": {"type": "boolean", "const": true},
                "duplicate": {"type": "boolean", "description": "The same submission (or call) was stored before; nothing new was stored."}
            }
        }),
    );
    add(
        "FormSubmission",
        json!({
            "type": "object",
            "description": "Form field -> answer: text, a number, a boolean, a list of those (checkboxes) or null (left blank). The form's configured mapping turns answers into the lead's name, phone, email, intent, WhatsApp consent and fields. The mapped lead needs a phone or an email (else 422 at `phone`).",
            "additionalProperties": true
        }),
    );
    add(
        "CallReport",
        json!({
            "type": "object",
            "description": "A voice agent's report of one call, read strictly: unknown members are rejected.",
            "required": ["call_id", "from", "started_at"],
            "additionalProperties": false,
            "properties": {
                "call_id": {"type": "string", "minLength": 1, "description": "The voice platform's ID for the call; reports are deduplicated on it."},
                "from": {"type": "string", "minLength": 1, "description": "The caller's number as the platform has it."},
                "started_at": {"type": "string", "format": "date-time"},
                "ended_at": {"type": ["string", "null"], "format": "date-time", "description": "Not before `started_at`."},
                "language": nullable("string"),
                "transcript": {"type": "array", "items": schema("CallLine")},
                "extracted": schema("Extracted"),
                "opt_in": {"oneOf": [schema("OptIn"), {"type": "null"}]}
            }
        }),
    );
    add(
        "CallLine",
        json!({
            "type": "object",
            "required": ["speaker", "text", "at"],
            "additionalProperties": false,
            "properties": {
                "speaker": {"type": "string", "enum": ["agent", "caller"]},
                "text": {"type": "string"},
                "at": {"type": "string", "format": "date-time"}
            }
        }),
    );
    add(
        "Extracted",
        json!({
            "type": "object",
            "description": "What the voice agent understood. `name`, `first_name`, `email` and `intent` are the lead's; every other member is a playbook field, named as playbooks name fields.",
            "properties": {
                "name": nullable("string"),
                "first_name": nullable("string"),
                "email": nullable("string"),
                "intent": nullable("string")
            },
            "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
            "additionalProperties": true
        }),
    );
    add(
        "OptIn",
        json!({
            "type": "object",
            "description": "The caller's answer to being messaged on WhatsApp. An opt-in (`whatsapp: true`) needs `spoken_at` and `evidence`; `evidence`, when given, must be one of the caller's transcript lines, verbatim.",
            "required": ["whatsapp"],
            "additionalProperties": false,
            "properties": {
                "whatsapp": {"type": "boolean"},
                "spoken_at": {"type": ["string", "null"], "format": "date-time"},
                "evidence": nullable("string")
            }
        }),
    );
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every route of `app()` in `mod.rs`, plus `/metrics` and
    /// `/openapi.json`. Add a route there, add it here and to the document.
    const ROUTES: &[(&str, &str)] = &[
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("post", "/v1/leads"),
        ("get", "/v1/leads"),
        ("get", "/v1/leads/{id}"),
        ("post", "/v1/leads/{id}/takeover"),
        ("post", "/v1/leads/{id}/release"),
        ("post", "/v1/leads/{id}/reply"),
        ("post", "/v1/leads/{id}/notes"),
        ("post", "/v1/leads/{id}/reassign"),
        ("get", "/v1/leads/{id}/templates"),
        ("get", "/v1/threads"),
        ("get", "/v1/queues"),
        ("post", "/v1/leads/{id}/close"),
        ("post", "/v1/dry-run"),
        ("get", "/v1/rulesets"),
        ("post", "/v1/rulesets/reload"),
        ("get", "/webhooks/meta/{account}"),
        ("post", "/webhooks/meta/{account}"),
        ("post", "/webhooks/forms/{account}/{form}"),
        ("post", "/webhooks/voice/{account}"),
    ];

    const METHODS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths is an object") {
            for (method, op) in item.as_object().expect("a path item is an object") {
                out.push((method.clone(), path.clone(), op));
            }
        }
        out
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_exactly_the_routes() {
        let doc = document();
        // Through text and back: what `GET /openapi.json` serves parses.
        let doc: Value = serde_json::from_str(&doc.to_string()).unwrap();
        assert!(doc.is_object());
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _)| (m, p))
            .collect();
        let listed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(ROUTES.len(), listed.len(), "a route is listed twice");
        assert_eq!(
            documented,
            listed,
            "documented but not routed: {:?}; routed but not documented: {:?}",
            documented.difference(&listed).collect::<Vec<_>>(),
            listed.difference(&documented).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_operation_is_well_formed() {
        let doc = document();
        let mut ids = BTreeSet::new();
        for (method, path, op) in operations(&doc) {
            let at = format!("{method} {path}");
            assert!(METHODS.contains(&method.as_str()), "{at}: not a method");
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: no operationId"));
            assert!(ids.insert(id.to_string()), "{at}: operationId `{id}` twice");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.contains_key("408"),
                "{at}: no 408 (the router's timeout)"
            );
            assert!(
                responses.keys().any(|s| s.starts_with('2')),
                "{at}: no success response"
            );
            // Every `{name}` of the path is a declared path parameter.
            let resolve = |p: &Value| -> Value {
                match p["$ref"].as_str() {
                    Some(r) => doc.pointer(&r[1..]).cloned().unwrap_or(Value::Null),
                    None => p.clone(),
                }
            };
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(resolve)
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
            // An API-key route answers 401; a public one declares `security: []`.
            let public = op.get("security") == Some(&json!([]));
            let needs_key = !public;
            if needs_key {
                assert!(responses.contains_key("401"), "{at}: API key but no 401");
            }
        }
    }

    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => refs(v, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_ref_points_to_an_existing_component() {
        let doc = document();
        let mut found = Vec::new();
        refs(&doc, &mut found);
        assert!(!found.is_empty());
        for r in &found {
            assert!(
                r.starts_with("#/components/"),
                "`{r}` does not point into the components"
            );
            assert!(doc.pointer(&r[1..]).is_some(), "`{r}` points to nothing");
        }
        // And every component is used (a leftover is likely a misspelt ref).
        let used: BTreeSet<&str> = found.iter().copied().collect();
        for kind in ["schemas", "responses", "parameters", "headers"] {
            for name in doc["components"][kind].as_object().unwrap().keys() {
                let r = format!("#/components/{kind}/{name}");
                assert!(used.contains(r.as_str()), "`{r}` is never used");
            }
        }
    }

    /// The members a `deny_unknown_fields` struct accepts, read from serde's
    /// "unknown field `x`, expected one of `a`, `b`" error.
    fn accepted_members<T: serde::de::DeserializeOwned>() -> BTreeSet<String> {
        let probe = json!({"zz_not_a_member": 0});
        let Err(e) = serde_json::from_value::<T>(probe) else {
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
        let doc = document();
        let schema = &doc["components"]["schemas"][name];
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
    fn request_schemas_name_exactly_the_members_the_handlers_accept() {
        use super::super::leads::{ConsentInput, LeadInput, TakeoverInput};
        use crate::engine::lead::TranscriptMessage;
        use crate::intake::{CallLine, CallReport, OptIn};
        // One struct reads both bodies; a lead refuses the dry-run members with a 422.
        let situation: BTreeSet<String> =
            ["now", "window", "human", "event", "thread", "marketing"]
                .map(String::from)
                .into();
        assert_eq!(
            documented_members("DryRunInput"),
            accepted_members::<LeadInput>()
        );
        assert_eq!(
            documented_members("LeadInput"),
            &accepted_members::<LeadInput>() - &situation
        );
        assert_eq!(
            documented_members("ConsentInput"),
            accepted_members::<ConsentInput>()
        );
        use super::super::threads::{NoteInput, ReassignInput, ReplyInput};
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
        assert_eq!(
            documented_members("TakeoverInput"),
            accepted_members::<TakeoverInput>()
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
        let mut dry_run = accepted_members::<LeadInput>();
        dry_run.extend(["now", "window", "human"].map(String::from));
        assert_eq!(documented_members("DryRunInput"), dry_run);
    }

    #[test]
    fn the_examples_are_read_by_the_handlers_structs() {
        use super::super::leads::LeadInput;
        serde_json::from_value::<LeadInput>(lead_example()).unwrap();
        crate::intake::parse_call_report(call_report_example().to_string().as_bytes()).unwrap();
    }

    #[test]
    fn the_error_codes_are_the_ones_error_rs_sends() {
        use super::super::error::ApiError;
        use axum::response::IntoResponse;
        let doc = document();
        let documented: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
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
        let mut sent = BTreeSet::new();
        for e in errors {
            let code = e.code();
            let response = e.into_response();
            assert_eq!(response.status(), code.status());
            let bytes = rt
                .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
                .unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            sent.insert(body["error"]["code"].as_str().unwrap().to_string());
        }
        let sent: BTreeSet<&str> = sent.iter().map(String::as_str).collect();
        // Every code a handler's error sends is documented; the rest
        // (method_not_allowed, timeout) come from the router and layers.
        assert!(
            sent.is_subset(&documented),
            "{sent:?} not in {documented:?}"
        );
        let from_layers: BTreeSet<&str> = documented.difference(&sent).copied().collect();
        assert_eq!(
            from_layers,
            BTreeSet::from(["method_not_allowed", "timeout"])
        );
    }
}

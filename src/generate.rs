//! Realistic lead histories for a playbook, for examples, `diff` and
//! benchmarks: the playbook's intents and fields, plausible values by type
//! and name, and the mess real upstreams send (missing fields, numbers as
//! text, values that cannot be read, unknown intents). Deterministic for a seed.

use crate::dsl::ast::FieldType;
use crate::dsl::schema::{Schema, CHANNELS};
use crate::engine::{Lead, Window};
use crate::history::LeadRecord;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

const FIRST_NAMES: [&str; 24] = [
    "Aisha", "Rohan", "Meera", "Kabir", "Fatima", "Omar", "Zoë", "Arjun", "Priya", "Vikram",
    "Sara", "Yusuf", "Ananya", "Dev", "Layla", "Nikhil", "Maria", "João", "Chen", "Aditi",
    "Hassan", "Isha", "Tom", "Noor",
];
const LAST_NAMES: [&str; 12] = [
    "Khan",
    "Mehta",
    "Sharma",
    "Iyer",
    "Al Marri",
    "Haddad",
    "Fernandes",
    "Gupta",
    "Reddy",
    "Silva",
    "Das",
    "Nair",
];
const CITIES: [&str; 12] = [
    "Goa",
    "Mumbai",
    "Pune",
    "Jaipur",
    "Udaipur",
    "Delhi",
    "Bengaluru",
    "Dubai",
    "Sharjah",
    "Kochi",
    "Chennai",
    "Hyderabad",
];
const WORDS: [&str; 10] = [
    "please call",
    "need details",
    "asap",
    "budget flexible",
    "family event",
    "weekend only",
    "",
    "hi",
    "interested",
    "price?",
];

/// A small, fast, deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A plausible number for a field, judged by its name.
fn number_for(name: &str, rng: &mut Rng) -> f64 {
    let n = name.to_lowercase();
    if n.contains("guest") {
        (10 + rng.below(600)) as f64
    } else if n.contains("age") {
        (3 + rng.below(80)) as f64
    } else if n.contains("bed") || n.contains("room") {
        (1 + rng.below(5)) as f64
    } else if n.contains("budget") || n.contains("price") || n.contains("inr") {
        ((1 + rng.below(300)) * 100_000) as f64
    } else {
        rng.below(1000) as f64
    }
}

fn text_for(name: &str, rng: &mut Rng) -> String {
    let n = name.to_lowercase();
    if n.contains("city")
        || n.contains("locality")
        || n.contains("branch")
        || n.contains("location")
    {
        let city = rng.pick(&CITIES).to_string();
        // Upstreams are inconsistent about case and spaces.
        match rng.below(6) {
            0 => city.to_lowercase(),
            1 => format!(" {city} "),
            _ => city,
        }
    } else if n.contains("insur") {
        rng.pick(&["Daman", "AXA", "Bupa", "Sukoon", "none"])
            .to_string()
    } else {
        rng.pick(&WORDS).to_string()
    }
}

/// A value for a field of `ty`, sometimes in the messy shapes upstreams send.
fn value_for(name: &str, ty: &FieldType, now: DateTime<Utc>, rng: &mut Rng) -> Value {
    match ty {
        FieldType::Text | FieldType::TextList => json!(text_for(name, rng)),
        FieldType::OneOf(options) => {
            let option = rng.pick(options).node.clone();
            match rng.below(10) {
                0 => json!(option.to_uppercase()),
                1 => json!("something else"),
                _ => json!(option),
            }
        }
        FieldType::Number => {
            let n = number_for(name, rng) as i64;
            match rng.below(10) {
                0 => json!(n.to_string()),
                1 => json!(format!("about {n}")),
                _ => json!(n),
            }
        }
        FieldType::Bool => match rng.below(8) {
            0 => json!("yes"),
            1 => json!("no"),
            _ => json!(rng.chance(0.5)),
        },
        FieldType::Date => {
            let day = (now + Duration::days(rng.below(540) as i64 - 60)).date_naive();
            match rng.below(20) {
                0 => json!("next month"),
                _ => json!(day.to_string()),
            }
        }
        FieldType::DateTime => {
            let t = now + Duration::minutes(rng.below(60 * 24 * 14) as i64 - 60 * 24 * 2);
            json!(t.to_rfc3339())
        }
    }
}

/// `count` lead records for the playbook described by `schema`, starting at `start`.
pub fn leads(
    schema: &Schema,
    count: usize,
    seed: u64,
    start: DateTime<Utc>,
) -> impl Iterator<Item = LeadRecord> + '_ {
    let mut rng = Rng::new(seed);
    let intents: Vec<String> = schema
        .intents
        .clone()
        .unwrap_or_else(|| vec!["enquiry".into()]);
    (0..count).map(move |i| {
        // Leads arrive over about a month, most of them in the daytime.
        let now = start
            + Duration::minutes((i as i64 * 43_200) / count.max(1) as i64 + rng.below(30) as i64);
        let first = *rng.pick(&FIRST_NAMES);
        let name = if rng.chance(0.03) {
            None
        } else {
            Some(format!("{first} {}", rng.pick(&LAST_NAMES)))
        };
        let intent = if rng.chance(0.03) {
            Some("other".to_string())
        } else {
            Some(rng.pick(&intents).clone())
        };
        let mut fields = serde_json::Map::new();
        for field in &schema.fields {
            let skip = if field.required { 0.08 } else { 0.35 };
            if rng.chance(skip) {
                continue;
            }
            fields.insert(
                field.name.clone(),
                value_for(&field.name, &field.ty, now, &mut rng),
            );
        }
        let channel = *rng.pick(&CHANNELS);
        let phone = format!("+9198{:08}", rng.below(100_000_000));
        LeadRecord {
            lead: Lead {
                name,
                phone: Some(phone),
                channel: Some(channel.to_string()),
                intent,
                playbook: Some(schema.name.clone()),
                consent: crate::engine::lead::Consent {
                    whatsapp: rng.chance(0.75),
                },
                fields,
                tags: if rng.chance(0.05) {
                    vec!["returning".into()]
                } else {
                    Vec::new()
                },
                ..Lead::default()
            },
            now: Some(now.to_rfc3339()),
            window: Some(if rng.chance(0.4) {
                Window::Open
            } else {
                Window::Closed
            }),
            human: rng.chance(0.04),
            event: crate::engine::Event::Lead,
            thread: crate::engine::ThreadInput::default(),
            marketing: crate::engine::Marketing::Subscribed,
        }
    })
}

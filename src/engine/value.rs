//! Lead values coerced to declared types. A value that cannot be read as its
//! type counts as not set, and the decision carries a warning.

use crate::dsl::ast::FieldType;
use crate::dsl::schema::normalize_text;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::Value as Json;
use std::borrow::Cow;

/// A lead value ready for tests. Text borrows from the lead where it can,
/// so reading a lead allocates only for text that needs lowercasing.
#[derive(Clone, Debug, PartialEq)]
pub enum Val<'a> {
    Missing,
    /// `norm` is trimmed and lowercased for `==`, `in`, `contains`; `raw` is
    /// trimmed only, for `matches` and templates.
    Text {
        raw: Cow<'a, str>,
        norm: Cow<'a, str>,
    },
    Num(f64),
    Bool(bool),
    /// Days since 0001-01-01 (the proleptic Gregorian day number).
    Date(i32),
    /// Seconds since the Unix epoch, and the local day in the playbook's zone.
    Instant(i64, i32),
    /// Normalized list items.
    List(Vec<String>),
}

impl<'a> Val<'a> {
    /// Text as a value.
    pub fn text(raw: &'a str) -> Val<'a> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Val::Missing;
        }
        Val::Text {
            norm: normalized(raw),
            raw: Cow::Borrowed(raw),
        }
    }

    /// Text that the value owns.
    pub fn owned_text(raw: String) -> Val<'static> {
        match Val::text(&raw) {
            Val::Missing => Val::Missing,
            _ => {
                let trimmed = raw.trim().to_string();
                Val::Text {
                    norm: Cow::Owned(normalize_text(&trimmed)),
                    raw: Cow::Owned(trimmed),
                }
            }
        }
    }

    /// The same value, owning its text.
    pub fn into_owned(self) -> Val<'static> {
        match self {
            Val::Missing => Val::Missing,
            Val::Text { raw, norm } => Val::Text {
                raw: Cow::Owned(raw.into_owned()),
                norm: Cow::Owned(norm.into_owned()),
            },
            Val::Num(n) => Val::Num(n),
            Val::Bool(b) => Val::Bool(b),
            Val::Date(d) => Val::Date(d),
            Val::Instant(s, d) => Val::Instant(s, d),
            Val::List(items) => Val::List(items),
        }
    }

    /// The value as a trace keeps it.
    pub fn seen(&self) -> Seen<'a> {
        match self {
            Val::Missing => Seen::Missing,
            Val::Text { raw, .. } => Seen::Text(raw.clone()),
            Val::Num(n) => Seen::Num(*n),
            Val::Bool(b) => Seen::Bool(*b),
            Val::Date(d) => Seen::Date(*d),
            Val::Instant(secs, _) => Seen::Instant(*secs),
            Val::List(items) => Seen::List(items.clone()),
        }
    }

    /// Whether the value is set.
    pub fn is_set(&self) -> bool {
        !matches!(self, Val::Missing)
    }

    /// The value as a person reads it in a trace.
    pub fn display(&self) -> String {
        match self {
            Val::Missing => "not set".into(),
            Val::Text { raw, .. } => format!("{raw:?}"),
            Val::Num(n) => format_number(*n),
            Val::Bool(b) => b.to_string(),
            Val::Date(d) => day_to_date(*d).map(|d| d.to_string()).unwrap_or_default(),
            Val::Instant(secs, _) => DateTime::from_timestamp(*secs, 0)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default(),
            Val::List(items) => format!("{items:?}"),
        }
    }
}

/// Trimmed text lowercased, borrowing when it already is.
fn normalized(trimmed: &str) -> Cow<'_, str> {
    if trimmed
        .bytes()
        .all(|b| b.is_ascii() && !b.is_ascii_uppercase())
    {
        Cow::Borrowed(trimmed)
    } else {
        Cow::Owned(trimmed.to_lowercase())
    }
}

/// A value as a trace shows it: cheap to keep (text stays borrowed from the
/// lead), formatted only when the trace is printed or serialized.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen<'a> {
    Missing,
    Text(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Date(i32),
    Instant(i64),
    List(Vec<String>),
}

impl std::fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Missing => f.write_str("not set"),
            Seen::Text(raw) => write!(f, "{raw:?}"),
            Seen::Num(n) => f.write_str(&format_number(*n)),
            Seen::Bool(b) => write!(f, "{b}"),
            Seen::Date(d) => match day_to_date(*d) {
                Some(d) => write!(f, "{d}"),
                None => Ok(()),
            },
            Seen::Instant(secs) => match DateTime::from_timestamp(*secs, 0) {
                Some(d) => f.write_str(&d.to_rfc3339()),
                None => Ok(()),
            },
            Seen::List(items) => write!(f, "{items:?}"),
        }
    }
}

impl serde::Serialize for Seen<'_> {
    /// The text `Display` gives, written without the formatter for the
    /// values most traces show.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Seen::Missing => serializer.serialize_str("not set"),
            // `{raw:?}` of printable ASCII without `"` or `\` only adds the quotes.
            Seen::Text(raw)
                if raw
                    .bytes()
                    .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') =>
            {
                let mut quoted = String::with_capacity(raw.len() + 2);
                quoted.push('"');
                quoted.push_str(raw);
                quoted.push('"');
                serializer.serialize_str(&quoted)
            }
            Seen::Num(n) => serializer.serialize_str(&format_number(*n)),
            Seen::Bool(b) => serializer.serialize_str(if *b { "true" } else { "false" }),
            _ => serializer.collect_str(self),
        }
    }
}

/// Numbers without a trailing `.0` when whole.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// The day number of a date.
pub fn date_to_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce()
}

/// The date of a day number.
pub fn day_to_date(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day)
}

/// Whether `declared` equals already-normalized `norm` without case and
/// surrounding spaces, without allocating for ASCII text.
fn same_text(declared: &str, norm: &str) -> bool {
    let declared = declared.trim();
    if declared.is_ascii() {
        declared.eq_ignore_ascii_case(norm)
    } else {
        normalize_text(declared) == norm
    }
}

/// Why a value could not be read as its type.
#[derive(Clone, Debug, PartialEq)]
pub struct CoercionProblem {
    pub expected: &'static str,
}

/// Reads a JSON value as `ty`. `Ok(Val::Missing)` for null and empty text.
pub fn coerce<'a>(value: &'a Json, ty: &FieldType, tz: Tz) -> Result<Val<'a>, CoercionProblem> {
    let fail = |expected| Err(CoercionProblem { expected });
    match value {
        Json::Null => return Ok(Val::Missing),
        Json::String(s) if s.trim().is_empty() => return Ok(Val::Missing),
        _ => {}
    }
    match ty {
        FieldType::Text => match value {
            Json::String(s) => Ok(Val::text(s)),
            Json::Number(n) => Ok(Val::owned_text(n.to_string())),
            Json::Bool(b) => Ok(Val::owned_text(b.to_string())),
            _ => fail("text"),
        },
        FieldType::OneOf(options) => {
            let (given, norm): (Cow<'a, str>, Cow<'a, str>) = match value {
                Json::String(s) => (Cow::Borrowed(s.trim()), normalized(s.trim())),
                Json::Number(n) => (Cow::Owned(n.to_string()), Cow::Owned(n.to_string())),
                _ => return fail("one of the listed values"),
            };
            // The value takes the declared spelling, so templates see `"villa"`
            // as declared even when the lead wrote `"Villa"`.
            match options.iter().find(|o| same_text(&o.node, &norm)) {
                Some(option) => Ok(Val::Text {
                    raw: if option.node == *given {
                        given
                    } else {
                        Cow::Owned(option.node.clone())
                    },
                    norm,
                }),
                None => fail("one of the listed values"),
            }
        }
        FieldType::Number => match value {
            Json::Number(n) => n.as_f64().map(Val::Num).ok_or(CoercionProblem {
                expected: "a number",
            }),
            Json::String(s) => {
                let cleaned: String = s.trim().chars().filter(|c| *c != '_').collect();
                match cleaned.parse::<f64>() {
                    Ok(n) if n.is_finite() => Ok(Val::Num(n)),
                    _ => fail("a number"),
                }
            }
            _ => fail("a number"),
        },
        FieldType::Bool => match value {
            Json::Bool(b) => Ok(Val::Bool(*b)),
            Json::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "1" => Ok(Val::Bool(true)),
                "false" | "no" | "n" | "0" => Ok(Val::Bool(false)),
                _ => fail("true or false"),
            },
            Json::Number(n) if n.as_f64() == Some(1.0) => Ok(Val::Bool(true)),
            Json::Number(n) if n.as_f64() == Some(0.0) => Ok(Val::Bool(false)),
            _ => fail("true or false"),
        },
        FieldType::Date => match value {
            Json::String(s) => parse_date(s.trim(), tz).ok_or(CoercionProblem {
                expected: "a date (YYYY-MM-DD)",
            }),
            _ => fail("a date (YYYY-MM-DD)"),
        },
        FieldType::DateTime => match value {
            Json::String(s) => parse_instant(s.trim(), tz)
                .map(|(secs, day)| Val::Instant(secs, day))
                .ok_or(CoercionProblem {
                    expected: "a datetime (RFC 3339)",
                }),
            _ => fail("a datetime (RFC 3339)"),
        },
        FieldType::TextList => match value {
            Json::Array(items) => Ok(Val::List(
                items
                    .iter()
                    .filter_map(|i| i.as_str().map(normalize_text))
                    .collect(),
            )),
            _ => fail("a list of text"),
        },
    }
}

/// Whether a JSON value can be read as `ty`, as `coerce` would read it,
/// without building the value when that can be avoided.
pub fn readable(value: &Json, ty: &FieldType, tz: Tz) -> Result<(), CoercionProblem> {
    match (ty, value) {
        (_, Json::Null) => Ok(()),
        (FieldType::Text, Json::String(_) | Json::Number(_) | Json::Bool(_)) => Ok(()),
        (FieldType::Number, Json::Number(_)) => Ok(()),
        (FieldType::Bool, Json::Bool(_)) => Ok(()),
        (FieldType::OneOf(options), Json::String(s)) if s.is_ascii() => {
            let s = s.trim();
            if s.is_empty()
                || options
                    .iter()
                    .any(|o| o.node.trim().eq_ignore_ascii_case(s))
            {
                Ok(())
            } else {
                Err(CoercionProblem {
                    expected: "one of the listed values",
                })
            }
        }
        (FieldType::Date, Json::String(s)) if parse_ymd(s.trim()).is_some() => Ok(()),
        _ => coerce(value, ty, tz).map(|_| ()),
    }
}

fn parse_date(s: &str, tz: Tz) -> Option<Val<'static>> {
    if let Some(d) = parse_ymd(s) {
        return Some(Val::Date(date_to_day(d)));
    }
    parse_instant(s, tz).map(|(_, day)| Val::Date(day))
}

/// Reads `YYYY-MM-DD` without the cost of a general format parser: leads
/// carry dates in most fields, and this runs for every one of them.
pub fn parse_ymd(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(digits(0..4)? as i32, digits(5..7)?, digits(8..10)?)
}

/// Reads RFC 3339, or a local date-time or date in the playbook's zone.
pub fn parse_instant(s: &str, tz: Tz) -> Option<(i64, i32)> {
    let instant = if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        dt.with_timezone(&tz)
    } else if let Ok(naive) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M"))
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
    {
        tz.from_local_datetime(&naive).earliest()?
    } else {
        let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
        tz.from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
            .earliest()?
    };
    Some((instant.timestamp(), date_to_day(instant.date_naive())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_seen_value_serializes_as_it_displays() {
        let seen = [
            Seen::Missing,
            Seen::Text(Cow::Borrowed("event_enquiry")),
            Seen::Text(Cow::Borrowed("")),
            Seen::Text(Cow::Borrowed("say \"hi\" \\ there")),
            Seen::Text(Cow::Borrowed("two\nlines\tand a tab")),
            Seen::Text(Cow::Borrowed("caf\u{e9} \u{20b9}5 \u{200f}")),
            Seen::Num(120.0),
            Seen::Num(-3.5),
            Seen::Num(1e20),
            Seen::Bool(true),
            Seen::Bool(false),
            Seen::Date(739_000),
            Seen::Instant(1_800_000_000),
            Seen::List(vec!["goa".into(), "it's".into()]),
        ];
        for value in seen {
            assert_eq!(
                serde_json::to_value(&value).unwrap(),
                json!(value.to_string()),
                "{value:?}"
            );
        }
    }

    #[test]
    fn numbers_in_text_are_numbers() {
        assert_eq!(
            coerce(&json!("120"), &FieldType::Number, Tz::UTC),
            Ok(Val::Num(120.0))
        );
        assert_eq!(
            coerce(&json!("1_000"), &FieldType::Number, Tz::UTC),
            Ok(Val::Num(1000.0))
        );
        assert!(coerce(&json!("about 200"), &FieldType::Number, Tz::UTC).is_err());
    }

    #[test]
    fn empty_text_is_not_set() {
        assert_eq!(
            coerce(&json!("  "), &FieldType::Text, Tz::UTC),
            Ok(Val::Missing)
        );
        assert_eq!(
            coerce(&json!(null), &FieldType::Number, Tz::UTC),
            Ok(Val::Missing)
        );
    }

    #[test]
    fn datetimes_become_local_dates() {
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let given = json!("2027-03-13T20:00:00Z");
        let v = coerce(&given, &FieldType::Date, tz).unwrap();
        let want = date_to_day(NaiveDate::from_ymd_opt(2027, 3, 14).unwrap());
        assert_eq!(v, Val::Date(want));
    }
}

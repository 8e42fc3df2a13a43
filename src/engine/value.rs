//! Lead values coerced to declared types. A value that cannot be read as its
//! type counts as not set, and the decision carries a warning.

use crate::dsl::ast::FieldType;
use crate::dsl::schema::normalize_text;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;
use serde_json::Value as Json;

/// A lead value ready for tests.
#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    Missing,
    /// `norm` is trimmed and lowercased for `==`, `in`, `contains`; `raw` is
    /// trimmed only, for `matches` and templates.
    Text {
        raw: String,
        norm: String,
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

impl Val {
    /// Text as a value.
    pub fn text(raw: &str) -> Val {
        let raw = raw.trim();
        if raw.is_empty() {
            return Val::Missing;
        }
        Val::Text {
            norm: normalize_text(raw),
            raw: raw.to_string(),
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

/// Why a value could not be read as its type.
#[derive(Clone, Debug, PartialEq)]
pub struct CoercionProblem {
    pub expected: &'static str,
}

/// Reads a JSON value as `ty`. `Ok(Val::Missing)` for null and empty text.
pub fn coerce(value: &Json, ty: &FieldType, tz: Tz) -> Result<Val, CoercionProblem> {
    let fail = |expected| Err(CoercionProblem { expected });
    match value {
        Json::Null => return Ok(Val::Missing),
        Json::String(s) if s.trim().is_empty() => return Ok(Val::Missing),
        _ => {}
    }
    match ty {
        FieldType::Text => match value {
            Json::String(s) => Ok(Val::text(s)),
            Json::Number(n) => Ok(Val::text(&n.to_string())),
            Json::Bool(b) => Ok(Val::text(&b.to_string())),
            _ => fail("text"),
        },
        FieldType::OneOf(options) => {
            let text = match value {
                Json::String(s) => Val::text(s),
                Json::Number(n) => Val::text(&n.to_string()),
                _ => return fail("one of the listed values"),
            };
            // The value takes the declared spelling, so templates see `"villa"`
            // as declared even when the lead wrote `"Villa"`.
            match &text {
                Val::Text { norm, .. } => {
                    match options.iter().find(|o| normalize_text(&o.node) == *norm) {
                        Some(option) => Ok(Val::Text {
                            raw: option.node.clone(),
                            norm: norm.clone(),
                        }),
                        None => fail("one of the listed values"),
                    }
                }
                _ => fail("one of the listed values"),
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

fn parse_date(s: &str, tz: Tz) -> Option<Val> {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(Val::Date(date_to_day(d)));
    }
    parse_instant(s, tz).map(|(_, day)| Val::Date(day))
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
        let v = coerce(&json!("2027-03-13T20:00:00Z"), &FieldType::Date, tz).unwrap();
        let want = date_to_day(NaiveDate::from_ymd_opt(2027, 3, 14).unwrap());
        assert_eq!(v, Val::Date(want));
    }
}

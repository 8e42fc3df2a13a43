//! Queues: the people (and AI agents) behind a queue's name, which of them a
//! waiting thread goes to, and how much business time a thread has waited
//! (the escalation clock). No I/O: the store applies these choices inside
//! its transactions, the server decides when.

use crate::dsl::schema::Hours;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

/// How a queue picks among its available members.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Each member in turn, after whoever got the last thread.
    RoundRobin,
    /// The member with the fewest open threads; ties in turn.
    LeastLoaded,
}

impl Strategy {
    /// The name as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "round_robin",
            Strategy::LeastLoaded => "least_loaded",
        }
    }
}

/// A member of a queue, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    /// An operator, by the email they sign in with (lowercased).
    Operator(String),
    /// An AI agent: the account endpoint that receives its threads.
    Agent(String),
}

/// Business hours in their timezone.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueHours {
    pub hours: Hours,
    pub timezone: Tz,
}

impl QueueHours {
    /// Whether `at` is within the hours.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.hours
            .contains(at.with_timezone(&self.timezone).naive_local())
    }
}

/// One queue as the store needs it for an assignment pass.
#[derive(Clone, Debug)]
pub struct QueuePlan {
    pub name: String,
    pub strategy: Strategy,
    /// Open threads a member may hold before the queue passes them over.
    pub capacity: u32,
    pub members: Vec<Member>,
    /// An operator with no inbox activity for this long is not available.
    pub idle: std::time::Duration,
}

/// A member as an assignment pass sees them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    /// The operator's ID, or `agent:<endpoint>`.
    pub key: String,
    pub name: String,
    /// Signed in, marked available and active (always, for an agent).
    pub available: bool,
    /// Open threads given to them (in any queue).
    pub load: u32,
}

/// The candidate a queue gives its next thread to: available and under
/// capacity, by the strategy, taking turns after `last` (the member who got
/// the previous thread). `None` when nobody can take one.
pub fn pick(
    strategy: Strategy,
    candidates: &[Candidate],
    capacity: u32,
    last: Option<&str>,
) -> Option<usize> {
    let n = candidates.len();
    let start = last
        .and_then(|l| candidates.iter().position(|c| c.key == l))
        .map_or(0, |i| i + 1);
    let turn = (0..n).map(|k| (start + k) % n);
    let open = |i: &usize| candidates[*i].available && candidates[*i].load < capacity;
    match strategy {
        Strategy::RoundRobin => turn.into_iter().find(open),
        // `min_by_key` keeps the first of equals: ties go in turn.
        Strategy::LeastLoaded => turn.filter(open).min_by_key(|&i| candidates[i].load),
    }
}

/// The moment `after` of business time before `now`: a thread queued at or
/// before it has waited `after` inside `hours` (all of it when there are no
/// hours). `None` when the hours never open.
pub fn business_cutoff(
    now: DateTime<Utc>,
    after: std::time::Duration,
    hours: Option<&QueueHours>,
) -> Option<DateTime<Utc>> {
    let after = Duration::from_std(after).ok()?;
    let Some(h) = hours else {
        return Some(now - after);
    };
    if h.hours.days.iter().all(Vec::is_empty) {
        return None;
    }
    let mut left = after;
    let local_now = now.with_timezone(&h.timezone).naive_local();
    let mut date = local_now.date();
    // A year back is far more than any escalation waits; it bounds the walk
    // for hours that are open only minutes a week.
    for _ in 0..370 {
        let weekday = date.weekday().num_days_from_monday() as usize;
        let mut spans = h.hours.days[weekday].clone();
        spans.sort_unstable();
        for &(open, close) in spans.iter().rev() {
            let (Some(from), Some(mut to)) = (
                at_minute(&h.timezone, date, open),
                at_minute(&h.timezone, date, close),
            ) else {
                continue;
            };
            if from >= now {
                continue;
            }
            if to > now {
                to = now;
            }
            let span = to - from;
            if left <= span {
                return Some(to - left);
            }
            left -= span;
        }
        date = date.pred_opt()?;
    }
    None
}

/// Minute `minute` after local midnight of `date`, in UTC (the earlier one
/// when a clock change makes it ambiguous, the next valid one in a gap).
fn at_minute(tz: &Tz, date: NaiveDate, minute: u32) -> Option<DateTime<Utc>> {
    let local: NaiveDateTime = date.and_hms_opt(0, 0, 0)? + Duration::minutes(minute as i64);
    let mut probe = local;
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return Some(t.with_timezone(&Utc));
        }
        probe += Duration::minutes(30);
    }
    None
}

/// Reads a duration such as `90s`, `15m`, `2h`, `1h30m` or `1d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || {
        format!("`{text}` is not a duration; write a number and a unit, as in `90s`, `15m`, `2h` or `1h30m`")
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut any = false;
    for ch in text.trim().chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
            continue;
        }
        let unit = match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
        digits.clear();
        any = true;
    }
    if !digits.is_empty() || !any || total == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Reads business hours written as in a playbook (`mon-fri 09:00-18:00, sat
/// 10:00-14:00`) in `timezone`, with the playbook checker's messages.
pub fn parse_hours(text: &str, timezone: &str) -> Result<QueueHours, String> {
    let source = format!(
        "playbook q {{\n  timezone \"{}\"\n  hours {}\n}}\n",
        timezone.replace(['"', '\\'], ""),
        text.replace('\n', " ")
    );
    let parsed = crate::dsl::parse::parse_playbook(&source, "hours");
    let first_error = |ds: &[crate::dsl::diagnostic::Diagnostic]| {
        ds.iter().find(|d| d.is_error()).map(|d| d.message.clone())
    };
    if let Some(message) = first_error(&parsed.diagnostics) {
        return Err(message);
    }
    let Some(playbook) = parsed.playbook else {
        return Err(format!("`{text}` are not business hours"));
    };
    let checked = crate::dsl::check::check_playbook(&playbook, "hours", "q", &NoTemplates);
    if let Some(message) = first_error(&checked.diagnostics) {
        return Err(message);
    }
    let schema = checked
        .schema
        .ok_or_else(|| format!("`{text}` are not business hours"))?;
    Ok(QueueHours {
        hours: schema.hours.unwrap_or_default(),
        timezone: schema.timezone,
    })
}

struct NoTemplates;

impl crate::dsl::check::TemplateCatalog for NoTemplates {
    fn has_file(&self, _: &str) -> bool {
        false
    }
    fn file_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn has_approved(&self, _: &str) -> bool {
        false
    }
    fn approved_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn file_variables(&self, _: &str) -> Vec<crate::dsl::check::VariableUse> {
        Vec::new()
    }
    fn approved_variables(&self, _: &str) -> Vec<crate::dsl::check::VariableUse> {
        Vec::new()
    }
}

/// Writes a duration the way the configuration does: `15m`, `1h30m`, `45s`.
pub fn show_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if sec > 0 || out.is_empty() {
        out.push_str(&format!("{sec}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: &str, available: bool, load: u32) -> Candidate {
        Candidate {
            key: key.into(),
            name: key.into(),
            available,
            load,
        }
    }

    #[test]
    fn round_robin_takes_turns_after_the_last_member() {
        let cs = [c("a", true, 0), c("b", true, 5), c("c", true, 0)];
        assert_eq!(pick(Strategy::RoundRobin, &cs, 10, None), Some(0));
        assert_eq!(pick(Strategy::RoundRobin, &cs, 10, Some("a")), Some(1));
        assert_eq!(pick(Strategy::RoundRobin, &cs, 10, Some("c")), Some(0));
        // A member who left the queue: start from the top.
        assert_eq!(pick(Strategy::RoundRobin, &cs, 10, Some("gone")), Some(0));
    }

    #[test]
    fn unavailable_and_full_members_are_passed_over() {
        let cs = [c("a", false, 0), c("b", true, 3), c("c", true, 1)];
        assert_eq!(pick(Strategy::RoundRobin, &cs, 3, None), Some(2));
        assert_eq!(pick(Strategy::RoundRobin, &cs, 1, None), None);
        assert_eq!(pick(Strategy::LeastLoaded, &cs, 1, None), None);
        assert_eq!(pick(Strategy::RoundRobin, &[], 1, None), None);
    }

    #[test]
    fn least_loaded_picks_the_fewest_open_threads_and_ties_in_turn() {
        let cs = [c("a", true, 2), c("b", true, 1), c("c", true, 1)];
        assert_eq!(pick(Strategy::LeastLoaded, &cs, 5, None), Some(1));
        assert_eq!(pick(Strategy::LeastLoaded, &cs, 5, Some("b")), Some(2));
        assert_eq!(pick(Strategy::LeastLoaded, &cs, 5, Some("c")), Some(1));
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn without_hours_the_cutoff_is_plain_time() {
        let now = utc("2026-03-14T10:00:00Z");
        let cut = business_cutoff(now, std::time::Duration::from_secs(900), None);
        assert_eq!(cut, Some(utc("2026-03-14T09:45:00Z")));
    }

    #[test]
    fn the_escalation_clock_stops_outside_business_hours() {
        // Saturday 2026-03-14; Sunday closed.
        let hours = parse_hours("mon-sat 10:00-19:00", "Asia/Kolkata").unwrap();
        // Monday 10:05 IST: 5 minutes today, the other 10 at Saturday's close.
        let now = utc("2026-03-16T04:35:00Z");
        let cut = business_cutoff(now, std::time::Duration::from_secs(900), Some(&hours));
        assert_eq!(cut, Some(utc("2026-03-14T13:20:00Z")), "Saturday 18:50 IST");
        // Inside hours, plain time.
        let now = utc("2026-03-14T06:30:00Z"); // 12:00 IST
        let cut = business_cutoff(now, std::time::Duration::from_secs(900), Some(&hours));
        assert_eq!(cut, Some(utc("2026-03-14T06:15:00Z")));
        // Before opening on Monday: the clock stood still since Saturday's close.
        let now = utc("2026-03-16T03:00:00Z"); // 08:30 IST
        let cut = business_cutoff(now, std::time::Duration::from_secs(600), Some(&hours));
        assert_eq!(cut, Some(utc("2026-03-14T13:20:00Z")));
    }

    #[test]
    fn split_days_count_each_span() {
        let hours = parse_hours("mon-fri 09:00-13:00, 14:00-18:00", "UTC").unwrap();
        let now = utc("2026-03-16T14:10:00Z"); // Monday
        let cut = business_cutoff(now, std::time::Duration::from_secs(1800), Some(&hours));
        assert_eq!(cut, Some(utc("2026-03-16T12:40:00Z")));
        assert!(hours.contains(utc("2026-03-16T09:00:00Z")));
        assert!(!hours.contains(utc("2026-03-16T13:30:00Z")));
    }

    #[test]
    fn hours_are_checked_like_a_playbook() {
        let e = parse_hours("mon-fri 19:00-10:00", "UTC").unwrap_err();
        assert!(e.contains("close at"), "{e}");
        let e = parse_hours("mon-fri 10:00-19:00", "Asia/Kolkatta").unwrap_err();
        assert!(e.contains("unknown timezone"), "{e}");
        let e = parse_hours("weekdays", "UTC").unwrap_err();
        assert!(!e.is_empty());
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("2d").unwrap().as_secs(), 172_800);
        for bad in ["", "15", "m", "0s", "15 minutes", "-5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(show_duration(std::time::Duration::from_secs(5400)), "1h30m");
        assert_eq!(show_duration(std::time::Duration::from_secs(2)), "2s");
    }
}

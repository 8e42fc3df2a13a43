//! What would change if a new ruleset replaced an old one, over a history of
//! leads: decisions that differ, grouped by (old rule -> new rule, old
//! outcome -> new outcome), with counts and example leads.
//!
//! The history is streamed in chunks through worker threads, so memory stays
//! constant whatever the file's size and both cores are used.

use crate::engine::eval::Evaluation;
use crate::engine::{evaluate, Lead, Situation};
use crate::history::LeadRecord;
use crate::ruleset::{template_context, Ruleset};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::mpsc;

/// How many example leads each group keeps.
pub const EXAMPLES_PER_GROUP: usize = 3;
/// How many unreadable lines are reported by line number.
pub const ERRORS_KEPT: usize = 20;
const CHUNK: usize = 2048;

/// Options for a diff run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The playbook for leads that name none (else the only playbook).
    pub playbook: Option<String>,
    /// The clock for leads that carry no `now`.
    pub now: DateTime<Utc>,
    pub threads: usize,
}

/// The change for one group of leads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    pub playbook: String,
    pub old_rule: String,
    pub new_rule: String,
    pub old_outcome: String,
    pub new_outcome: String,
}

/// A lead that shows a group's change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub line: u64,
    pub name: Option<String>,
    /// What else differs when rule and outcome are the same (actions, message).
    pub detail: Option<String>,
}

/// A group of leads whose decision changes the same way.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    #[serde(flatten)]
    pub key: GroupKey,
    pub count: u64,
    pub examples: Vec<Example>,
}

/// A line that could not be decided.
#[derive(Clone, Debug, Serialize)]
pub struct LineError {
    pub line: u64,
    pub error: String,
}

/// The whole comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub leads: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub skipped: u64,
    /// Leads that could not be decided at all (a failure inside handoff):
    /// neither changed nor unchanged, and the run must not pass.
    pub failed: u64,
    pub groups: Vec<Group>,
    pub errors: Vec<LineError>,
}

#[derive(Default)]
struct Partial {
    leads: u64,
    changed: u64,
    skipped: u64,
    failed: u64,
    groups: BTreeMap<GroupKey, (u64, Vec<Example>)>,
    errors: Vec<LineError>,
}

impl Partial {
    fn merge(&mut self, other: Partial) {
        self.leads += other.leads;
        self.changed += other.changed;
        self.skipped += other.skipped;
        self.failed += other.failed;
        for (key, (count, examples)) in other.groups {
            let entry = self.groups.entry(key).or_default();
            entry.0 += count;
            entry.1.extend(examples);
            entry.1.sort_by_key(|e| e.line);
            entry.1.truncate(EXAMPLES_PER_GROUP);
        }
        self.errors.extend(other.errors);
        self.errors.sort_by_key(|e| e.line);
        self.errors.truncate(ERRORS_KEPT);
    }
}

/// What a decision comes to, for grouping: the rule that decided, and the outcome.
fn summarize(e: &Evaluation) -> (String, String) {
    let rule = if e.otherwise {
        "otherwise".to_string()
    } else {
        e.rules
            .last()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "(no rule)".into())
    };
    let outcome = if let Some(reason) = &e.actions.drop {
        format!("drop {reason:?}")
    } else if let Some(h) = &e.handoff {
        h.outcome.as_str().to_string()
    } else {
        "no handoff".to_string()
    };
    (rule, outcome)
}

fn shown(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("none")
}

/// Compares everything but the ruleset: rules fired, actions, handoff.
fn differences(old: &Evaluation, new: &Evaluation) -> Vec<String> {
    let mut out = Vec::new();
    if old.rules != new.rules {
        let names = |r: &[std::sync::Arc<str>]| {
            r.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "rules [{}] -> [{}]",
            names(&old.rules),
            names(&new.rules)
        ));
    }
    let (a, b) = (&old.actions, &new.actions);
    if a.assign != b.assign {
        out.push(format!(
            "assign {} -> {}",
            shown(&a.assign),
            shown(&b.assign)
        ));
    }
    if a.takeover != b.takeover {
        out.push(format!(
            "takeover {} -> {}",
            shown(&a.takeover),
            shown(&b.takeover)
        ));
    }
    if a.tags != b.tags {
        out.push(format!(
            "tags [{}] -> [{}]",
            a.tags.join(", "),
            b.tags.join(", ")
        ));
    }
    if a.notify != b.notify {
        out.push(format!(
            "notify [{}] -> [{}]",
            a.notify.join(", "),
            b.notify.join(", ")
        ));
    }
    if a.ask != b.ask {
        out.push(format!(
            "ask [{}] -> [{}]",
            a.ask.join(", "),
            b.ask.join(", ")
        ));
    }
    if a.drop != b.drop {
        out.push(format!("drop {} -> {}", shown(&a.drop), shown(&b.drop)));
    }
    if old.handoff != new.handoff {
        let show = |h: &Option<crate::engine::eval::HandoffResolution>| match h {
            Some(h) => format!(
                "{}{}",
                h.outcome.as_str(),
                match (&h.open, &h.template) {
                    (Some(o), Some(t)) => format!(" ({o} / {t})"),
                    (Some(o), None) => format!(" ({o})"),
                    (None, Some(t)) => format!(" ({t})"),
                    (None, None) => String::new(),
                }
            ),
            None => "none".into(),
        };
        out.push(format!(
            "handoff {} -> {}",
            show(&old.handoff),
            show(&new.handoff)
        ));
    }
    out
}

/// Decides one line with both rulesets; `Ok(None)` when nothing differs.
fn compare_line(
    text: &str,
    old: &Ruleset,
    new: &Ruleset,
    options: &Options,
    templates_differ: bool,
) -> Result<Option<(GroupKey, Option<String>)>, String> {
    let record = LeadRecord::parse(text)?;
    let situation = record.situation(options.now)?;
    let playbook = record
        .lead
        .playbook
        .clone()
        .or_else(|| options.playbook.clone())
        .or_else(|| {
            (new.playbooks.len() == 1)
                .then(|| new.playbooks.keys().next().cloned())
                .flatten()
        })
        .ok_or("the lead names no `playbook` and `--playbook` is not given")?;
    let old_pb = old
        .playbook(&playbook)
        .map_err(|e| format!("old rules: {e}"))?;
    let new_pb = new
        .playbook(&playbook)
        .map_err(|e| format!("new rules: {e}"))?;
    let a = evaluate(&old_pb.compiled, &record.lead, &situation);
    let b = evaluate(&new_pb.compiled, &record.lead, &situation);
    let mut diffs = differences(&a, &b);
    // With the same rules and templates, the same lead renders the same
    // message; render only when the templates themselves changed.
    if diffs.is_empty() && templates_differ {
        if let (Some(ha), Some(hb)) = (&a.handoff, &b.handoff) {
            let ma = message(old, old_pb, &record.lead, &situation, &a, ha);
            let mb = message(new, new_pb, &record.lead, &situation, &b, hb);
            if ma != mb {
                diffs.push(format!("message {ma:?} -> {mb:?}"));
            }
        }
    }
    if diffs.is_empty() {
        return Ok(None);
    }
    let (old_rule, old_outcome) = summarize(&a);
    let (new_rule, new_outcome) = summarize(&b);
    let detail = (old_rule == new_rule && old_outcome == new_outcome).then(|| diffs.join("; "));
    Ok(Some((
        GroupKey {
            playbook,
            old_rule,
            new_rule,
            old_outcome,
            new_outcome,
        },
        detail,
    )))
}

fn message(
    ruleset: &Ruleset,
    playbook: &crate::ruleset::LoadedPlaybook,
    lead: &Lead,
    situation: &Situation,
    evaluation: &Evaluation,
    handoff: &crate::engine::eval::HandoffResolution,
) -> Option<String> {
    use crate::engine::Outcome;
    let context = template_context(&playbook.compiled, lead, situation, &evaluation.actions);
    match handoff.outcome {
        Outcome::Session => ruleset
            .templates
            .render_file(handoff.open.as_deref()?, &context)
            .ok(),
        Outcome::Template => ruleset
            .templates
            .render_approved(handoff.template.as_deref()?, &context)
            .ok()
            .map(|r| r.preview),
        _ => None,
    }
}

fn process_chunk(
    chunk: Vec<(u64, String)>,
    old: &Ruleset,
    new: &Ruleset,
    options: &Options,
    templates_differ: bool,
) -> Partial {
    tally(chunk, |text| {
        compare_line(text, old, new, options, templates_differ)
    })
}

/// What one line compared to.
type Compared = Result<Option<(GroupKey, Option<String>)>, String>;

/// Counts a chunk's lines as `compare` finds them.
fn tally(chunk: Vec<(u64, String)>, compare: impl Fn(&str) -> Compared) -> Partial {
    let mut partial = Partial::default();
    for (line, text) in chunk {
        if text.trim().is_empty() {
            continue;
        }
        // A failure deciding one lead names that lead and fails the run; it
        // never passes as "no change", and the other leads are still compared.
        let compared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compare(&text)));
        let Ok(compared) = compared else {
            partial.failed += 1;
            if partial.errors.len() < ERRORS_KEPT {
                partial.errors.push(LineError {
                    line,
                    error: "deciding this lead failed inside handoff (a bug: please report it with this line)".into(),
                });
            }
            continue;
        };
        match compared {
            Ok(None) => partial.leads += 1,
            Ok(Some((key, detail))) => {
                partial.leads += 1;
                partial.changed += 1;
                let name = LeadRecord::parse(&text).ok().and_then(|r| r.lead.name);
                let entry = partial.groups.entry(key).or_default();
                entry.0 += 1;
                if entry.1.len() < EXAMPLES_PER_GROUP {
                    entry.1.push(Example { line, name, detail });
                }
            }
            Err(error) => {
                partial.skipped += 1;
                if partial.errors.len() < ERRORS_KEPT {
                    partial.errors.push(LineError { line, error });
                }
            }
        }
    }
    partial
}

/// Streams `reader` through both rulesets. `progress` is called with the
/// bytes read so far, from the reading thread.
pub fn run(
    reader: impl BufRead,
    old: &Ruleset,
    new: &Ruleset,
    templates_differ: bool,
    options: &Options,
    mut progress: impl FnMut(u64, u64),
) -> std::io::Result<Summary> {
    let threads = options.threads.max(1);
    let (work_tx, work_rx) = mpsc::sync_channel::<Vec<(u64, String)>>(threads * 2);
    let work_rx = std::sync::Mutex::new(work_rx);
    let mut total = Partial::default();
    let mut read_error = None;
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for _ in 0..threads {
            let work_rx = &work_rx;
            workers.push(scope.spawn(move || {
                let mut partial = Partial::default();
                loop {
                    // A poisoned lock only means another worker panicked; stop then.
                    let next = match work_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => break,
                    };
                    match next {
                        Ok(chunk) => {
                            partial.merge(process_chunk(chunk, old, new, options, templates_differ))
                        }
                        Err(_) => break,
                    }
                }
                partial
            }));
        }
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut line_no = 0u64;
        let mut bytes = 0u64;
        let mut buffer = String::new();
        let mut reader = reader;
        loop {
            buffer.clear();
            match reader.read_line(&mut buffer) {
                Ok(0) => break,
                Ok(n) => {
                    bytes += n as u64;
                    line_no += 1;
                    chunk.push((line_no, buffer.trim_end_matches(['\n', '\r']).to_string()));
                    if chunk.len() == CHUNK {
                        if work_tx
                            .send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                            .is_err()
                        {
                            break;
                        }
                        progress(bytes, line_no);
                    }
                }
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = work_tx.send(chunk);
        }
        progress(bytes, line_no);
        drop(work_tx);
        for worker in workers {
            match worker.join() {
                Ok(partial) => total.merge(partial),
                // Its leads were not compared: the run fails.
                Err(_) => total.failed += 1,
            }
        }
    });
    if let Some(e) = read_error {
        return Err(e);
    }
    let mut groups: Vec<Group> = total
        .groups
        .into_iter()
        .map(|(key, (count, examples))| Group {
            key,
            count,
            examples,
        })
        .collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    Ok(Summary {
        leads: total.leads,
        changed: total.changed,
        unchanged: total.leads - total.changed,
        skipped: total.skipped,
        failed: total.failed,
        groups,
        errors: total.errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lead_that_cannot_be_decided_is_counted_as_failed_never_as_unchanged() {
        let chunk = vec![
            (1, "{\"name\": \"ok\"}".to_string()),
            (2, "{\"name\": \"boom\"}".to_string()),
            (3, "not json".to_string()),
            (4, "   ".to_string()),
        ];
        let partial = tally(chunk, |text| {
            if text.contains("boom") {
                panic!("a failure inside the engine");
            }
            if text.starts_with('{') {
                Ok(None)
            } else {
                Err("not a lead".into())
            }
        });
        assert_eq!((partial.leads, partial.changed), (1, 0));
        assert_eq!((partial.failed, partial.skipped), (1, 1));
        let lines: Vec<u64> = partial.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3], "the failed lead is named by its line");
        assert!(partial.errors[0].error.contains("failed inside handoff"));
    }
}

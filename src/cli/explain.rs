//! `handoff explain --lead FILE`: the decision for one lead and why, in a
//! form an ops person reads at a glance (or JSON).

use super::{exit, fail, Format, RulesArgs};
use crate::dsl::diagnostic::render;
use crate::engine::eval::{RuleResult, Trace};
pub use crate::engine::Window;
use crate::engine::{Lead, Situation};
pub use crate::history::LeadRecord;
use crate::ruleset::{load, Decision, Ruleset};
use chrono::{DateTime, Utc};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The lead, as JSON (the shape `POST /v1/leads` takes). `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    lead: PathBuf,
    /// The playbook that decides [default: the lead's `playbook`, or the only one].
    #[arg(long, value_name = "NAME")]
    playbook: Option<String>,
    /// The rules directory.
    #[arg(long, value_name = "DIR", default_value = "rules")]
    rules: PathBuf,
    #[command(flatten)]
    templates: RulesArgs,
    /// The evaluation clock, RFC 3339 [default: the lead file's `now`, else the current time].
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// The WhatsApp 24-hour window [default: the lead file's `window`, else closed].
    #[arg(long, value_enum)]
    window: Option<Window>,
    /// The thread has been taken over by a person.
    #[arg(long)]
    human: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
}

pub fn run(args: ExplainArgs) -> ExitCode {
    let text = if args.lead.as_os_str() == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s) {
            return fail(format!("cannot read the lead from standard input: {e}"));
        }
        s
    } else {
        match std::fs::read_to_string(&args.lead) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot read `{}`: {e}", args.lead.display())),
        }
    };
    let record = match LeadRecord::parse(&text) {
        Ok(r) => r,
        Err(e) => return fail(format!("`{}` is not a lead: {e}", args.lead.display())),
    };
    let now = match args.now.as_deref().or(record.now.as_deref()) {
        Some(t) => match DateTime::parse_from_rfc3339(t) {
            Ok(t) => t.with_timezone(&Utc),
            Err(_) => {
                return fail(format!(
                    "`{t}` is not an RFC 3339 time; write it as `2027-01-10T10:00:00+05:30`"
                ))
            }
        },
        None => Utc::now(),
    };
    let window = args.window.or(record.window).unwrap_or(Window::Closed);
    let situation = Situation {
        now,
        window_open: window == Window::Open,
        human: args.human || record.human,
        event: record.event,
        thread: record.thread.at(now),
        marketing_opt_out: record.marketing == crate::engine::Marketing::OptedOut,
        message: None,
    };
    let loaded = load(&args.rules, args.templates.templates.as_deref());
    let Some(ruleset) = &loaded.ruleset else {
        for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
            eprint!("{}", render(d, &loaded.sources));
        }
        return fail(
            "the rules do not check; fix the errors above (`handoff check` lists them all)",
        );
    };
    let playbook = match args
        .playbook
        .clone()
        .or_else(|| record.lead.playbook.clone())
        .or_else(|| {
            (ruleset.playbooks.len() == 1)
                .then(|| ruleset.playbooks.keys().next().cloned())
                .flatten()
        }) {
        Some(p) => p,
        None => {
            return fail(format!(
                "which playbook decides this lead? pass `--playbook` ({})",
                ruleset
                    .playbooks
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let (decision, trace) = match ruleset.explain(&playbook, &record.lead, &situation) {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    match args.format {
        Format::Json => {
            let out = serde_json::json!({ "decision": decision, "trace": trace });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
        Format::Human => print!(
            "{}",
            human(ruleset, &record.lead, &situation, &decision, &trace)
        ),
    }
    exit::ok()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The human form of a decision and its trace.
pub fn human(
    ruleset: &Ruleset,
    lead: &Lead,
    situation: &Situation,
    decision: &Decision,
    trace: &Trace,
) -> String {
    let mut out = String::new();
    let playbook = ruleset.playbooks.get(&decision.playbook);
    let tz = playbook
        .map(|p| p.compiled.schema.timezone)
        .unwrap_or(chrono_tz::UTC);
    let who = [
        lead.name.clone(),
        lead.channel.clone(),
        lead.intent.as_ref().map(|i| format!("intent {i}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" · ");
    let _ = writeln!(
        out,
        "lead      {}",
        if who.is_empty() {
            "(no name, channel or intent)".into()
        } else {
            who
        }
    );
    let _ = writeln!(
        out,
        "playbook  {} ({}) · ruleset {}",
        decision.playbook,
        playbook.map(|p| p.file.as_str()).unwrap_or("?"),
        &decision.ruleset[..12.min(decision.ruleset.len())]
    );
    let local = situation.now.with_timezone(&tz);
    let _ = writeln!(
        out,
        "now       {} {} · window {} · {}",
        local.format("%a %Y-%m-%d %H:%M"),
        tz.name(),
        if situation.window_open {
            "open"
        } else {
            "closed"
        },
        if situation.human {
            "taken over by a person"
        } else {
            "automated"
        }
    );
    let thread = &situation.thread;
    if situation.event != crate::engine::Event::Lead
        || thread.open
        || thread.closed.is_some()
        || situation.marketing_opt_out
    {
        let mut parts = vec![format!("event {}", situation.event.as_str())];
        let when = |t: chrono::DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M");
        match (thread.open, thread.opened) {
            (true, Some(at)) => parts.push(format!("thread open since {}", when(at))),
            (true, None) => parts.push("thread open".into()),
            (false, _) => parts.push("no thread open".into()),
        }
        if let Some(at) = thread.closed {
            parts.push(format!("last closed {}", when(at)));
        }
        if situation.marketing_opt_out {
            parts.push("opted out of marketing".into());
        }
        let _ = writeln!(out, "thread    {}", parts.join(" · "));
    }
    out.push('\n');
    let headline = if let Some(reason) = &decision.actions.drop {
        format!(
            "dropped by `{}`: {reason}",
            decision.rules.last().map(|r| &**r).unwrap_or("?")
        )
    } else if decision.otherwise {
        "no rule fired; `otherwise` applies".to_string()
    } else if decision.rules.is_empty() {
        "no rule fired and there is no `otherwise`: nothing to do".to_string()
    } else {
        let names: Vec<String> = decision.rules.iter().map(|r| format!("`{r}`")).collect();
        format!("{} fired", names.join(" then "))
    };
    let _ = writeln!(out, "decision  {headline}");
    let actions = &decision.actions;
    if let Some(h) = &decision.handoff {
        let detail = match h.outcome {
            crate::engine::Outcome::Session => format!(
                "session message `{}` (window open)",
                h.open.as_deref().unwrap_or("")
            ),
            crate::engine::Outcome::Template => format!(
                "approved template `{}` (window closed)",
                h.template.as_deref().unwrap_or("")
            ),
            crate::engine::Outcome::BlockedNoOptIn => {
                "blocked: no WhatsApp opt-in on record".into()
            }
            crate::engine::Outcome::BlockedWindowClosed => {
                "blocked: the window is closed and the rule gives no template".into()
            }
            crate::engine::Outcome::PausedHuman => {
                "paused: a person has taken this thread over".into()
            }
            crate::engine::Outcome::AlreadyOpen => {
                "nothing sent: the lead's thread is already open (one opener per conversation)"
                    .into()
            }
            crate::engine::Outcome::BlockedMarketingOptOut => format!(
                "blocked: `{}` is a marketing template and the lead opted out of marketing messages",
                h.template.as_deref().unwrap_or("")
            ),
        };
        let _ = writeln!(out, "  handoff   {} · {detail}", h.outcome.as_str());
        if let Some(message) = &h.message {
            // Quoted as written: escaping would garble scripts such as Devanagari.
            let shown = message.replace('\n', "\n            ");
            let _ = writeln!(out, "  message   \"{shown}\"");
        }
        if let Some(error) = &h.error {
            let _ = writeln!(out, "  error     {error}");
        }
    }
    if let Some(q) = &actions.takeover {
        let _ = writeln!(out, "  takeover  {q}");
    }
    if let Some(q) = &actions.assign {
        let _ = writeln!(out, "  assign    {q}");
    }
    if !actions.tags.is_empty() {
        let _ = writeln!(out, "  tags      {}", actions.tags.join(", "));
    }
    if !actions.notify.is_empty() {
        let _ = writeln!(out, "  notify    {}", actions.notify.join(", "));
    }
    if !actions.ask.is_empty() {
        let _ = writeln!(out, "  ask       {}", actions.ask.join(", "));
    }
    for warning in &decision.warnings {
        let _ = writeln!(out, "  warning   {warning}");
    }
    out.push('\n');
    let _ = writeln!(out, "why");
    if trace.rules.is_empty() {
        let _ = writeln!(out, "  no rule could match this lead's intent");
    }
    let width = trace
        .rules
        .iter()
        .flat_map(|r| r.tests.iter().map(|t| one_line(t.test).chars().count()))
        .max()
        .unwrap_or(0)
        .min(48);
    for rule in &trace.rules {
        let (mark, result) = match rule.result {
            RuleResult::Fired => ("✓", "fired"),
            RuleResult::NoMatch => ("✗", "no match"),
        };
        let stops = trace.stopped_by == Some(rule.rule);
        let tail = if stops {
            ", stopped here"
        } else if rule.result == RuleResult::Fired {
            ", continued"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {mark} {} (line {}): {result}{tail}",
            rule.rule, rule.line
        );
        for test in &rule.tests {
            let text = one_line(test.test);
            let (mark, seen) = match (test.result, &test.value) {
                (Some(true), Some(v)) => ("✓", format!("saw {v}")),
                (Some(false), Some(v)) => ("✗", format!("saw {v}")),
                _ => ("·", "not needed".to_string()),
            };
            let _ = writeln!(out, "      {mark} {text:<width$}  {seen}");
        }
    }
    if trace.not_reached > 0 {
        let _ = writeln!(
            out,
            "  {} later rule{} not tried",
            trace.not_reached,
            if trace.not_reached == 1 { "" } else { "s" }
        );
    }
    if trace.skipped_for_intent > 0 {
        let _ = writeln!(
            out,
            "  {} rule{} for other intents skipped",
            trace.skipped_for_intent,
            if trace.skipped_for_intent == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    if trace.otherwise {
        let _ = writeln!(out, "  → otherwise");
    }
    out
}

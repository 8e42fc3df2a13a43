//! Evaluation: (compiled playbook, lead, situation) -> decision, optionally
//! with a trace of why. Pure: the same inputs always give the same decision.
//!
//! A lead is decided through the playbook's `decide` structure: each group
//! of predicates is answered at most once per lead, into per-thread scratch,
//! and rules survive or fall 64 at a time. A trace walks each tried rule's
//! condition as written, reading the same predicate answers, so it shows
//! every test with the value it saw. The plain tree walk over each rule's
//! condition stays as the reference (`engine::reference`) that the compiled
//! path is tested against.

use super::compile::{CompiledPlaybook, CompiledRule, Node, Op, Scale, Slot};
use super::decide::{Block, Formula, Plan, RuleForm};
use super::lead::{Event, Lead, Situation};
use super::predicate::{
    number_none, number_row, text_none, text_other, GroupKind, NumberKey, Predicates,
};
use super::value::{coerce, date_to_day, readable, Seen, Val};
use crate::dsl::ast::{ActionKind, AskTarget, CmpOp, FieldType};
use crate::dsl::schema::{normalize_text, Builtin, PathRef, CHANNELS};
use serde::Serialize;
use std::borrow::Cow;
use std::cell::{OnceCell, RefCell};
use std::sync::Arc;

/// What the playbook decided for a lead.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub playbook: String,
    /// Every rule that fired, in order.
    pub rules: Vec<Arc<str>>,
    /// Whether `otherwise` applied (no rule fired).
    pub otherwise: bool,
    pub actions: Actions,
    /// How the WhatsApp handoff resolves, when the decision has one.
    pub handoff: Option<HandoffResolution>,
    /// Values that could not be read as their type, and similar.
    pub warnings: Vec<String>,
}

/// The actions of a decision, merged over the rules that fired.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Actions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffAction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The queue to assign the lead to.
    pub assign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The queue whose people take the thread over.
    pub takeover: Option<String>,
    pub tags: Vec<String>,
    /// Endpoints to notify.
    pub notify: Vec<String>,
    /// Fields to ask the lead for.
    pub ask: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Why the lead is dropped.
    pub drop: Option<String>,
}

/// `handoff whatsapp { open ... template ... }` as the decision carries it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HandoffAction {
    /// The template file for a session message.
    pub open: Option<String>,
    /// The approved template.
    pub template: Option<String>,
    /// The rule that asked for the handoff (`null` for `otherwise`).
    #[schema(value_type = Option<String>)]
    pub rule: Option<Arc<str>>,
}

/// How the WhatsApp handoff resolves: a session message (window open), an
/// approved template (window closed), or nothing sent because there is no
/// opt-in, because a person has the thread, because the lead's thread is
/// already open (one opener per conversation), because the template is a
/// marketing one and the lead opted out of marketing messages, or because
/// the window is closed and there is no template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Session,
    Template,
    BlockedNoOptIn,
    BlockedWindowClosed,
    PausedHuman,
    /// The lead's thread is already open: no second opening message.
    AlreadyOpen,
    /// A marketing template for a lead who opted out of marketing messages.
    BlockedMarketingOptOut,
}

impl Outcome {
    /// The outcome as written in test files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Session => "session",
            Outcome::Template => "template",
            Outcome::BlockedNoOptIn => "blocked_no_opt_in",
            Outcome::BlockedWindowClosed => "blocked_window_closed",
            Outcome::PausedHuman => "paused_human",
            Outcome::AlreadyOpen => "already_open",
            Outcome::BlockedMarketingOptOut => "blocked_marketing_opt_out",
        }
    }
}

/// The handoff's outcome and what would be sent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HandoffResolution {
    pub outcome: Outcome,
    /// The template file rendered for a session message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    /// The approved template sent (or kept as fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// Why the decision is what it is.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
/// Its text borrows from the compiled playbook, so tracing costs little.
pub struct Trace<'p> {
    /// The rules tried, in order.
    pub rules: Vec<RuleTrace<'p>>,
    /// The rule that stopped evaluation (fired without `continue`).
    pub stopped_by: Option<&'p str>,
    /// Rules after the stop that were not tried.
    pub not_reached: usize,
    /// Rules not tried because they test for other intents.
    pub skipped_for_intent: usize,
    pub otherwise: bool,
}

/// One rule in a trace.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RuleTrace<'p> {
    pub rule: &'p str,
    /// The rule's line in its rules file.
    #[schema(minimum = 1)]
    pub line: usize,
    pub result: RuleResult,
    pub tests: Vec<TestTrace<'p>>,
}

/// What happened to a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleResult {
    Fired,
    NoMatch,
}

/// One test in a trace: the test as written, the value it saw, its result
/// (`None` when an earlier test already decided the rule).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TestTrace<'p> {
    /// The test as written.
    pub test: &'p str,
    /// The value the test saw, as a person reads it (`not set` when the
    /// lead has none); `null` when the test was not run.
    #[schema(value_type = Option<String>)]
    pub value: Option<Seen<'p>>,
    /// `null` when an earlier test already decided the rule.
    pub result: Option<bool>,
}

/// Evaluates a lead.
pub fn evaluate(playbook: &CompiledPlaybook, lead: &Lead, situation: &Situation) -> Evaluation {
    run(playbook, lead, situation, &mut NoRecord, Walk::Compiled)
}

/// Evaluates a lead and explains why.
pub fn evaluate_with_trace<'p>(
    playbook: &'p CompiledPlaybook,
    lead: &'p Lead,
    situation: &'p Situation,
) -> (Evaluation, Trace<'p>) {
    let mut recorder = TraceRecorder::default();
    let evaluation = run(playbook, lead, situation, &mut recorder, Walk::Compiled);
    (evaluation, recorder.finish())
}

/// Evaluates a lead by walking each candidate rule's condition tree.
pub(super) fn evaluate_by_tree(
    playbook: &CompiledPlaybook,
    lead: &Lead,
    situation: &Situation,
) -> Evaluation {
    run(playbook, lead, situation, &mut NoRecord, Walk::Tree)
}

/// Evaluates a lead by walking each candidate rule's condition tree, and
/// explains why.
pub(super) fn evaluate_by_tree_with_trace<'p>(
    playbook: &'p CompiledPlaybook,
    lead: &'p Lead,
    situation: &'p Situation,
) -> (Evaluation, Trace<'p>) {
    let mut recorder = TraceRecorder::default();
    let evaluation = run(playbook, lead, situation, &mut recorder, Walk::Tree);
    (evaluation, recorder.finish())
}

/// How the rules are tried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Through the playbook's predicates and candidate blocks.
    Compiled,
    /// Each rule's condition tree, test by test (the reference).
    Tree,
}

/// What one thread reuses from lead to lead, so deciding a lead allocates
/// nothing for its predicates: each group's answer, stamped with the
/// evaluation it belongs to (a stale stamp means "not answered yet").
#[derive(Default)]
struct Scratch {
    epoch: u32,
    stamps: Vec<u32>,
    answers: Vec<u32>,
}

impl Scratch {
    /// Starts a lead over `groups` groups: every answer becomes unknown.
    fn begin(&mut self, groups: usize) {
        if self.stamps.len() < groups {
            self.stamps.resize(groups, 0);
            self.answers.resize(groups, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        // Stamp 0 means never answered, so the epoch skips it on wrapping.
        if self.epoch == 0 {
            self.stamps.fill(0);
            self.epoch = 1;
        }
    }

    /// Makes a group's answer unknown again (its value changed).
    fn forget(&mut self, group: u32) {
        if let Some(stamp) = self.stamps.get_mut(group as usize) {
            *stamp = 0;
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch, or a fresh one should the thread's
/// be in use (an evaluation inside an evaluation).
fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

trait Recorder<'p> {
    const ON: bool;
    fn test(&mut self, leaf: u16, value: &Val<'p>, result: bool);
    fn rule(&mut self, rule: &'p CompiledRule, result: RuleResult);
    fn stop(&mut self, rule: &'p str, not_reached: usize);
    fn otherwise(&mut self);
    fn skipped(&mut self, count: usize);
}

struct NoRecord;

impl<'p> Recorder<'p> for NoRecord {
    const ON: bool = false;
    #[inline(always)]
    fn test(&mut self, _: u16, _: &Val<'p>, _: bool) {}
    #[inline(always)]
    fn rule(&mut self, _: &'p CompiledRule, _: RuleResult) {}
    #[inline(always)]
    fn stop(&mut self, _: &'p str, _: usize) {}
    #[inline(always)]
    fn otherwise(&mut self) {}
    #[inline(always)]
    fn skipped(&mut self, _: usize) {}
}

#[derive(Default)]
struct TraceRecorder<'p> {
    pending: Vec<(u16, Seen<'p>, bool)>,
    rules: Vec<RuleTrace<'p>>,
    stopped_by: Option<&'p str>,
    not_reached: usize,
    skipped_for_intent: usize,
    otherwise: bool,
}

impl<'p> Recorder<'p> for TraceRecorder<'p> {
    const ON: bool = true;
    fn test(&mut self, leaf: u16, value: &Val<'p>, result: bool) {
        self.pending.push((leaf, value.seen(), result));
    }
    fn rule(&mut self, rule: &'p CompiledRule, result: RuleResult) {
        let mut tests: Vec<TestTrace<'p>> = rule
            .tests
            .iter()
            .map(|t| TestTrace {
                test: t,
                value: None,
                result: None,
            })
            .collect();
        for (leaf, value, outcome) in self.pending.drain(..) {
            let negated = rule
                .negated
                .get(usize::from(leaf))
                .copied()
                .unwrap_or(false);
            if let Some(t) = tests.get_mut(usize::from(leaf)) {
                t.value = Some(value);
                t.result = Some(outcome != negated);
            }
        }
        self.rules.push(RuleTrace {
            rule: &rule.name,
            line: rule.line,
            result,
            tests,
        });
    }
    fn stop(&mut self, rule: &'p str, not_reached: usize) {
        self.stopped_by = Some(rule);
        self.not_reached = not_reached;
    }
    fn otherwise(&mut self) {
        self.otherwise = true;
    }
    fn skipped(&mut self, count: usize) {
        self.skipped_for_intent = count;
    }
}

impl<'p> TraceRecorder<'p> {
    fn finish(self) -> Trace<'p> {
        Trace {
            rules: self.rules,
            stopped_by: self.stopped_by,
            not_reached: self.not_reached,
            skipped_for_intent: self.skipped_for_intent,
            otherwise: self.otherwise,
        }
    }
}

/// How many declared fields a lead binds without allocating.
const INLINE_FIELDS: usize = 16;

/// One slot per declared field: on the stack for the usual schema, on the
/// heap past [`INLINE_FIELDS`].
enum PerField<T> {
    Inline([T; INLINE_FIELDS], usize),
    Heap(Vec<T>),
}

impl<T> PerField<T> {
    fn new(len: usize, make: impl Fn() -> T) -> PerField<T> {
        if len <= INLINE_FIELDS {
            PerField::Inline(std::array::from_fn(|_| make()), len)
        } else {
            PerField::Heap((0..len).map(|_| make()).collect())
        }
    }
}

impl<T> std::ops::Deref for PerField<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            PerField::Inline(items, len) => &items[..*len],
            PerField::Heap(items) => items,
        }
    }
}

impl<T> std::ops::DerefMut for PerField<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            PerField::Inline(items, len) => &mut items[..*len],
            PerField::Heap(items) => items,
        }
    }
}

/// A lead's values for one evaluation. Fields are coerced to their declared
/// types when a test first reads them, so a lead pays only for the fields the
/// rules it tries look at; `finish` then reports values that cannot be read.
struct Bound<'a> {
    lead: &'a Lead,
    schema: &'a crate::dsl::schema::Schema,
    /// The lead's JSON value for each declared field, found in one merge pass.
    given: PerField<Option<&'a serde_json::Value>>,
    fields: PerField<OnceCell<Val<'a>>>,
    qualified: OnceCell<bool>,
    intent: Val<'a>,
    channel: OnceCell<Val<'a>>,
    consent: bool,
    window_open: bool,
    human: bool,
    business_hours: bool,
    tags: Val<'a>,
    today: i32,
    now: i64,
    situation: &'a Situation,
}

fn bind<'a>(playbook: &'a CompiledPlaybook, lead: &'a Lead, situation: &'a Situation) -> Bound<'a> {
    let schema = &playbook.schema;
    let tz = schema.timezone;
    let local = situation.now.with_timezone(&tz);
    let business_hours = if playbook.uses_business_hours {
        schema
            .hours
            .as_ref()
            .is_none_or(|h| h.contains(local.naive_local()))
    } else {
        false
    };
    // Both the lead's fields and the declared ones (by `field_order`) are
    // sorted by name: one merge finds every value without a lookup per field.
    let mut given = PerField::new(schema.fields.len(), || None);
    let mut declared = playbook.field_order.iter().peekable();
    let mut previous: Option<&str> = None;
    for (key, value) in &lead.fields {
        // Should the map ever iterate unsorted, look each field up instead.
        if previous.is_some_and(|p| p > key.as_str()) {
            for (i, field) in schema.fields.iter().enumerate() {
                given[i] = lead.fields.get(&field.name);
            }
            break;
        }
        previous = Some(key);
        while let Some(&&i) = declared.peek() {
            match schema.fields[i].name.as_str().cmp(key.as_str()) {
                std::cmp::Ordering::Less => {
                    declared.next();
                }
                std::cmp::Ordering::Equal => {
                    given[i] = Some(value);
                    declared.next();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
    }
    Bound {
        lead,
        schema,
        given,
        fields: PerField::new(schema.fields.len(), OnceCell::new),
        qualified: OnceCell::new(),
        intent: lead
            .intent
            .as_deref()
            .map(Val::text)
            .unwrap_or(Val::Missing),
        channel: OnceCell::new(),
        consent: lead.consent.whatsapp,
        window_open: situation.window_open,
        human: situation.human,
        business_hours,
        tags: Val::List(lead.tags.iter().map(|t| normalize_text(t)).collect()),
        today: date_to_day(local.date_naive()),
        now: situation.now.timestamp(),
        situation,
    }
}

impl<'a> Bound<'a> {
    fn field(&self, index: usize) -> &Val<'a> {
        self.fields[index].get_or_init(|| {
            let field = &self.schema.fields[index];
            match self.given[index] {
                None => Val::Missing,
                Some(json) => coerce(json, &field.ty, self.schema.timezone).unwrap_or(Val::Missing),
            }
        })
    }

    fn qualified(&self) -> bool {
        *self.qualified.get_or_init(|| {
            self.schema
                .fields
                .iter()
                .enumerate()
                .all(|(i, f)| !f.required || self.field(i).is_set())
        })
    }

    fn channel(&self) -> &Val<'a> {
        self.channel
            .get_or_init(|| match self.lead.channel.as_deref().map(Val::text) {
                Some(Val::Text { raw, norm }) if CHANNELS.contains(&&*norm) => {
                    Val::Text { raw, norm }
                }
                _ => Val::Missing,
            })
    }

    /// The warnings of this evaluation: values that cannot be read as their
    /// type, an unknown channel, an undeclared intent.
    fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for (i, field) in self.schema.fields.iter().enumerate() {
            let Some(json) = self.given[i] else { continue };
            let problem = match self.fields[i].get() {
                // Read already: it failed if it came out missing but was given.
                Some(value) => {
                    if value.is_set() {
                        None
                    } else {
                        coerce(json, &field.ty, self.schema.timezone).err()
                    }
                }
                None => readable(json, &field.ty, self.schema.timezone).err(),
            };
            if let Some(problem) = problem {
                warnings.push(format!(
                    "field `{}`: {} is not {}, so it counts as not set",
                    field.name, json, problem.expected
                ));
            }
        }
        if let (Val::Text { norm, raw }, Some(known)) = (&self.intent, &self.schema.intents) {
            if !known.iter().any(|k| k.as_str() == &**norm) {
                warnings.push(format!(
                    "intent `{raw}` is not one of this playbook's intents ({})",
                    known.join(", ")
                ));
            }
        }
        if let Some(raw) = self
            .lead
            .channel
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            if !self.channel().is_set() {
                warnings.push(format!(
                    "channel `{raw}` is not one of {}, so it counts as not set",
                    CHANNELS.join(", ")
                ));
            }
        }
        warnings
    }
}

fn first_word(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or("")
}

impl<'a> Bound<'a> {
    fn value(&self, slot: Slot) -> Cow<'_, Val<'a>> {
        let text =
            |s: &'a Option<String>| Cow::Owned(s.as_deref().map(Val::text).unwrap_or(Val::Missing));
        match slot {
            PathRef::Field(i) => Cow::Borrowed(self.field(i)),
            PathRef::Builtin(b) => match b {
                Builtin::Intent => Cow::Borrowed(&self.intent),
                Builtin::Channel => Cow::Borrowed(self.channel()),
                Builtin::LeadName => text(&self.lead.name),
                Builtin::LeadFirstName => {
                    Cow::Owned(first_name(self.lead).map(Val::text).unwrap_or(Val::Missing))
                }
                Builtin::LeadPhone => text(&self.lead.phone),
                Builtin::LeadEmail => text(&self.lead.email),
                Builtin::LeadLanguage => text(&self.lead.language),
                Builtin::ConsentWhatsapp => Cow::Owned(Val::Bool(self.consent)),
                Builtin::WindowOpen => Cow::Owned(Val::Bool(self.window_open)),
                Builtin::ThreadHuman => Cow::Owned(Val::Bool(self.human)),
                Builtin::BusinessHours => Cow::Owned(Val::Bool(self.business_hours)),
                Builtin::Qualified => Cow::Owned(Val::Bool(self.qualified())),
                Builtin::Tags => Cow::Borrowed(&self.tags),
                Builtin::ThreadOpen => Cow::Owned(Val::Bool(self.situation.thread.open)),
                Builtin::ThreadOpened => Cow::Owned(self.instant(if self.situation.thread.open {
                    self.situation.thread.opened
                } else {
                    None
                })),
                Builtin::ThreadClosed => Cow::Owned(self.instant(self.situation.thread.closed)),
                Builtin::Event => Cow::Owned(Val::text(self.situation.event.as_str())),
                Builtin::ConsentMarketing => {
                    Cow::Owned(Val::Bool(!self.situation.marketing_opt_out))
                }
                Builtin::MessageText => Cow::Owned(
                    message_text(self.lead, self.situation)
                        .map(Val::text)
                        .unwrap_or(Val::Missing),
                ),
            },
        }
    }

    /// A moment as a datetime value, its day in the playbook's timezone.
    fn instant(&self, at: Option<chrono::DateTime<chrono::Utc>>) -> Val<'a> {
        match at {
            Some(at) => Val::Instant(
                at.timestamp(),
                date_to_day(at.with_timezone(&self.schema.timezone).date_naive()),
            ),
            None => Val::Missing,
        }
    }

    /// Whether `ask` may report a field: it is not set, and not already
    /// reported while the lead's thread is open.
    fn may_ask(&self, index: usize) -> bool {
        let name = &self.schema.fields[index].name;
        let asked = self.situation.thread.open && self.situation.thread.asked.contains(name);
        !asked && !self.field(index).is_set()
    }

    /// How many tags the lead has now (rules' `tag` actions add to them).
    fn tag_count(&self) -> usize {
        match &self.tags {
            Val::List(items) => items.len(),
            _ => 0,
        }
    }

    fn add_tag(&mut self, tag: &str) {
        if let Val::List(items) = &mut self.tags {
            let norm = normalize_text(tag);
            if !items.contains(&norm) {
                items.push(norm);
            }
        }
    }

    fn test<R: Recorder<'a>>(&self, slot: Slot, op: &Op, leaf: u16, recorder: &mut R) -> bool {
        let value = self.value(slot);
        let result = self.check(&value, op);
        if R::ON {
            recorder.test(leaf, &value, result);
        }
        result
    }

    fn check(&self, value: &Val, op: &Op) -> bool {
        match (op, value) {
            (Op::IsNotSet, v) => !v.is_set(),
            (_, Val::Missing) => false,
            (Op::IsSet, _) => true,
            (Op::Truthy, Val::Bool(b)) => *b,
            (Op::EqBool(want), Val::Bool(b)) => b == want,
            (Op::NeBool(want), Val::Bool(b)) => b != want,
            (Op::EqText(want), Val::Text { norm, .. }) => **norm == **want,
            (Op::NeText(want), Val::Text { norm, .. }) => **norm != **want,
            (Op::InText(list), Val::Text { norm, .. }) => list.iter().any(|x| **x == **norm),
            (Op::NotInText(list), Val::Text { norm, .. }) => !list.iter().any(|x| **x == **norm),
            (Op::ContainsText(needle), Val::Text { norm, .. }) => norm.contains(&**needle),
            (Op::ContainsItem(item), Val::List(items)) => {
                items.iter().any(|x| x.as_str() == &**item)
            }
            (Op::Matches(re), Val::Text { raw, .. }) => re.is_match(raw),
            (Op::Cmp(cmp, want, scale), v) => match scalar(v, *scale) {
                Some(x) => compare(*cmp, x, *want),
                None => false,
            },
            (Op::InNum(list, scale), v) => scalar(v, *scale).is_some_and(|x| list.contains(&x)),
            (Op::NotInNum(list, scale), v) => scalar(v, *scale).is_some_and(|x| !list.contains(&x)),
            (Op::WithinDays(lo, hi), v) => {
                let day = match v {
                    Val::Date(d) | Val::Instant(_, d) => *d,
                    _ => return false,
                };
                let diff = day - self.today;
                *lo <= diff && diff <= *hi
            }
            (Op::WithinSeconds(lo, hi), Val::Instant(secs, _)) => {
                let diff = secs - self.now;
                *lo <= diff && diff <= *hi
            }
            _ => false,
        }
    }

    /// The row that answers group `g` for this lead, computed on first ask.
    #[inline]
    fn answer(&self, predicates: &Predicates, scratch: &mut Scratch, g: u32) -> u32 {
        let i = g as usize;
        if scratch.stamps[i] == scratch.epoch {
            return scratch.answers[i];
        }
        let group = &predicates.groups[i];
        let value = self.value(group.slot);
        let row = match &group.kind {
            GroupKind::Text(index) => match &*value {
                Val::Text { norm, .. } => index
                    .get(&**norm)
                    .copied()
                    .unwrap_or_else(|| text_other(index)),
                _ => text_none(index),
            },
            GroupKind::Number(key, points) => match self.number(&value, *key) {
                Some(x) => number_row(points, x),
                None => number_none(points),
            },
            GroupKind::Single(op) => u32::from(self.check(&value, op)),
        };
        scratch.stamps[i] = scratch.epoch;
        scratch.answers[i] = row;
        row
    }

    /// The number a number group reads from a value, if it has one.
    fn number(&self, value: &Val, key: NumberKey) -> Option<f64> {
        match (key, value) {
            (NumberKey::Scalar(scale), v) => scalar(v, scale),
            (NumberKey::DaysFromToday, Val::Date(day) | Val::Instant(_, day)) => {
                Some(f64::from(day - self.today))
            }
            (NumberKey::SecondsFromNow, Val::Instant(secs, _)) => Some((secs - self.now) as f64),
            _ => None,
        }
    }

    /// Whether predicate `p` holds for this lead.
    #[inline]
    fn holds(&self, predicates: &Predicates, scratch: &mut Scratch, p: u32) -> bool {
        let (g, member) = predicates.of[p as usize];
        let row = self.answer(predicates, scratch, g);
        predicates.groups[g as usize].holds(member, row)
    }

    fn formula(&self, predicates: &Predicates, scratch: &mut Scratch, f: &Formula) -> bool {
        match f {
            Formula::Pred(p) => self.holds(predicates, scratch, *p),
            Formula::And(parts) => parts.iter().all(|p| self.formula(predicates, scratch, p)),
            Formula::Or(parts) => parts.iter().any(|p| self.formula(predicates, scratch, p)),
            Formula::Not(inner) => !self.formula(predicates, scratch, inner),
        }
    }

    /// Whether a rule's fast condition holds, test by test.
    fn form(&self, predicates: &Predicates, scratch: &mut Scratch, form: &RuleForm) -> bool {
        form.literals
            .iter()
            .all(|&(p, want)| self.holds(predicates, scratch, p) == want)
            && form
                .rest
                .as_ref()
                .is_none_or(|f| self.formula(predicates, scratch, f))
    }

    /// The rules of a block that survive this lead's answers to the block's
    /// groups; a group is asked only while some rule still survives.
    fn survivors(
        &self,
        predicates: &Predicates,
        scratch: &mut Scratch,
        plan: &Plan,
        block: &Block,
    ) -> u64 {
        let mut alive = block.valid;
        for &(g, offset) in block.groups.iter() {
            if alive == 0 {
                break;
            }
            let row = self.answer(predicates, scratch, g);
            alive &= !plan.kills[(offset + row) as usize];
        }
        alive
    }

    /// A rule's full condition as written, its tests answered from the
    /// predicates (`leaves`: each test's predicate), recording each test.
    fn eval_by_predicates<R: Recorder<'a>>(
        &self,
        node: &Node,
        leaves: &[u32],
        predicates: &Predicates,
        scratch: &mut Scratch,
        recorder: &mut R,
    ) -> bool {
        match node {
            Node::Test(t) => {
                let result = match leaves.get(usize::from(t.leaf)) {
                    Some(&p) => self.holds(predicates, scratch, p),
                    None => self.check(&self.value(t.slot), &t.op),
                };
                if R::ON {
                    recorder.test(t.leaf, &self.value(t.slot), result);
                }
                result
            }
            Node::And(parts) => parts
                .iter()
                .all(|p| self.eval_by_predicates(p, leaves, predicates, scratch, recorder)),
            Node::Or(parts) => parts
                .iter()
                .any(|p| self.eval_by_predicates(p, leaves, predicates, scratch, recorder)),
            Node::Not(inner) => {
                !self.eval_by_predicates(inner, leaves, predicates, scratch, recorder)
            }
        }
    }

    fn eval<R: Recorder<'a>>(&self, node: &Node, recorder: &mut R) -> bool {
        match node {
            Node::Test(t) => self.test(t.slot, &t.op, t.leaf, recorder),
            Node::And(parts) => parts.iter().all(|p| self.eval(p, recorder)),
            Node::Or(parts) => parts.iter().any(|p| self.eval(p, recorder)),
            Node::Not(inner) => !self.eval(inner, recorder),
        }
    }
}

/// The text of the message being decided: none unless `event` is
/// `message`; the situation's when it gives one, else the latest transcript
/// line the lead wrote.
pub fn message_text<'a>(lead: &'a Lead, situation: &'a Situation) -> Option<&'a str> {
    if situation.event != Event::Message {
        return None;
    }
    situation.message.as_deref().or_else(|| {
        lead.transcript
            .iter()
            .rev()
            .find(|m| m.from == "lead")
            .map(|m| m.text.as_str())
    })
}

/// The lead's own first name, else the first word of its name.
pub fn first_name(lead: &Lead) -> Option<&str> {
    lead.first_name
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| lead.name.as_deref().map(first_word))
        .filter(|s| !s.is_empty())
}

fn scalar(value: &Val, scale: Scale) -> Option<f64> {
    match (value, scale) {
        (Val::Num(n), _) => Some(*n),
        (Val::Date(d), _) => Some(f64::from(*d)),
        (Val::Instant(secs, _), Scale::Instant) => Some(*secs as f64),
        (Val::Instant(_, day), _) => Some(f64::from(*day)),
        _ => None,
    }
}

fn compare(op: CmpOp, x: f64, want: f64) -> bool {
    match op {
        CmpOp::Eq => x == want,
        CmpOp::Ne => x != want,
        CmpOp::Lt => x < want,
        CmpOp::Le => x <= want,
        CmpOp::Gt => x > want,
        CmpOp::Ge => x >= want,
    }
}

fn run<'p, R: Recorder<'p>>(
    playbook: &'p CompiledPlaybook,
    lead: &'p Lead,
    situation: &'p Situation,
    recorder: &mut R,
    walk: Walk,
) -> Evaluation {
    let mut bound = bind(playbook, lead, situation);
    let intent = match &bound.intent {
        Val::Text { norm, .. } => Some(&**norm),
        _ => None,
    };
    let (candidates, plan) = playbook.candidates_and_plan(intent);
    let mut state = RunState {
        fired: Vec::new(),
        actions: Actions::default(),
    };
    match walk {
        Walk::Tree => {
            for (position, &index) in candidates.iter().enumerate() {
                let rule = &playbook.rules[index as usize];
                let condition = if R::ON { &rule.condition } else { &rule.fast };
                let matched = bound.eval(condition, recorder);
                if settle(playbook, index, matched, &mut bound, &mut state, recorder) {
                    recorder.stop(&rule.name, candidates.len() - position - 1);
                    break;
                }
            }
        }
        Walk::Compiled => with_scratch(|scratch| {
            scratch.begin(playbook.decider.predicates.groups.len());
            if R::ON {
                traced(
                    playbook, candidates, &mut bound, scratch, &mut state, recorder,
                );
            } else {
                decide(
                    playbook, candidates, plan, &mut bound, scratch, &mut state, recorder,
                );
            }
        }),
    }
    if R::ON {
        recorder.skipped(playbook.rules.len() - candidates.len());
    }
    let RunState { fired, mut actions } = state;
    let mut otherwise = false;
    if fired.is_empty() {
        if let Some(other) = &playbook.otherwise {
            otherwise = true;
            apply(other, None, &mut actions, &mut bound, playbook);
            if R::ON {
                recorder.otherwise();
            }
        }
    }
    let handoff = actions
        .handoff
        .as_ref()
        .map(|h| resolve(h, &bound, playbook));
    let warnings = bound.warnings();
    Evaluation {
        playbook: playbook.schema.name.clone(),
        rules: fired,
        otherwise,
        actions,
        handoff,
        warnings,
    }
}

/// Tries the candidates block by block: in each, the rules that survive the
/// lead's group answers, in order, until one fires without `continue`.
fn decide<'p, R: Recorder<'p>>(
    playbook: &'p CompiledPlaybook,
    candidates: &[u32],
    plan: &Plan,
    bound: &mut Bound<'p>,
    scratch: &mut Scratch,
    state: &mut RunState,
    recorder: &mut R,
) {
    let predicates = &playbook.decider.predicates;
    for (b, block) in plan.blocks.iter().enumerate() {
        let mut alive = bound.survivors(predicates, scratch, plan, block);
        while alive != 0 {
            let bit = alive.trailing_zeros();
            alive &= alive - 1;
            let Some(&index) = candidates.get(b * 64 + bit as usize) else {
                continue;
            };
            if (block.check >> bit) & 1 == 1 {
                let Some(form) = playbook.decider.forms.get(index as usize) else {
                    continue;
                };
                if !bound.form(predicates, scratch, form) {
                    continue;
                }
            }
            let tags = bound.tag_count();
            if settle(playbook, index, true, bound, state, recorder) {
                return;
            }
            // A `tag` action changes what `tags` tests see: the rules after
            // this one are decided on the new answers.
            if bound.tag_count() != tags && !predicates.tag_groups.is_empty() {
                for &g in &predicates.tag_groups {
                    scratch.forget(g);
                }
                let later = u64::MAX.checked_shl(bit + 1).unwrap_or(0);
                alive = bound.survivors(predicates, scratch, plan, block) & later;
            }
        }
    }
}

/// Tries the candidates one by one, each condition as written, for a trace.
fn traced<'p, R: Recorder<'p>>(
    playbook: &'p CompiledPlaybook,
    candidates: &[u32],
    bound: &mut Bound<'p>,
    scratch: &mut Scratch,
    state: &mut RunState,
    recorder: &mut R,
) {
    let decider = &playbook.decider;
    for (position, &index) in candidates.iter().enumerate() {
        let rule = &playbook.rules[index as usize];
        let leaves = decider
            .leaves
            .get(index as usize)
            .map(|l| &**l)
            .unwrap_or(&[]);
        let matched = bound.eval_by_predicates(
            &rule.condition,
            leaves,
            &decider.predicates,
            scratch,
            recorder,
        );
        let tags = bound.tag_count();
        if settle(playbook, index, matched, bound, state, recorder) {
            recorder.stop(&rule.name, candidates.len() - position - 1);
            break;
        }
        if bound.tag_count() != tags {
            for &g in &decider.predicates.tag_groups {
                scratch.forget(g);
            }
        }
    }
}

struct RunState {
    fired: Vec<Arc<str>>,
    actions: Actions,
}

/// Records a tried rule and applies it when it matched; returns whether
/// evaluation stops here.
fn settle<'p, R: Recorder<'p>>(
    playbook: &'p CompiledPlaybook,
    index: u32,
    matched: bool,
    bound: &mut Bound<'p>,
    state: &mut RunState,
    recorder: &mut R,
) -> bool {
    let rule = &playbook.rules[index as usize];
    if R::ON {
        recorder.rule(
            rule,
            if matched {
                RuleResult::Fired
            } else {
                RuleResult::NoMatch
            },
        );
    }
    if !matched {
        return false;
    }
    state.fired.push(rule.name.clone());
    apply(
        &rule.actions,
        Some(&rule.name),
        &mut state.actions,
        bound,
        playbook,
    );
    state.actions.drop.is_some() || !rule.continues
}

fn apply(
    list: &[ActionKind],
    rule: Option<&Arc<str>>,
    actions: &mut Actions,
    bound: &mut Bound<'_>,
    playbook: &CompiledPlaybook,
) {
    for action in list {
        match action {
            ActionKind::Handoff { open, template } => {
                if actions.handoff.is_none() {
                    actions.handoff = Some(HandoffAction {
                        open: open.as_ref().map(|s| s.node.clone()),
                        template: template.as_ref().map(|s| s.node.clone()),
                        rule: rule.cloned(),
                    });
                }
            }
            ActionKind::Assign(q) => {
                if actions.assign.is_none() {
                    actions.assign = Some(q.node.clone());
                }
            }
            ActionKind::Takeover(q) => {
                if actions.takeover.is_none() {
                    actions.takeover = Some(q.node.clone());
                }
            }
            ActionKind::Tag(t) => {
                if !actions.tags.contains(&t.node) {
                    actions.tags.push(t.node.clone());
                }
                bound.add_tag(&t.node);
            }
            ActionKind::Notify(e) => {
                if !actions.notify.contains(&e.node) {
                    actions.notify.push(e.node.clone());
                }
            }
            ActionKind::Ask(AskTarget::Field(f)) => {
                let may = playbook
                    .schema
                    .field_index(&f.node)
                    .is_none_or(|i| bound.may_ask(i));
                if may && !actions.ask.contains(&f.node) {
                    actions.ask.push(f.node.clone());
                }
            }
            ActionKind::Ask(AskTarget::Missing) => {
                for (i, field) in playbook.schema.fields.iter().enumerate() {
                    if field.required && bound.may_ask(i) && !actions.ask.contains(&field.name) {
                        actions.ask.push(field.name.clone());
                    }
                }
            }
            ActionKind::Drop(reason) => {
                *actions = Actions {
                    drop: Some(reason.node.clone()),
                    ..Actions::default()
                };
                return;
            }
        }
    }
}

/// The six-step handoff resolution of the language reference.
fn resolve(
    handoff: &HandoffAction,
    bound: &Bound<'_>,
    playbook: &CompiledPlaybook,
) -> HandoffResolution {
    let outcome = if !bound.consent {
        Outcome::BlockedNoOptIn
    } else if bound.human {
        Outcome::PausedHuman
    } else if bound.situation.thread.open {
        Outcome::AlreadyOpen
    } else if bound.window_open && handoff.open.is_some() {
        Outcome::Session
    } else if let Some(template) = &handoff.template {
        if bound.situation.marketing_opt_out && playbook.is_marketing(template) {
            Outcome::BlockedMarketingOptOut
        } else {
            Outcome::Template
        }
    } else {
        Outcome::BlockedWindowClosed
    };
    HandoffResolution {
        outcome,
        open: handoff.open.clone(),
        template: handoff.template.clone(),
    }
}

/// The value of every declared field after coercion, for template contexts.
pub fn bound_fields<'a>(
    playbook: &'a CompiledPlaybook,
    lead: &'a Lead,
    situation: &'a Situation,
) -> Vec<(String, FieldType, Val<'a>)> {
    let bound = bind(playbook, lead, situation);
    let values: Vec<(String, FieldType, Val<'a>)> = playbook
        .schema
        .fields
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name.clone(), f.ty.clone(), bound.field(i).clone()))
        .collect();
    values
}

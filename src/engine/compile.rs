//! Compiling a checked playbook into a form built for speed: paths resolved
//! to slots, text lowercased once, regexes compiled once, rules indexed by
//! the intents they can match so a lead only tries rules that can fire for
//! it, and the decision structure of `decide` built over those lists.

use super::decide::{Decider, Plan};
use super::value::date_to_day;
use crate::dsl::ast::{self, ActionKind, CmpOp, Condition, LiteralValue, TestOp};
use crate::dsl::schema::{normalize_text, Builtin, PathRef, Schema};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Where a test reads its value: a built-in or a declared field.
pub type Slot = PathRef;

/// A compiled condition.
#[derive(Debug)]
pub enum Node {
    And(Box<[Node]>),
    Or(Box<[Node]>),
    Not(Box<Node>),
    Test(Box<CompiledTest>),
}

/// One compiled test.
#[derive(Debug)]
pub struct CompiledTest {
    pub slot: Slot,
    pub op: Op,
    /// Index of this test among the rule's tests, in source order.
    pub leaf: u16,
}

/// Which number a comparison reads from a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Numbers, and dates as day numbers.
    Plain,
    /// A datetime's instant, in seconds.
    Instant,
    /// A datetime's local day.
    LocalDay,
}

/// A compiled test operation.
#[derive(Clone, Debug)]
pub enum Op {
    Truthy,
    IsSet,
    IsNotSet,
    EqText(Box<str>),
    NeText(Box<str>),
    InText(Box<[Box<str>]>),
    NotInText(Box<[Box<str>]>),
    ContainsText(Box<str>),
    ContainsItem(Box<str>),
    Matches(regex::Regex),
    EqBool(bool),
    NeBool(bool),
    Cmp(CmpOp, f64, Scale),
    InNum(Box<[f64]>, Scale),
    NotInNum(Box<[f64]>, Scale),
    /// Calendar days from today: `lo..=hi` (next: 0..=n, last: -n..=0).
    WithinDays(i32, i32),
    /// Seconds from now: `lo..=hi`.
    WithinSeconds(i64, i64),
}

/// A compiled rule.
#[derive(Debug)]
pub struct CompiledRule {
    pub name: Arc<str>,
    pub condition: Node,
    /// The condition without the intent test the intent index guarantees.
    pub fast: Node,
    pub actions: Vec<ActionKind>,
    pub continues: bool,
    /// The source text of each test, for traces.
    pub tests: Box<[Arc<str>]>,
    /// Whether each test stands under an odd number of `not`s.
    pub negated: Box<[bool]>,
    /// The intents this rule can fire for; `None` when any.
    pub intents: Option<BTreeSet<String>>,
    /// 1-based line of the rule in its file.
    pub line: usize,
}

/// A playbook ready to evaluate.
#[derive(Debug)]
pub struct CompiledPlaybook {
    pub schema: Schema,
    pub rules: Vec<CompiledRule>,
    pub otherwise: Option<Vec<ActionKind>>,
    /// Normalized intent -> index into `candidates`.
    pub intent_index: HashMap<String, usize>,
    /// Rule indices to try, per known intent, in file order.
    pub candidates: Vec<Box<[u32]>>,
    /// Rule indices to try for a lead whose intent no rule names.
    pub other_candidates: Box<[u32]>,
    /// Whether any rule tests `business_hours` (the clock is read only then).
    pub uses_business_hours: bool,
    /// Field indices sorted by field name, to match a lead's (sorted) fields in one pass.
    pub field_order: Vec<usize>,
    /// The approved templates of category `marketing` this playbook may
    /// send, sorted: not sent to a lead who opted out of marketing.
    pub marketing_templates: Vec<String>,
    /// The rules as predicates and candidate blocks, for evaluation.
    pub decider: Decider,
}

impl CompiledPlaybook {
    /// Whether the approved template `name` is a marketing template.
    pub fn is_marketing(&self, name: &str) -> bool {
        self.marketing_templates
            .binary_search_by(|t| t.as_str().cmp(name))
            .is_ok()
    }
}

/// Compiles a playbook that checked without errors.
pub fn compile(playbook: &ast::Playbook, schema: Schema, source: &str) -> CompiledPlaybook {
    let mut rules = Vec::with_capacity(playbook.rules.len());
    let mut uses_business_hours = false;
    // Line starts, once: finding each rule's line by scanning from the top
    // would make compiling quadratic in the file's size.
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(source.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    for rule in &playbook.rules {
        let mut tests = Vec::new();
        let mut negated = Vec::new();
        let condition = compile_condition(
            &rule.condition,
            &schema,
            source,
            &mut tests,
            &mut negated,
            false,
        );
        rule.condition.for_each_test(&mut |t| {
            if t.path.node == "business_hours" {
                uses_business_hours = true;
            }
        });
        let line = line_starts.partition_point(|&start| start <= rule.span.start);
        let intents = intents_of(&rule.condition);
        // The intent index already guarantees a rule's own intent test, so
        // plain evaluation skips it; traces still show it.
        let fast = match &intents {
            Some(set) => {
                let pruned = without_intent_test(&rule.condition, set);
                compile_condition(
                    &pruned,
                    &schema,
                    source,
                    &mut Vec::new(),
                    &mut Vec::new(),
                    false,
                )
            }
            None => compile_condition(
                &rule.condition,
                &schema,
                source,
                &mut Vec::new(),
                &mut Vec::new(),
                false,
            ),
        };
        rules.push(CompiledRule {
            name: Arc::from(rule.name.node.as_str()),
            intents,
            condition,
            fast,
            actions: rule.actions.iter().map(|a| a.kind.clone()).collect(),
            continues: rule.continues.is_some(),
            tests: tests.into_boxed_slice(),
            negated: negated.into_boxed_slice(),
            line,
        });
    }
    // Every intent any rule names gets its own candidate list.
    let mut known: BTreeSet<String> = schema
        .intents
        .iter()
        .flatten()
        .map(|i| normalize_text(i))
        .collect();
    for rule in &rules {
        known.extend(rule.intents.iter().flatten().cloned());
    }
    let mut intent_index = HashMap::new();
    let mut candidates = Vec::new();
    for intent in known {
        let list: Vec<u32> = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.intents.as_ref().is_none_or(|set| set.contains(&intent)))
            .map(|(i, _)| i as u32)
            .collect();
        intent_index.insert(intent, candidates.len());
        candidates.push(list.into_boxed_slice());
    }
    let other_candidates: Box<[u32]> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.intents.is_none())
        .map(|(i, _)| i as u32)
        .collect();
    let mut field_order: Vec<usize> = (0..schema.fields.len()).collect();
    field_order.sort_by(|&a, &b| schema.fields[a].name.cmp(&schema.fields[b].name));
    let decider = Decider::build(&rules, &candidates, &other_candidates);
    CompiledPlaybook {
        decider,
        field_order,
        marketing_templates: Vec::new(),
        schema,
        rules,
        otherwise: playbook
            .otherwise
            .as_ref()
            .map(|o| o.actions.iter().map(|a| a.kind.clone()).collect()),
        intent_index,
        candidates,
        other_candidates,
        uses_business_hours,
    }
}

impl CompiledPlaybook {
    /// The rules to try for a lead with this normalized intent, in file order.
    pub fn candidates_for(&self, intent: Option<&str>) -> &[u32] {
        self.candidates_and_plan(intent).0
    }

    /// The rules to try for a lead with this normalized intent, and the
    /// plan that decides among them.
    pub fn candidates_and_plan(&self, intent: Option<&str>) -> (&[u32], &Plan) {
        match intent.and_then(|i| self.intent_index.get(i)) {
            Some(&i) => match self.decider.plans.get(i) {
                Some(plan) => (&self.candidates[i], plan),
                None => (&self.other_candidates, &self.decider.other),
            },
            None => (&self.other_candidates, &self.decider.other),
        }
    }
}

/// The condition without top-level tests that only require an intent in
/// `set` (which every candidate lead has).
fn without_intent_test(condition: &Condition, set: &BTreeSet<String>) -> Condition {
    let guaranteed =
        |c: &Condition| matches!(c, Condition::Test(_)) && intents_of(c).as_ref() == Some(set);
    match condition {
        c if guaranteed(c) => Condition::And(Vec::new()),
        Condition::And(parts) => {
            Condition::And(parts.iter().filter(|p| !guaranteed(p)).cloned().collect())
        }
        other => other.clone(),
    }
}

/// The set of intents a condition requires, if it requires one of a set.
fn intents_of(condition: &Condition) -> Option<BTreeSet<String>> {
    match condition {
        Condition::Test(test) if test.path.node == "intent" => match &test.op {
            TestOp::Compare(CmpOp::Eq, lit) => match &lit.value {
                LiteralValue::Text(t) => Some(BTreeSet::from([normalize_text(t)])),
                _ => None,
            },
            TestOp::In(items) => items
                .iter()
                .map(|l| match &l.value {
                    LiteralValue::Text(t) => Some(normalize_text(t)),
                    _ => None,
                })
                .collect(),
            _ => None,
        },
        Condition::And(parts) => parts
            .iter()
            .filter_map(intents_of)
            .reduce(|a, b| a.intersection(&b).cloned().collect()),
        Condition::Or(parts) => parts
            .iter()
            .map(intents_of)
            .collect::<Option<Vec<_>>>()
            .map(|sets| sets.into_iter().flatten().collect()),
        _ => None,
    }
}

fn compile_condition(
    condition: &Condition,
    schema: &Schema,
    source: &str,
    tests: &mut Vec<Arc<str>>,
    negated: &mut Vec<bool>,
    under_not: bool,
) -> Node {
    match condition {
        Condition::And(parts) => Node::And(
            parts
                .iter()
                .map(|p| compile_condition(p, schema, source, tests, negated, under_not))
                .collect(),
        ),
        Condition::Or(parts) => Node::Or(
            parts
                .iter()
                .map(|p| compile_condition(p, schema, source, tests, negated, under_not))
                .collect(),
        ),
        Condition::Not(inner, _) => Node::Not(Box::new(compile_condition(
            inner, schema, source, tests, negated, !under_not,
        ))),
        Condition::Test(test) => {
            let leaf = tests.len() as u16;
            // A test under `not` reads in traces as the negation the rule asks for.
            let text = test.span.text(source);
            tests.push(if under_not {
                Arc::from(format!("not {text}"))
            } else {
                Arc::from(text)
            });
            negated.push(under_not);
            // The checker resolved every path; an unknown one cannot reach here.
            let slot = schema
                .resolve(&test.path.node)
                .unwrap_or(PathRef::Builtin(Builtin::Intent));
            let ty = schema.type_of(slot);
            Node::Test(Box::new(CompiledTest {
                slot,
                op: compile_op(&test.op, &ty),
                leaf,
            }))
        }
    }
}

fn scale_for(ty: &ast::FieldType, literal: &LiteralValue) -> Scale {
    match (ty, literal) {
        (ast::FieldType::DateTime, LiteralValue::Date(_)) => Scale::LocalDay,
        (ast::FieldType::DateTime, _) => Scale::Instant,
        _ => Scale::Plain,
    }
}

fn number_of(literal: &LiteralValue) -> f64 {
    match literal {
        LiteralValue::Number(n) => *n,
        LiteralValue::Date(d) => f64::from(date_to_day(*d)),
        LiteralValue::DateTime(dt) => dt.timestamp() as f64,
        _ => f64::NAN,
    }
}

fn text_of(literal: &LiteralValue) -> Box<str> {
    match literal {
        LiteralValue::Text(t) => normalize_text(t).into(),
        _ => "".into(),
    }
}

fn compile_op(op: &TestOp, ty: &ast::FieldType) -> Op {
    let textual = ty.is_text();
    match op {
        TestOp::Truthy => Op::Truthy,
        TestOp::IsSet => Op::IsSet,
        TestOp::IsNotSet => Op::IsNotSet,
        TestOp::Compare(cmp, lit) => match (&lit.value, cmp) {
            (LiteralValue::Text(_), CmpOp::Eq) => Op::EqText(text_of(&lit.value)),
            (LiteralValue::Text(_), _) => Op::NeText(text_of(&lit.value)),
            (LiteralValue::Bool(b), CmpOp::Eq) => Op::EqBool(*b),
            (LiteralValue::Bool(b), _) => Op::NeBool(*b),
            (value, cmp) => Op::Cmp(*cmp, number_of(value), scale_for(ty, value)),
        },
        TestOp::In(items) | TestOp::NotIn(items) => {
            let negated = matches!(op, TestOp::NotIn(_));
            if textual {
                let list = items.iter().map(|l| text_of(&l.value)).collect();
                if negated {
                    Op::NotInText(list)
                } else {
                    Op::InText(list)
                }
            } else {
                let scale = items
                    .first()
                    .map(|l| scale_for(ty, &l.value))
                    .unwrap_or(Scale::Plain);
                let list = items.iter().map(|l| number_of(&l.value)).collect();
                if negated {
                    Op::NotInNum(list, scale)
                } else {
                    Op::InNum(list, scale)
                }
            }
        }
        TestOp::Contains(lit) => {
            if *ty == ast::FieldType::TextList {
                Op::ContainsItem(text_of(&lit.value))
            } else {
                Op::ContainsText(text_of(&lit.value))
            }
        }
        TestOp::Matches(lit) => {
            let pattern = match &lit.value {
                LiteralValue::Text(t) => t.as_str(),
                _ => "",
            };
            // The checker compiled this pattern already, so it is valid.
            match regex::Regex::new(pattern) {
                Ok(re) => Op::Matches(re),
                Err(_) => Op::IsNotSet,
            }
        }
        TestOp::Within {
            direction,
            amount,
            unit,
        } => {
            let n = i64::from(amount.node);
            let next = *direction == ast::Direction::Next;
            match unit {
                ast::TimeUnit::Days | ast::TimeUnit::Weeks => {
                    let days = if *unit == ast::TimeUnit::Weeks {
                        n * 7
                    } else {
                        n
                    };
                    let days = i32::try_from(days).unwrap_or(i32::MAX);
                    if next {
                        Op::WithinDays(0, days)
                    } else {
                        Op::WithinDays(-days, 0)
                    }
                }
                ast::TimeUnit::Hours | ast::TimeUnit::Minutes => {
                    let secs = if *unit == ast::TimeUnit::Hours {
                        n * 3600
                    } else {
                        n * 60
                    };
                    if next {
                        Op::WithinSeconds(0, secs)
                    } else {
                        Op::WithinSeconds(-secs, 0)
                    }
                }
            }
        }
    }
}

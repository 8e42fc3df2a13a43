//! The structure that decides a lead without walking each rule's tree: rules
//! as conjunctions over predicate bits, and, for each list of candidate
//! rules, blocks of 64 rules with precomputed "kill" rows per group.
//!
//! For a block and a group, row `a` of the block's kill rows has bit `i` set
//! when rule `i` of the block needs a predicate of the group that does not
//! hold when the group answers `a`. A lead's surviving rules in a block are
//! then the block's rules with every kill row of its answered groups masked
//! out: one word operation per group and block instead of one test per rule.
//! First-match order is the order of the bits. Groups are answered lazily,
//! block by block, and a block stops asking once no rule in it survives.

use super::compile::{CompiledRule, Node};
use super::predicate::Predicates;

/// A group with more rows than this is not given kill rows (they would cost
/// a word per row and block); its rules are checked one by one instead.
const MAX_KILL_ROWS: u32 = 1024;

/// A condition over predicates, for what a conjunction cannot say.
#[derive(Debug)]
pub enum Formula {
    And(Box<[Formula]>),
    Or(Box<[Formula]>),
    Not(Box<Formula>),
    Pred(u32),
}

/// A rule over predicates: every literal must hold, then the rest.
#[derive(Debug)]
pub struct RuleForm {
    /// (predicate, the value it must have).
    pub literals: Box<[(u32, bool)]>,
    /// The part of the condition that is not a plain test or negated test
    /// under the top-level `and` (an `or`, a `not` over more than a test).
    pub rest: Option<Formula>,
}

/// A block of up to 64 consecutive candidate rules.
#[derive(Debug)]
pub struct Block {
    /// The bits of the rules the block holds.
    pub valid: u64,
    /// The rules whose condition the kill rows do not settle alone: they are
    /// checked one by one when they survive.
    pub check: u64,
    /// (group, offset of the group's kill rows in `Plan::kills`).
    pub groups: Box<[(u32, u32)]>,
}

/// How one candidate list is decided.
#[derive(Debug, Default)]
pub struct Plan {
    pub blocks: Box<[Block]>,
    pub kills: Box<[u64]>,
}

/// The compiled decision structure of a playbook.
#[derive(Debug, Default)]
pub struct Decider {
    pub predicates: Predicates,
    /// Per rule: the predicate of each test of its full condition, by the
    /// test's index, so traces read the same predicate bits.
    pub leaves: Vec<Box<[u32]>>,
    /// Per rule: its fast condition over predicates.
    pub forms: Vec<RuleForm>,
    /// One plan per candidate list of the playbook, in its order.
    pub plans: Vec<Plan>,
    /// The plan for a lead whose intent no rule names.
    pub other: Plan,
}

impl Decider {
    /// Builds the structure for `rules`, tried per `candidates` and `other`.
    pub fn build(rules: &[CompiledRule], candidates: &[Box<[u32]>], other: &[u32]) -> Decider {
        let mut predicates = Predicates::default();
        let mut leaves = Vec::with_capacity(rules.len());
        let mut forms = Vec::with_capacity(rules.len());
        for rule in rules {
            let mut by_leaf = vec![0u32; rule.tests.len()];
            each_test(&rule.condition, &mut |t| {
                let p = predicates.add(t.slot, &t.op);
                if let Some(slot) = by_leaf.get_mut(usize::from(t.leaf)) {
                    *slot = p;
                }
            });
            leaves.push(by_leaf.into_boxed_slice());
            forms.push(form_of(&rule.fast, &mut predicates));
        }
        predicates.finish();
        let plans = candidates
            .iter()
            .map(|list| plan(list, &forms, &predicates))
            .collect();
        let other = plan(other, &forms, &predicates);
        Decider {
            predicates,
            leaves,
            forms,
            plans,
            other,
        }
    }
}

fn each_test(node: &Node, f: &mut impl FnMut(&super::compile::CompiledTest)) {
    match node {
        Node::Test(t) => f(t),
        Node::And(parts) | Node::Or(parts) => parts.iter().for_each(|p| each_test(p, f)),
        Node::Not(inner) => each_test(inner, f),
    }
}

/// The rule's condition as literals under its top-level `and`, plus the rest.
fn form_of(node: &Node, predicates: &mut Predicates) -> RuleForm {
    let mut literals = Vec::new();
    let mut rest = Vec::new();
    let parts: &[Node] = match node {
        Node::And(parts) => parts,
        other => std::slice::from_ref(other),
    };
    for part in parts {
        match part {
            Node::Test(t) => literals.push((predicates.add(t.slot, &t.op), true)),
            Node::Not(inner) => match &**inner {
                Node::Test(t) => literals.push((predicates.add(t.slot, &t.op), false)),
                _ => rest.push(formula(part, predicates)),
            },
            // A nested `and` is flattened: its parts hold iff each does.
            Node::And(_) => {
                let inner = form_of(part, predicates);
                literals.extend(inner.literals.iter().copied());
                rest.extend(inner.rest);
            }
            Node::Or(_) => rest.push(formula(part, predicates)),
        }
    }
    let rest = match rest.len() {
        0 => None,
        1 => rest.pop(),
        _ => Some(Formula::And(rest.into_boxed_slice())),
    };
    RuleForm {
        literals: literals.into_boxed_slice(),
        rest,
    }
}

fn formula(node: &Node, predicates: &mut Predicates) -> Formula {
    match node {
        Node::Test(t) => Formula::Pred(predicates.add(t.slot, &t.op)),
        Node::And(parts) => Formula::And(parts.iter().map(|p| formula(p, predicates)).collect()),
        Node::Or(parts) => Formula::Or(parts.iter().map(|p| formula(p, predicates)).collect()),
        Node::Not(inner) => Formula::Not(Box::new(formula(inner, predicates))),
    }
}

fn plan(list: &[u32], forms: &[RuleForm], predicates: &Predicates) -> Plan {
    let mut blocks = Vec::with_capacity(list.len().div_ceil(64));
    let mut kills: Vec<u64> = Vec::new();
    for chunk in list.chunks(64) {
        let mut valid = 0u64;
        let mut check = 0u64;
        // (group, offset), in the order the block's rules first need them.
        let mut groups: Vec<(u32, u32)> = Vec::new();
        for (bit, &rule) in chunk.iter().enumerate() {
            let Some(form) = forms.get(rule as usize) else {
                continue;
            };
            valid |= 1 << bit;
            if form.rest.is_some() {
                check |= 1 << bit;
            }
            for &(p, want) in form.literals.iter() {
                let (g, _) = predicates.of[p as usize];
                let group = &predicates.groups[g as usize];
                let rows = group.rows();
                if rows > MAX_KILL_ROWS {
                    check |= 1 << bit;
                    continue;
                }
                let offset = match groups.iter().find(|(h, _)| *h == g) {
                    Some(&(_, offset)) => offset,
                    None => {
                        let offset = kills.len() as u32;
                        kills.resize(kills.len() + rows as usize, 0);
                        groups.push((g, offset));
                        offset
                    }
                };
                for row in 0..rows {
                    if predicates.holds(p, row) != want {
                        kills[(offset + row) as usize] |= 1 << bit;
                    }
                }
            }
        }
        blocks.push(Block {
            valid,
            check,
            groups: groups.into_boxed_slice(),
        });
    }
    Plan {
        blocks: blocks.into_boxed_slice(),
        kills: kills.into_boxed_slice(),
    }
}

//! The reference evaluator: each candidate rule's condition tree walked test
//! by test, as the language reference states evaluation. It decides exactly
//! as `evaluate` does, only without the compiled predicates and blocks, and
//! is kept so that tests can hold the compiled path to it.

use super::compile::CompiledPlaybook;
use super::eval::{evaluate_by_tree, evaluate_by_tree_with_trace, Evaluation, Trace};
use super::lead::{Lead, Situation};

/// Evaluates a lead by walking rule trees.
pub fn evaluate(playbook: &CompiledPlaybook, lead: &Lead, situation: &Situation) -> Evaluation {
    evaluate_by_tree(playbook, lead, situation)
}

/// Evaluates a lead by walking rule trees, and explains why.
pub fn evaluate_with_trace<'p>(
    playbook: &'p CompiledPlaybook,
    lead: &'p Lead,
    situation: &'p Situation,
) -> (Evaluation, Trace<'p>) {
    evaluate_by_tree_with_trace(playbook, lead, situation)
}

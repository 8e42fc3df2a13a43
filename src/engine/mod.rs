//! The engine: compiles a checked playbook and evaluates leads against it.
//! No I/O happens here.

pub mod compile;
pub mod decide;
pub mod eval;
pub mod lead;
pub mod predicate;
pub mod reference;
pub mod value;

pub use compile::{compile, CompiledPlaybook};
pub use eval::{evaluate, evaluate_with_trace, Evaluation, Outcome, Trace};
pub use lead::{Event, Lead, Marketing, Situation, Thread, ThreadInput, Window};

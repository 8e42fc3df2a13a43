//! The routing language: spans, the typed AST, the parser, the checker and
//! its diagnostics. No I/O happens here.

pub mod ast;
pub mod check;
pub mod codes;
pub mod diagnostic;
pub mod format;
pub mod parse;
pub mod schema;
pub mod shadow;
pub mod span;

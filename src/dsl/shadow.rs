//! Finds rules that can never fire: an earlier rule without `continue` that
//! fires for every lead the later rule would match (W101), or a rule whose
//! own tests contradict each other (W104).
//!
//! Conditions are put in disjunctive normal form over literals (a test or its
//! negation). Rule B is shadowed by an earlier rule A when every satisfiable
//! term of B implies some term of A. Implication is decided per path: equal
//! tests, `in` subsets, numeric and date ranges (a term's bounds on a path are
//! intersected first), `within` windows, and "any test implies `is set`".
//! The analysis is sound (it never reports a rule that can fire) and covers
//! the common cases; exotic overlaps go unreported.

use super::ast::*;
use super::codes::Code;
use super::diagnostic::Diagnostic;
use super::schema::{normalize_text, Schema};

/// The largest normal form considered; beyond it a rule is not analysed.
const MAX_TERMS: usize = 64;

#[derive(Clone, Debug, PartialEq)]
enum Value {
    Text(String),
    Num(f64),
    Bool(bool),
}

#[derive(Clone, Debug, PartialEq)]
enum Atom {
    Eq(Value),
    Ne(Value),
    Lt(f64),
    Le(f64),
    Gt(f64),
    Ge(f64),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    /// Substring of text (`list` false) or an item of a list (`list` true).
    Contains {
        needle: String,
        list: bool,
    },
    Matches(String),
    IsSet,
    IsNotSet,
    Truthy,
    /// `within`: direction, and the window in minutes (`calendar` for days/weeks).
    Within {
        next: bool,
        amount: u64,
        calendar: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
struct Literal {
    path: String,
    positive: bool,
    atom: Atom,
}

type Term = Vec<Literal>;

/// Reports W101 and W104 for `rules` (those whose conditions checked clean).
pub fn find(rules: &[&Rule], schema: &Schema, file: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let forms: Vec<Option<Vec<Term>>> = rules
        .iter()
        .map(|r| dnf(&r.condition, schema, true))
        .map(|f| f.map(|terms| terms.into_iter().filter(satisfiable).collect()))
        .collect();
    for (b, rule_b) in rules.iter().enumerate() {
        let Some(terms_b) = &forms[b] else { continue };
        if terms_b.is_empty() {
            out.push(
                Diagnostic::new(
                    Code::W104NeverFires,
                    format!(
                        "rule `{}` can never fire: its tests contradict each other",
                        rule_b.name.node
                    ),
                    file,
                    Some(rule_b.condition.span()),
                )
                .label("no lead can pass all of these")
                .help("check the tests for a value that cannot be two things at once"),
            );
            continue;
        }
        for (a, rule_a) in rules.iter().enumerate().take(b) {
            if rule_a.continues.is_some() {
                continue;
            }
            let Some(terms_a) = &forms[a] else { continue };
            if terms_a.is_empty() {
                continue;
            }
            let shadowed = terms_b
                .iter()
                .all(|tb| terms_a.iter().any(|ta| ta.iter().all(|la| implies(tb, la))));
            if shadowed {
                out.push(
                    Diagnostic::new(
                        Code::W101ShadowedRule,
                        format!(
                            "rule `{}` can never fire: rule `{}` comes first and matches every lead it would",
                            rule_b.name.node, rule_a.name.node
                        ),
                        file,
                        Some(rule_b.name.span),
                    )
                    .label("never reached")
                    .related(file, rule_a.name.span, format!("`{}` catches these leads first", rule_a.name.node))
                    .help(format!(
                        "move `{}` above `{}`, narrow `{}`, or end `{}` with `continue`",
                        rule_b.name.node, rule_a.name.node, rule_a.name.node, rule_a.name.node
                    )),
                );
                break;
            }
        }
    }
    out
}

fn literal_value(value: &LiteralValue) -> Option<Value> {
    Some(match value {
        LiteralValue::Text(t) => Value::Text(normalize_text(t)),
        LiteralValue::Number(n) => Value::Num(*n),
        LiteralValue::Bool(b) => Value::Bool(*b),
        LiteralValue::Date(d) => Value::Num(date_number(*d)),
        LiteralValue::DateTime(dt) => Value::Num(dt.timestamp() as f64),
        LiteralValue::Invalid => return None,
    })
}

fn date_number(d: chrono::NaiveDate) -> f64 {
    use chrono::Datelike;
    f64::from(d.num_days_from_ce())
}

fn num(value: &LiteralValue) -> Option<f64> {
    match literal_value(value)? {
        Value::Num(n) => Some(n),
        _ => None,
    }
}

/// One test as a literal, or `None` when it cannot be analysed (then the
/// whole rule is left out of the analysis).
fn atom_of(test: &Test, schema: &Schema) -> Option<Literal> {
    let ty = schema.type_of(schema.resolve(&test.path.node)?);
    // A datetime compared with a date literal compares local dates; keep such
    // tests out rather than mix two scales on one path.
    if ty == FieldType::DateTime {
        let mut has_date = false;
        if let TestOp::Compare(_, l) = &test.op {
            has_date = matches!(l.value, LiteralValue::Date(_));
        }
        if let TestOp::In(ls) | TestOp::NotIn(ls) = &test.op {
            has_date = ls.iter().any(|l| matches!(l.value, LiteralValue::Date(_)));
        }
        if has_date {
            return None;
        }
    }
    let atom = match &test.op {
        TestOp::Truthy => Atom::Truthy,
        TestOp::Compare(op, lit) => match op {
            CmpOp::Eq => match literal_value(&lit.value)? {
                Value::Bool(true) => Atom::Truthy,
                v => Atom::Eq(v),
            },
            CmpOp::Ne => Atom::Ne(literal_value(&lit.value)?),
            CmpOp::Lt => Atom::Lt(num(&lit.value)?),
            CmpOp::Le => Atom::Le(num(&lit.value)?),
            CmpOp::Gt => Atom::Gt(num(&lit.value)?),
            CmpOp::Ge => Atom::Ge(num(&lit.value)?),
        },
        TestOp::In(items) => Atom::In(
            items
                .iter()
                .map(|l| literal_value(&l.value))
                .collect::<Option<_>>()?,
        ),
        TestOp::NotIn(items) => Atom::NotIn(
            items
                .iter()
                .map(|l| literal_value(&l.value))
                .collect::<Option<_>>()?,
        ),
        TestOp::Contains(lit) => match &lit.value {
            LiteralValue::Text(t) => Atom::Contains {
                needle: normalize_text(t),
                list: ty == FieldType::TextList,
            },
            _ => return None,
        },
        TestOp::Matches(lit) => match &lit.value {
            LiteralValue::Text(t) => Atom::Matches(t.clone()),
            _ => return None,
        },
        TestOp::IsSet => Atom::IsSet,
        TestOp::IsNotSet => Atom::IsNotSet,
        TestOp::Within {
            direction,
            amount,
            unit,
        } => {
            let per = match unit {
                TimeUnit::Minutes | TimeUnit::Days => 1,
                TimeUnit::Hours => 60,
                TimeUnit::Weeks => 7,
            };
            Atom::Within {
                next: *direction == Direction::Next,
                amount: u64::from(amount.node) * per,
                calendar: unit.is_calendar(),
            }
        }
    };
    Some(Literal {
        path: test.path.node.clone(),
        positive: true,
        atom,
    })
}

/// Disjunctive normal form of a condition (or of its negation).
fn dnf(condition: &Condition, schema: &Schema, positive: bool) -> Option<Vec<Term>> {
    match condition {
        Condition::Test(test) => {
            let mut literal = atom_of(test, schema)?;
            literal.positive = positive;
            Some(vec![vec![literal]])
        }
        Condition::Not(inner, _) => dnf(inner, schema, !positive),
        Condition::And(parts) | Condition::Or(parts) => {
            let conjunctive = matches!(condition, Condition::And(_)) == positive;
            let mut forms = Vec::with_capacity(parts.len());
            for part in parts {
                forms.push(dnf(part, schema, positive)?);
            }
            if conjunctive {
                let mut acc: Vec<Term> = vec![Vec::new()];
                for form in forms {
                    let mut next = Vec::new();
                    for left in &acc {
                        for right in &form {
                            let mut term = left.clone();
                            term.extend(right.iter().cloned());
                            next.push(term);
                        }
                    }
                    if next.len() > MAX_TERMS {
                        return None;
                    }
                    acc = next;
                }
                Some(acc)
            } else {
                let all: Vec<Term> = forms.into_iter().flatten().collect();
                (all.len() <= MAX_TERMS).then_some(all)
            }
        }
    }
}

/// The range of numbers (or dates) a term allows on a path.
#[derive(Clone, Copy, Debug)]
struct Range {
    lo: f64,
    lo_open: bool,
    hi: f64,
    hi_open: bool,
}

impl Range {
    fn all() -> Range {
        Range {
            lo: f64::NEG_INFINITY,
            lo_open: true,
            hi: f64::INFINITY,
            hi_open: true,
        }
    }

    fn restrict(&mut self, atom: &Atom) {
        let (lo, lo_open, hi, hi_open) = match atom {
            Atom::Eq(Value::Num(v)) => (*v, false, *v, false),
            Atom::Gt(v) => (*v, true, f64::INFINITY, true),
            Atom::Ge(v) => (*v, false, f64::INFINITY, true),
            Atom::Lt(v) => (f64::NEG_INFINITY, true, *v, true),
            Atom::Le(v) => (f64::NEG_INFINITY, true, *v, false),
            Atom::In(items) => {
                let nums: Vec<f64> = items
                    .iter()
                    .filter_map(|v| {
                        if let Value::Num(n) = v {
                            Some(*n)
                        } else {
                            None
                        }
                    })
                    .collect();
                if nums.len() != items.len() || nums.is_empty() {
                    return;
                }
                let lo = nums.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = nums.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (lo, false, hi, false)
            }
            _ => return,
        };
        if lo > self.lo || (lo == self.lo && lo_open) {
            self.lo = lo;
            self.lo_open = lo_open;
        }
        if hi < self.hi || (hi == self.hi && hi_open) {
            self.hi = hi;
            self.hi_open = hi_open;
        }
    }

    fn is_empty(&self) -> bool {
        self.lo > self.hi || (self.lo == self.hi && (self.lo_open || self.hi_open))
    }

    fn within(&self, atom: &Atom) -> bool {
        match atom {
            Atom::Gt(v) => self.lo > *v || (self.lo == *v && self.lo_open),
            Atom::Ge(v) => self.lo >= *v,
            Atom::Lt(v) => self.hi < *v || (self.hi == *v && self.hi_open),
            Atom::Le(v) => self.hi <= *v,
            Atom::Eq(Value::Num(v)) => {
                self.lo == *v && self.hi == *v && !self.lo_open && !self.hi_open
            }
            Atom::Ne(Value::Num(v)) => {
                *v < self.lo
                    || *v > self.hi
                    || (*v == self.lo && self.lo_open)
                    || (*v == self.hi && self.hi_open)
            }
            _ => false,
        }
    }
}

fn range_on(term: &Term, path: &str) -> Range {
    let mut range = Range::all();
    for literal in term.iter().filter(|l| l.positive && l.path == path) {
        range.restrict(&literal.atom);
    }
    range
}

fn satisfiable(term: &Term) -> bool {
    for (i, a) in term.iter().enumerate() {
        if a.positive && range_on(term, &a.path).is_empty() {
            return false;
        }
        for b in &term[i + 1..] {
            if a.path != b.path {
                continue;
            }
            if a.atom == b.atom && a.positive != b.positive {
                return false;
            }
            if a.positive
                && b.positive
                && (excludes(&a.atom, &b.atom) || excludes(&b.atom, &a.atom))
            {
                return false;
            }
            // A positive test implies the opposite of a negated one it implies.
            if a.positive && !b.positive && atom_implies(&a.atom, &b.atom) {
                return false;
            }
            if b.positive && !a.positive && atom_implies(&b.atom, &a.atom) {
                return false;
            }
        }
    }
    true
}

/// Whether a lead passing `a` can never pass `b` (same path).
fn excludes(a: &Atom, b: &Atom) -> bool {
    match (a, b) {
        (Atom::IsNotSet, other) | (other, Atom::IsNotSet) => *other != Atom::IsNotSet,
        (Atom::Eq(x), Atom::Eq(y)) => x != y,
        (Atom::Eq(x), Atom::In(ys)) => !ys.contains(x),
        (Atom::Eq(x), Atom::NotIn(ys)) => ys.contains(x),
        (Atom::Eq(x), Atom::Ne(y)) => x == y,
        (Atom::In(xs), Atom::NotIn(ys)) => xs.iter().all(|x| ys.contains(x)),
        (Atom::In(xs), Atom::In(ys)) => xs.iter().all(|x| !ys.contains(x)),
        _ => false,
    }
}

/// Whether every lead passing the term passes the literal.
fn implies(term: &Term, target: &Literal) -> bool {
    let same_path = term.iter().filter(|l| l.path == target.path);
    if target.positive {
        if matches!(
            target.atom,
            Atom::Lt(_)
                | Atom::Le(_)
                | Atom::Gt(_)
                | Atom::Ge(_)
                | Atom::Eq(Value::Num(_))
                | Atom::Ne(Value::Num(_))
        ) {
            let range = range_on(term, &target.path);
            if (range.lo.is_finite() || range.hi.is_finite()) && range.within(&target.atom) {
                return true;
            }
        }
        same_path
            .filter(|l| l.positive)
            .any(|l| atom_implies(&l.atom, &target.atom))
    } else {
        // not(T): implied by not(S) where T implies S, or by a positive test excluding T.
        same_path.into_iter().any(|l| {
            if l.positive {
                excludes(&l.atom, &target.atom)
            } else {
                atom_implies(&target.atom, &l.atom)
            }
        })
    }
}

/// Whether every lead passing `b` passes `a` (same path, both positive).
fn atom_implies(b: &Atom, a: &Atom) -> bool {
    if b == a {
        return true;
    }
    match (b, a) {
        (Atom::IsNotSet, _) => false,
        (_, Atom::IsSet) => true,
        (Atom::Eq(v), Atom::In(list)) => list.contains(v),
        (Atom::Eq(v), Atom::NotIn(list)) => !list.contains(v),
        (Atom::Eq(v), Atom::Ne(w)) => v != w,
        (
            Atom::Eq(Value::Text(v)),
            Atom::Contains {
                needle,
                list: false,
            },
        ) => v.contains(needle.as_str()),
        (Atom::In(l), Atom::In(m)) => l.iter().all(|v| m.contains(v)),
        (Atom::In(l), Atom::Eq(v)) => !l.is_empty() && l.iter().all(|x| x == v),
        (Atom::In(l), Atom::NotIn(m)) => l.iter().all(|v| !m.contains(v)),
        (Atom::In(l), Atom::Ne(w)) => !l.contains(w),
        (Atom::NotIn(l), Atom::NotIn(m)) => m.iter().all(|v| l.contains(v)),
        (Atom::NotIn(l), Atom::Ne(w)) => l.contains(w),
        (Atom::Ne(v), Atom::NotIn(m)) => m.iter().all(|x| x == v),
        (
            Atom::Contains {
                needle: n,
                list: false,
            },
            Atom::Contains {
                needle: m,
                list: false,
            },
        ) => n.contains(m.as_str()),
        (
            Atom::Gt(_)
            | Atom::Ge(_)
            | Atom::Lt(_)
            | Atom::Le(_)
            | Atom::Eq(Value::Num(_))
            | Atom::In(_),
            _,
        ) => {
            let mut range = Range::all();
            range.restrict(b);
            range.within(a)
        }
        (
            Atom::Within {
                next: n1,
                amount: a1,
                calendar: c1,
            },
            Atom::Within {
                next: n2,
                amount: a2,
                calendar: c2,
            },
        ) => n1 == n2 && c1 == c2 && a1 <= a2,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::dsl::check::{check_playbook, TemplateCatalog, VariableUse};
    use crate::dsl::codes::Code;
    use crate::dsl::parse::parse_playbook;

    struct NoTemplates;
    impl TemplateCatalog for NoTemplates {
        fn has_file(&self, _: &str) -> bool {
            false
        }
        fn file_names(&self) -> Vec<String> {
            vec![]
        }
        fn has_approved(&self, _: &str) -> bool {
            false
        }
        fn approved_names(&self) -> Vec<String> {
            vec![]
        }
        fn file_variables(&self, _: &str) -> Vec<VariableUse> {
            vec![]
        }
        fn approved_variables(&self, _: &str) -> Vec<VariableUse> {
            vec![]
        }
    }

    fn shadowed(rules: &str) -> Vec<String> {
        let src = format!(
            "playbook t {{\n intents a, b\n field city: text\n field guests: number\n field d: date\n field pkg: one of \"x\", \"y\", \"z\"\n{rules}\n otherwise {{ tag \"o\" }}\n}}"
        );
        let parsed = parse_playbook(&src, "t.rules");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        let checked = check_playbook(
            parsed.playbook.as_ref().unwrap(),
            "t.rules",
            "t",
            &NoTemplates,
        );
        let errors: Vec<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        checked
            .diagnostics
            .iter()
            .filter(|d| matches!(d.code, Code::W101ShadowedRule | Code::W104NeverFires))
            .map(|d| d.message.clone())
            .collect()
    }

    #[test]
    fn subset_of_tests_shadows() {
        let w = shadowed(
            "rule a { when intent == \"a\" then tag \"1\" }\n rule b { when intent == \"a\" and city == \"Goa\" then tag \"2\" }",
        );
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("rule `b`") && w[0].contains("rule `a`"),
            "{w:?}"
        );
    }

    #[test]
    fn ranges_and_lists_are_understood() {
        let w = shadowed(
            "rule a { when guests >= 100 then tag \"1\" }\n rule b { when guests > 200 and guests < 500 then tag \"2\" }\n rule c { when city in [\"goa\", \"pune\"] then tag \"3\" }\n rule e { when city == \" GOA \" then tag \"4\" }\n rule f { when guests in [50, 150] then tag \"5\" }",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("`b`") && w[1].contains("`e`"));
    }

    #[test]
    fn continue_and_disjoint_tests_do_not_shadow() {
        let w = shadowed(
            "rule a { when guests >= 100 then tag \"1\" continue }\n rule b { when guests >= 200 then tag \"2\" }\n rule c { when city == \"goa\" then tag \"3\" }\n rule e { when city == \"pune\" then tag \"4\" }\n rule f { when city is set or guests > 5 then tag \"5\" }\n rule g { when city is not set then tag \"6\" }",
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn or_in_the_later_rule_needs_every_branch_covered() {
        let w = shadowed(
            "rule a { when pkg in [\"x\", \"y\"] then tag \"1\" }\n rule b { when pkg == \"x\" or pkg == \"y\" then tag \"2\" }\n rule c { when pkg == \"x\" or pkg == \"z\" then tag \"3\" }",
        );
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("`b`"));
    }

    #[test]
    fn within_windows_nest() {
        let w = shadowed(
            "rule a { when d within next 30 days then tag \"1\" }\n rule b { when d within next 2 weeks then tag \"2\" }",
        );
        assert_eq!(w.len(), 1, "{w:?}");
    }

    #[test]
    fn contradictions_never_fire() {
        let w = shadowed(
            "rule a { when guests > 10 and guests < 5 then tag \"1\" }\n rule b { when city == \"goa\" and not city is set then tag \"2\" }",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().all(|m| m.contains("contradict")));
    }
}

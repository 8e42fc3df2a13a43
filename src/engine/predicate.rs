//! The distinct atomic tests of a playbook, as predicates, and the groups
//! that answer many predicates over one value at once.
//!
//! Every distinct (path, operator, constant) in a playbook is one predicate,
//! whichever rules write it. Predicates over the same value share their work:
//! all text equalities and `in` lists of a path are answered by one hash
//! lookup of the lead's text, all comparisons and `within` windows over one
//! number by one binary search among their sorted constants. A group's answer
//! is a row number; the row is a bitset saying which of the group's
//! predicates hold, computed when the playbook is compiled. A lead therefore
//! pays for each group at most once, however many rules test it.

use super::compile::{Op, Scale, Slot};
use crate::dsl::ast::CmpOp;
use crate::dsl::schema::{Builtin, PathRef};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// The predicates of a playbook and the groups that answer them.
#[derive(Debug, Default)]
pub struct Predicates {
    pub groups: Vec<Group>,
    /// For each predicate: its group, and its position among the group's members.
    pub of: Vec<(u32, u32)>,
    /// The groups that read `tags`, which a fired rule's `tag` action changes.
    pub tag_groups: Vec<u32>,
    /// Predicate lookup by the test's identity, while compiling.
    ids: HashMap<String, u32>,
    /// Groups being built, by what they share, while compiling.
    shared: HashMap<String, u32>,
}

/// Predicates answered together from one value of the lead.
#[derive(Debug)]
pub struct Group {
    pub slot: Slot,
    pub kind: GroupKind,
    /// Words per row of `table`.
    pub words: u32,
    /// Row-major: for each answer, which members hold.
    pub table: Box<[u64]>,
    /// The members, kept until `finish` builds `table`.
    members: Vec<Member>,
}

/// How a group turns the lead's value into a row.
#[derive(Debug)]
pub enum GroupKind {
    /// Text `==`, `!=`, `in`, `not in`: the row of the lead's normalized text
    /// among the constants, else [`text_other`], else (no text) [`text_none`].
    Text(HashMap<Box<str>, u32, FastHash>),
    /// Comparisons, number lists and `within` windows over one number: the
    /// row is the number's position among the sorted constants (between two,
    /// or equal to one), or the last row when there is no number.
    Number(NumberKey, Box<[f64]>),
    /// Any other test, answered alone: row 0 false, row 1 true.
    Single(Op),
}

/// The number a number group reads from the lead's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumberKey {
    /// The value as a comparison with this scale reads it.
    Scalar(Scale),
    /// The value's day minus today (`within` in days or weeks).
    DaysFromToday,
    /// The value's instant minus now, in seconds (`within` in hours or minutes).
    SecondsFromNow,
}

#[derive(Debug)]
enum Member {
    Text(TextTest),
    Number(NumberTest),
    Single,
}

#[derive(Debug)]
enum TextTest {
    Eq(Box<str>),
    Ne(Box<str>),
    In(Box<[Box<str>]>),
    NotIn(Box<[Box<str>]>),
}

#[derive(Debug)]
enum NumberTest {
    Cmp(CmpOp, f64),
    In(Box<[f64]>),
    NotIn(Box<[f64]>),
    /// `lo <= x <= hi`.
    Range(f64, f64),
}

/// The row of a text group for text that is none of its constants.
pub fn text_other(index: &HashMap<Box<str>, u32, FastHash>) -> u32 {
    index.len() as u32
}

/// The row of a text group for a value that is not text (or not set).
pub fn text_none(index: &HashMap<Box<str>, u32, FastHash>) -> u32 {
    index.len() as u32 + 1
}

/// The row of a number group for `x`: `2k + 1` when `x` is the `k`-th
/// constant, `2k` when it lies between the `(k-1)`-th and the `k`-th.
pub fn number_row(points: &[f64], x: f64) -> u32 {
    let k = points.partition_point(|p| *p < x);
    let equal = points.get(k).is_some_and(|p| *p == x);
    (2 * k + usize::from(equal)) as u32
}

/// The row of a number group when the value gives no number.
pub fn number_none(points: &[f64]) -> u32 {
    (2 * points.len() + 1) as u32
}

impl Predicates {
    /// The predicate for `op` over `slot`, added when new.
    pub fn add(&mut self, slot: Slot, op: &Op) -> u32 {
        let identity = format!("{slot:?}\u{1}{op:?}");
        if let Some(&id) = self.ids.get(&identity) {
            return id;
        }
        let id = self.of.len() as u32;
        let (share, member) = shared_form(slot, op);
        let group = match share {
            Some((key, kind)) => match self.shared.get(&key) {
                Some(&g) => g,
                None => {
                    let g = self.new_group(slot, kind);
                    self.shared.insert(key, g);
                    g
                }
            },
            None => self.new_group(slot, GroupKind::Single(op.clone())),
        };
        let members = &mut self.groups[group as usize].members;
        members.push(member);
        self.of.push((group, members.len() as u32 - 1));
        self.ids.insert(identity, id);
        id
    }

    fn new_group(&mut self, slot: Slot, kind: GroupKind) -> u32 {
        let g = self.groups.len() as u32;
        if slot == PathRef::Builtin(Builtin::Tags) {
            self.tag_groups.push(g);
        }
        self.groups.push(Group {
            slot,
            kind,
            words: 0,
            table: Box::default(),
            members: Vec::new(),
        });
        g
    }

    /// Builds every group's rows once all predicates are added.
    pub fn finish(&mut self) {
        self.ids = HashMap::new();
        self.shared = HashMap::new();
        for group in &mut self.groups {
            group.build();
        }
    }

    /// Whether predicate `p` holds in row `row` of its group.
    pub fn holds(&self, p: u32, row: u32) -> bool {
        let (g, member) = self.of[p as usize];
        self.groups[g as usize].holds(member, row)
    }
}

impl Group {
    /// How many rows (answers) the group has.
    pub fn rows(&self) -> u32 {
        match &self.kind {
            GroupKind::Text(index) => text_none(index) + 1,
            GroupKind::Number(_, points) => number_none(points) + 1,
            GroupKind::Single(_) => 2,
        }
    }

    /// Whether member `member` holds in row `row`.
    #[inline]
    pub fn holds(&self, member: u32, row: u32) -> bool {
        let word = row as usize * self.words as usize + (member / 64) as usize;
        self.table
            .get(word)
            .is_some_and(|w| (w >> (member % 64)) & 1 == 1)
    }

    fn build(&mut self) {
        // The constants first: they decide the rows. A text group's rows
        // are its constants in sorted order.
        let mut texts: Vec<Box<str>> = Vec::new();
        match &mut self.kind {
            GroupKind::Text(index) => {
                let mut constants: Vec<&str> = Vec::new();
                for m in &self.members {
                    if let Member::Text(t) = m {
                        match t {
                            TextTest::Eq(c) | TextTest::Ne(c) => constants.push(c),
                            TextTest::In(list) | TextTest::NotIn(list) => {
                                constants.extend(list.iter().map(|c| &**c))
                            }
                        }
                    }
                }
                constants.sort_unstable();
                constants.dedup();
                texts = constants.iter().map(|c| Box::from(*c)).collect();
                *index = texts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), i as u32))
                    .collect();
            }
            GroupKind::Number(_, points) => {
                let mut constants: Vec<f64> = Vec::new();
                for m in &self.members {
                    if let Member::Number(t) = m {
                        match t {
                            NumberTest::Cmp(_, c) => constants.push(*c),
                            NumberTest::In(list) | NumberTest::NotIn(list) => {
                                constants.extend(list.iter())
                            }
                            NumberTest::Range(lo, hi) => constants.extend([*lo, *hi]),
                        }
                    }
                }
                // `-0.0` and `0.0` are one constant, as `==` sees them.
                let mut constants: Vec<f64> = constants.into_iter().map(|c| c + 0.0).collect();
                constants.sort_by(f64::total_cmp);
                constants.dedup();
                *points = constants.into_boxed_slice();
            }
            GroupKind::Single(_) => {}
        }
        let rows = self.rows() as usize;
        let words = self.members.len().div_ceil(64).max(1);
        let mut table = vec![0u64; rows * words];
        for row in 0..rows {
            for (i, member) in self.members.iter().enumerate() {
                if self.member_holds(member, row as u32, &texts) {
                    table[row * words + i / 64] |= 1 << (i % 64);
                }
            }
        }
        self.words = words as u32;
        self.table = table.into_boxed_slice();
    }

    /// Whether a member holds in a row, from the test's meaning.
    fn member_holds(&self, member: &Member, row: u32, texts: &[Box<str>]) -> bool {
        match (&self.kind, member) {
            (GroupKind::Single(_), _) => row == 1,
            (GroupKind::Text(index), Member::Text(test)) => {
                if row == text_none(index) {
                    return false;
                }
                // The row's text, or none of the constants.
                let text = texts.get(row as usize).map(|c| &**c);
                let is = |c: &str| text == Some(c);
                match test {
                    TextTest::Eq(c) => is(c),
                    TextTest::Ne(c) => !is(c),
                    TextTest::In(list) => list.iter().any(|c| is(c)),
                    TextTest::NotIn(list) => !list.iter().any(|c| is(c)),
                }
            }
            (GroupKind::Number(_, points), Member::Number(test)) => {
                if row == number_none(points) {
                    return false;
                }
                let k = (row / 2) as usize;
                if row % 2 == 1 {
                    // The value is the constant itself: ask the test directly.
                    let x = points[k];
                    return match test {
                        NumberTest::Cmp(op, c) => compare(*op, x, *c),
                        NumberTest::In(list) => list.contains(&x),
                        NumberTest::NotIn(list) => !list.contains(&x),
                        NumberTest::Range(lo, hi) => *lo <= x && x <= *hi,
                    };
                }
                // Strictly between constants `k - 1` and `k`: no constant
                // equals the value, and constant `j` is above it iff `j >= k`.
                let position = |c: f64| points.partition_point(|p| *p < c);
                match test {
                    NumberTest::Cmp(op, c) => {
                        let below = k <= position(*c);
                        match op {
                            CmpOp::Eq => false,
                            CmpOp::Ne => true,
                            CmpOp::Lt | CmpOp::Le => below,
                            CmpOp::Gt | CmpOp::Ge => !below,
                        }
                    }
                    NumberTest::In(_) => false,
                    NumberTest::NotIn(_) => true,
                    NumberTest::Range(lo, hi) => position(*lo) < k && k <= position(*hi),
                }
            }
            _ => false,
        }
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

/// Which group a test can share, and what it is as a member of one.
fn shared_form(slot: Slot, op: &Op) -> (Option<(String, GroupKind)>, Member) {
    let text = || {
        (
            format!("text\u{1}{slot:?}"),
            GroupKind::Text(HashMap::default()),
        )
    };
    let number = |key: NumberKey| {
        (
            format!("number\u{1}{slot:?}\u{1}{key:?}"),
            GroupKind::Number(key, Box::default()),
        )
    };
    // A constant that is not a number would break the sort; such a test
    // (which the checker does not let through) is answered alone.
    let finite = |values: &[f64]| values.iter().all(|v| !v.is_nan());
    match op {
        Op::EqText(c) => (Some(text()), Member::Text(TextTest::Eq(c.clone()))),
        Op::NeText(c) => (Some(text()), Member::Text(TextTest::Ne(c.clone()))),
        Op::InText(l) => (Some(text()), Member::Text(TextTest::In(l.clone()))),
        Op::NotInText(l) => (Some(text()), Member::Text(TextTest::NotIn(l.clone()))),
        Op::Cmp(cmp, c, scale) if finite(&[*c]) => (
            Some(number(NumberKey::Scalar(*scale))),
            Member::Number(NumberTest::Cmp(*cmp, *c)),
        ),
        Op::InNum(l, scale) if finite(l) => (
            Some(number(NumberKey::Scalar(*scale))),
            Member::Number(NumberTest::In(l.clone())),
        ),
        Op::NotInNum(l, scale) if finite(l) => (
            Some(number(NumberKey::Scalar(*scale))),
            Member::Number(NumberTest::NotIn(l.clone())),
        ),
        Op::WithinDays(lo, hi) => (
            Some(number(NumberKey::DaysFromToday)),
            Member::Number(NumberTest::Range(f64::from(*lo), f64::from(*hi))),
        ),
        Op::WithinSeconds(lo, hi) => (
            Some(number(NumberKey::SecondsFromNow)),
            Member::Number(NumberTest::Range(*lo as f64, *hi as f64)),
        ),
        _ => (None, Member::Single),
    }
}

/// A hasher for the short constant texts of a playbook (FxHash's mixing).
/// The table is fixed when the playbook compiles and lookups only probe it,
/// so text a lead sends cannot grow it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHash;

impl BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

/// The state of [`FastHash`].
pub struct FastHasher(u64);

impl FastHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(i: usize) -> Slot {
        PathRef::Field(i)
    }

    #[test]
    fn one_predicate_per_distinct_test() {
        let mut p = Predicates::default();
        let a = p.add(field(0), &Op::Cmp(CmpOp::Ge, 100.0, Scale::Plain));
        let b = p.add(field(0), &Op::Cmp(CmpOp::Ge, 100.0, Scale::Plain));
        let c = p.add(field(0), &Op::Cmp(CmpOp::Lt, 100.0, Scale::Plain));
        let d = p.add(field(1), &Op::Cmp(CmpOp::Ge, 100.0, Scale::Plain));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        // Both tests over field 0 share a group; field 1 has its own.
        assert_eq!(p.of[a as usize].0, p.of[c as usize].0);
        assert_ne!(p.of[a as usize].0, p.of[d as usize].0);
    }

    #[test]
    fn number_rows_answer_every_comparison_as_the_test_would() {
        let mut p = Predicates::default();
        let ops = [
            Op::Cmp(CmpOp::Ge, 100.0, Scale::Plain),
            Op::Cmp(CmpOp::Lt, 250.0, Scale::Plain),
            Op::Cmp(CmpOp::Eq, 250.0, Scale::Plain),
            Op::Cmp(CmpOp::Ne, 100.0, Scale::Plain),
            Op::Cmp(CmpOp::Le, 7.5, Scale::Plain),
            Op::Cmp(CmpOp::Gt, 7.5, Scale::Plain),
            Op::InNum(Box::new([3.0, 250.0]), Scale::Plain),
            Op::NotInNum(Box::new([3.0, 250.0]), Scale::Plain),
        ];
        let ids: Vec<u32> = ops.iter().map(|op| p.add(field(0), op)).collect();
        p.finish();
        let group = &p.groups[p.of[ids[0] as usize].0 as usize];
        let GroupKind::Number(_, points) = &group.kind else {
            panic!("a number group")
        };
        for x in [
            -1.0, 0.0, 3.0, 5.0, 7.5, 8.0, 100.0, 100.5, 250.0, 251.0, 1e9,
        ] {
            let row = number_row(points, x);
            let want = [
                x >= 100.0,
                x < 250.0,
                x == 250.0,
                x != 100.0,
                x <= 7.5,
                x > 7.5,
                x == 3.0 || x == 250.0,
                !(x == 3.0 || x == 250.0),
            ];
            for (id, want) in ids.iter().zip(want) {
                assert_eq!(p.holds(*id, row), want, "x = {x}, predicate {id}");
            }
        }
        let none = number_none(points);
        assert!(ids.iter().all(|id| !p.holds(*id, none)));
    }

    #[test]
    fn windows_hold_on_their_edges_and_inside_only() {
        let mut p = Predicates::default();
        let next = p.add(field(0), &Op::WithinDays(0, 30));
        let last = p.add(field(0), &Op::WithinDays(-7, 0));
        p.finish();
        let group = &p.groups[p.of[next as usize].0 as usize];
        let GroupKind::Number(_, points) = &group.kind else {
            panic!("a number group")
        };
        for diff in -10..40 {
            let row = number_row(points, f64::from(diff));
            assert_eq!(p.holds(next, row), (0..=30).contains(&diff), "{diff}");
            assert_eq!(p.holds(last, row), (-7..=0).contains(&diff), "{diff}");
        }
    }

    #[test]
    fn text_rows_answer_equality_and_lists() {
        let mut p = Predicates::default();
        let eq = p.add(field(0), &Op::EqText("goa".into()));
        let ne = p.add(field(0), &Op::NeText("pune".into()));
        let list: Box<[Box<str>]> = Box::new(["goa".into(), "delhi".into()]);
        let within = p.add(field(0), &Op::InText(list.clone()));
        let outside = p.add(field(0), &Op::NotInText(list));
        p.finish();
        let group = &p.groups[p.of[eq as usize].0 as usize];
        let GroupKind::Text(index) = &group.kind else {
            panic!("a text group")
        };
        let row = |t: &str| index.get(t).copied().unwrap_or(text_other(index));
        assert_eq!(
            [eq, ne, within, outside].map(|id| p.holds(id, row("goa"))),
            [true, true, true, false]
        );
        assert_eq!(
            [eq, ne, within, outside].map(|id| p.holds(id, row("pune"))),
            [false, false, false, true]
        );
        assert_eq!(
            [eq, ne, within, outside].map(|id| p.holds(id, row("kochi"))),
            [false, true, false, true]
        );
        let none = text_none(index);
        assert!([eq, ne, within, outside]
            .iter()
            .all(|id| !p.holds(*id, none)));
    }
}

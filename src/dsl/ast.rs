//! The typed syntax tree of a playbook, as written. Spans are owned here and
//! ignored by equality; nothing from the parser library appears in it.

use super::span::{Span, Spanned};
use chrono::{DateTime, FixedOffset, NaiveDate};

/// A name as written: playbook, rule, field or intent.
pub type Ident = Spanned<String>;

/// One playbook: the whole content of a rules file.
#[derive(Clone, Debug, PartialEq)]
pub struct Playbook {
    pub name: Ident,
    pub settings: Vec<Setting>,
    pub rules: Vec<Rule>,
    pub otherwise: Option<Otherwise>,
    pub span: Span,
}

/// A setting at the top of a playbook.
#[derive(Clone, Debug, PartialEq)]
pub enum Setting {
    Timezone(Spanned<String>),
    Hours(Vec<HoursSpan>, Span),
    Intents(Vec<Ident>, Span),
    Field(FieldDecl),
    Sender(Spanned<String>),
    /// `idle <N> days`: an open thread with no message for that long closes.
    Idle(Spanned<u32>, Span),
}

impl Setting {
    /// The keyword that starts this setting.
    pub fn keyword(&self) -> &'static str {
        match self {
            Setting::Timezone(_) => "timezone",
            Setting::Hours(..) => "hours",
            Setting::Intents(..) => "intents",
            Setting::Field(_) => "field",
            Setting::Sender(_) => "sender",
            Setting::Idle(..) => "idle",
        }
    }

    /// Where this setting is written.
    pub fn span(&self) -> Span {
        match self {
            Setting::Timezone(s) | Setting::Sender(s) => s.span,
            Setting::Hours(_, span) | Setting::Intents(_, span) | Setting::Idle(_, span) => *span,
            Setting::Field(f) => f.span,
        }
    }
}

/// Days of the week, Monday first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    /// All days, Monday first.
    pub const ALL: [Day; 7] = [
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    /// The day as written in rules files.
    pub fn as_str(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self.index()]
    }

    /// 0 for Monday .. 6 for Sunday.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// `mon-fri 09:00-13:00, 14:00-18:00`: the days and their opening times.
#[derive(Clone, Debug, PartialEq)]
pub struct HoursSpan {
    /// Day ranges as written: `(mon, Some(fri))` or `(sat, None)`.
    pub days: Vec<(Day, Option<Day>)>,
    /// Opening and closing, in minutes after midnight.
    pub times: Vec<(u32, u32)>,
    pub span: Span,
}

/// `field <name>: <type> [required]`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDecl {
    pub name: Ident,
    pub ty: Spanned<FieldType>,
    pub required: bool,
    pub span: Span,
}

/// The type of a field or built-in path.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldType {
    Text,
    Number,
    Bool,
    Date,
    DateTime,
    /// Text limited to these values.
    OneOf(Vec<Spanned<String>>),
    /// A list of text (only the built-in `tags`).
    TextList,
}

impl FieldType {
    /// The type's name in messages.
    pub fn describe(&self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Bool => "bool",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::OneOf(_) => "one of",
            FieldType::TextList => "list of text",
        }
    }

    /// The type with an article, for sentences: "a number", "text".
    pub fn describe_as_noun(&self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "a number",
            FieldType::Bool => "a bool",
            FieldType::Date => "a date",
            FieldType::DateTime => "a datetime",
            FieldType::OneOf(_) => "one of a list of values",
            FieldType::TextList => "a list of text",
        }
    }

    /// Whether values are text (plain or limited).
    pub fn is_text(&self) -> bool {
        matches!(self, FieldType::Text | FieldType::OneOf(_))
    }
}

/// `rule <name> { when ... then ... [continue] }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: Ident,
    pub condition: Condition,
    pub actions: Vec<Action>,
    /// Where `continue` is written, if it is.
    pub continues: Option<Span>,
    pub span: Span,
}

/// `otherwise { ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Otherwise {
    pub actions: Vec<Action>,
    pub span: Span,
}

/// A condition: tests joined by `and`, `or`, `not`.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Or(Vec<Condition>),
    And(Vec<Condition>),
    Not(Box<Condition>, Span),
    Test(Test),
}

impl Condition {
    /// Where the condition is written.
    pub fn span(&self) -> Span {
        match self {
            Condition::Or(parts) | Condition::And(parts) => parts
                .iter()
                .map(Condition::span)
                .reduce(Span::to)
                .unwrap_or_default(),
            Condition::Not(_, span) => *span,
            Condition::Test(t) => t.span,
        }
    }

    /// Calls `f` on every test, in source order.
    pub fn for_each_test<'a>(&'a self, f: &mut impl FnMut(&'a Test)) {
        match self {
            Condition::Or(parts) | Condition::And(parts) => {
                for part in parts {
                    part.for_each_test(f);
                }
            }
            Condition::Not(inner, _) => inner.for_each_test(f),
            Condition::Test(t) => f(t),
        }
    }
}

/// One test on a path.
#[derive(Clone, Debug, PartialEq)]
pub struct Test {
    pub path: Spanned<String>,
    pub op: TestOp,
    pub span: Span,
}

/// What a test asks of its path.
#[derive(Clone, Debug, PartialEq)]
pub enum TestOp {
    /// The path alone: a bool that is true.
    Truthy,
    Compare(CmpOp, Literal),
    In(Vec<Literal>),
    NotIn(Vec<Literal>),
    Contains(Literal),
    Matches(Literal),
    IsSet,
    IsNotSet,
    Within {
        direction: Direction,
        amount: Spanned<u32>,
        unit: TimeUnit,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether the operator orders values rather than comparing them for equality.
    pub fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

/// `within next` or `within last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Next,
    Last,
}

/// The unit of a `within` test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeUnit {
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl TimeUnit {
    /// The unit's plural as written.
    pub fn as_str(self) -> &'static str {
        match self {
            TimeUnit::Minutes => "minutes",
            TimeUnit::Hours => "hours",
            TimeUnit::Days => "days",
            TimeUnit::Weeks => "weeks",
        }
    }

    /// Whether the unit counts calendar days rather than elapsed time.
    pub fn is_calendar(self) -> bool {
        matches!(self, TimeUnit::Days | TimeUnit::Weeks)
    }
}

/// A literal value in a condition.
#[derive(Clone, Debug, PartialEq)]
pub struct Literal {
    pub value: LiteralValue,
    pub span: Span,
}

/// The value of a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum LiteralValue {
    Text(String),
    Number(f64),
    Bool(bool),
    Date(NaiveDate),
    DateTime(DateTime<FixedOffset>),
    /// A literal that could not be read; its diagnostic is already reported.
    Invalid,
}

impl LiteralValue {
    /// The kind of literal, for messages.
    pub fn describe(&self) -> &'static str {
        match self {
            LiteralValue::Text(_) => "text",
            LiteralValue::Number(_) => "a number",
            LiteralValue::Bool(_) => "a bool",
            LiteralValue::Date(_) => "a date",
            LiteralValue::DateTime(_) => "a datetime",
            LiteralValue::Invalid => "an invalid value",
        }
    }
}

/// An action in `then` or `otherwise`.
#[derive(Clone, Debug, PartialEq)]
pub struct Action {
    pub kind: ActionKind,
    pub span: Span,
}

/// What an action does.
#[derive(Clone, Debug, PartialEq)]
pub enum ActionKind {
    Handoff {
        open: Option<Spanned<String>>,
        template: Option<Spanned<String>>,
    },
    Takeover(Spanned<String>),
    Assign(Spanned<String>),
    Tag(Spanned<String>),
    Notify(Spanned<String>),
    Ask(AskTarget),
    Drop(Spanned<String>),
}

impl ActionKind {
    /// The action's keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            ActionKind::Handoff { .. } => "handoff",
            ActionKind::Takeover(_) => "takeover",
            ActionKind::Assign(_) => "assign",
            ActionKind::Tag(_) => "tag",
            ActionKind::Notify(_) => "notify",
            ActionKind::Ask(_) => "ask",
            ActionKind::Drop(_) => "drop",
        }
    }
}

/// What `ask` reports as still to be asked.
#[derive(Clone, Debug, PartialEq)]
pub enum AskTarget {
    Missing,
    Field(Ident),
}

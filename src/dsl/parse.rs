//! Parsing: rules-file text -> typed AST. One `parse_<rule>` function per
//! grammar rule; pest's types and rule names stay inside this module, and
//! syntax errors are reworded ("expected a condition after `and`").

use super::ast::*;
use super::codes::Code;
use super::diagnostic::Diagnostic;
use super::span::{Span, Spanned};
use chrono::{DateTime, NaiveDate};
use pest::error::{ErrorVariant, InputLocation};
use pest::iterators::Pair;
use pest::Parser as _;

mod grammar {
    #[derive(pest_derive::Parser)]
    #[grammar = "../grammar/rules.pest"]
    pub struct RulesParser;
}
use grammar::{Rule as G, RulesParser};

/// The outcome of parsing one file: the playbook when the syntax is valid, and
/// every problem found on the way (a bad date is reported without stopping).
pub struct Parsed {
    pub playbook: Option<Playbook>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The largest rules file read, in bytes. The bundled playbooks are about
/// 10 KB; a file a hundred times larger is a mistake (a paste, a generated
/// file gone wrong), and refusing it bounds what parsing, checking and
/// formatting can cost.
pub const MAX_PLAYBOOK_BYTES: usize = 1024 * 1024;

/// How deep conditions may nest: each `(` and each `not` is one level. Real
/// playbooks use two or three; the parser, the checker, the formatter and the
/// evaluator all recurse once per level, so the text is measured before any
/// of them runs rather than letting a deep condition overflow the stack.
pub const MAX_CONDITION_DEPTH: usize = 64;

/// Parses the text of a rules file. `file` is the name used in diagnostics.
pub fn parse_playbook(source: &str, file: &str) -> Parsed {
    if let Some(refused) = refuse_unbounded(source, file) {
        return Parsed {
            playbook: None,
            diagnostics: vec![refused],
        };
    }
    let mut parser = PlaybookParser {
        file,
        diagnostics: Vec::new(),
    };
    match RulesParser::parse(G::file, source) {
        Ok(mut pairs) => {
            let playbook = pairs
                .next()
                .and_then(|file_pair| file_pair.into_inner().next())
                .map(|pair| parser.parse_playbook(pair));
            Parsed {
                playbook,
                diagnostics: parser.diagnostics,
            }
        }
        Err(error) => Parsed {
            playbook: None,
            diagnostics: vec![syntax_error(source, file, error)],
        },
    }
}

/// The diagnostic for a file too large, or a condition too deep, to parse.
fn refuse_unbounded(source: &str, file: &str) -> Option<Diagnostic> {
    if source.len() > MAX_PLAYBOOK_BYTES {
        return Some(
            Diagnostic::new(
                Code::E035FileTooLarge,
                format!(
                    "rules file is {} bytes, more than the {MAX_PLAYBOOK_BYTES} handoff reads",
                    source.len()
                ),
                file,
                Some(Span::new(0, 0)),
            )
            .help("split the playbook, or look for text pasted into it by mistake"),
        );
    }
    let span = too_deep(source)?;
    Some(
        Diagnostic::new(
            Code::E034ConditionTooDeep,
            format!("condition nested more than {MAX_CONDITION_DEPTH} levels deep"),
            file,
            Some(span),
        )
        .label("this level is one too many")
        .help("flatten it: `not not a` is `a`, and `(a and (b and c))` is `a and b and c`"),
    )
}

/// Where conditions first nest deeper than [`MAX_CONDITION_DEPTH`]: the `(`
/// or `not` one level too deep. A lexical pass with no recursion, so it is
/// safe on any input; strings and comments are skipped as the grammar reads
/// them. `not in` counts one level too, which only makes the bound stricter.
fn too_deep(source: &str) -> Option<Span> {
    let bytes = source.as_bytes();
    // The depth at each open parenthesis, to return to at its `)`.
    let mut open: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut nots = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                nots = 0;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                depth += nots + 1;
                nots = 0;
                if depth > MAX_CONDITION_DEPTH {
                    return Some(Span::new(i, i + 1));
                }
                open.push(depth);
                i += 1;
            }
            b')' => {
                nots = 0;
                open.pop();
                depth = open.last().copied().unwrap_or(0);
                i += 1;
            }
            c if c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit() => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                if &bytes[start..i] == b"not" {
                    nots += 1;
                    if depth + nots > MAX_CONDITION_DEPTH {
                        return Some(Span::new(start, i));
                    }
                } else {
                    nots = 0;
                }
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                nots = 0;
                i += 1;
            }
        }
    }
    None
}

struct PlaybookParser<'f> {
    file: &'f str,
    diagnostics: Vec<Diagnostic>,
}

/// The span of a pair without the whitespace and comments pest lets trail
/// after its last token (it does so before an optional part that is absent).
fn span_of(pair: &Pair<'_, G>) -> Span {
    let s = pair.as_span();
    Span::new(s.start(), s.start() + code_len(s.as_str()))
}

/// The length of `text` up to its last character of code.
fn code_len(text: &str) -> usize {
    let mut last = 0;
    let mut in_string = false;
    let mut in_comment = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
            }
            continue;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || c == '\n' {
                in_string = false;
            }
            last = i + c.len_utf8();
            continue;
        }
        match c {
            '#' => in_comment = true,
            '"' => {
                in_string = true;
                last = i + 1;
            }
            c if c.is_whitespace() => {}
            c => last = i + c.len_utf8(),
        }
    }
    last
}

fn spanned_str(pair: &Pair<'_, G>) -> Spanned<String> {
    Spanned::new(pair.as_str().to_string(), span_of(pair))
}

/// The pairs inside `pair` that carry meaning (keywords dropped).
fn children<'i>(pair: Pair<'i, G>) -> impl Iterator<Item = Pair<'i, G>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

fn is_keyword(kind: G) -> bool {
    format!("{kind:?}").starts_with("kw_")
}

impl PlaybookParser<'_> {
    fn error(&mut self, code: Code, message: String, span: Span) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(code, message, self.file, Some(span)));
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    fn parse_playbook(&mut self, pair: Pair<'_, G>) -> Playbook {
        let span = span_of(&pair);
        let mut inner = children(pair);
        let name = inner
            .next()
            .map(|p| spanned_str(&p))
            .unwrap_or_else(|| Spanned::new(String::new(), span));
        let mut playbook = Playbook {
            name,
            settings: Vec::new(),
            rules: Vec::new(),
            otherwise: None,
            span,
        };
        for item in inner {
            let item_span = span_of(&item);
            match item.as_rule() {
                G::rule => {
                    if let Some(otherwise) = &playbook.otherwise {
                        let other = otherwise.span;
                        let file = self.file.to_string();
                        let d = self.error(
                            Code::E021OtherwisePlacement,
                            "`otherwise` must come after the last rule".into(),
                            other,
                        );
                        d.label = Some("this `otherwise` comes before a rule".into());
                        d.help = Some("move `otherwise { ... }` to the end of the playbook".into());
                        d.related.push(super::diagnostic::Related {
                            file,
                            span: item_span,
                            label: "this rule follows it".into(),
                        });
                    }
                    let rule = self.parse_rule(item);
                    playbook.rules.push(rule);
                }
                G::otherwise => {
                    let otherwise = self.parse_otherwise(item);
                    if playbook.otherwise.is_some() {
                        let d = self.error(
                            Code::E021OtherwisePlacement,
                            "a playbook has at most one `otherwise`".into(),
                            item_span,
                        );
                        d.label = Some("second `otherwise`".into());
                        d.help = Some("merge the actions into one `otherwise` block".into());
                    } else {
                        playbook.otherwise = Some(otherwise);
                    }
                }
                _ => {
                    if let Some(setting) = self.parse_setting(item) {
                        if !playbook.rules.is_empty() || playbook.otherwise.is_some() {
                            let keyword = setting.keyword();
                            let d = self.error(
                                Code::E026SettingAfterRule,
                                format!("setting `{keyword}` after the first rule"),
                                setting.span(),
                            );
                            d.help = Some(
                                "settings go at the top of the playbook, before the first rule"
                                    .into(),
                            );
                        }
                        playbook.settings.push(setting);
                    }
                }
            }
        }
        playbook
    }

    fn parse_setting(&mut self, pair: Pair<'_, G>) -> Option<Setting> {
        let span = span_of(&pair);
        let kind = pair.as_rule();
        let mut inner = children(pair);
        let setting = match kind {
            G::timezone => Setting::Timezone(self.parse_string(inner.next()?)),
            G::sender => Setting::Sender(self.parse_string(inner.next()?)),
            G::idle => {
                let days = inner.next()?;
                Setting::Idle(self.parse_count(&days, "`idle`", "`idle 30 days`"), span)
            }
            G::intents => Setting::Intents(inner.map(|p| spanned_str(&p)).collect(), span),
            G::hours => Setting::Hours(inner.map(|p| self.parse_hours_span(p)).collect(), span),
            G::field => Setting::Field(self.parse_field(span, inner)?),
            _ => return None,
        };
        Some(setting)
    }

    fn parse_hours_span(&mut self, pair: Pair<'_, G>) -> HoursSpan {
        let span = span_of(&pair);
        let mut days = Vec::new();
        let mut times = Vec::new();
        for part in children(pair) {
            match part.as_rule() {
                G::day_set => {
                    for item in children(part) {
                        let mut ds = children(item).map(|d| parse_day(d.as_str()));
                        if let Some(first) = ds.next() {
                            days.push((first, ds.next()));
                        }
                    }
                }
                G::time_range => {
                    let mut clocks = children(part);
                    if let (Some(a), Some(b)) = (clocks.next(), clocks.next()) {
                        let (o, c) = (self.parse_clock(&a), self.parse_clock(&b));
                        if matches!((o, c), (Some(o), Some(c)) if c <= o) {
                            let d = self.error(
                                Code::E020BadHours,
                                format!(
                                    "business hours close at `{}` before they open at `{}`",
                                    b.as_str(),
                                    a.as_str()
                                ),
                                span_of(&a).to(span_of(&b)),
                            );
                            d.help = Some("write the opening time first, as in `10:00-19:00`; hours that cross midnight are two spans, one per day".into());
                        }
                        times.push((o.unwrap_or(0), c.unwrap_or(0)));
                    }
                }
                _ => {}
            }
        }
        HoursSpan { days, times, span }
    }

    fn parse_clock(&mut self, pair: &Pair<'_, G>) -> Option<u32> {
        let text = pair.as_str();
        let (h, m) = text.split_once(':').unwrap_or((text, "0"));
        let h: u32 = h.parse().unwrap_or(99);
        let m: u32 = m.parse().unwrap_or(99);
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            let d = self.error(
                Code::E020BadHours,
                format!("`{text}` is not a time of day"),
                span_of(pair),
            );
            d.help = Some("times run from `00:00` to `24:00`".into());
            return None;
        }
        Some(h * 60 + m)
    }

    fn parse_field<'i>(
        &mut self,
        span: Span,
        mut inner: impl Iterator<Item = Pair<'i, G>>,
    ) -> Option<FieldDecl> {
        let name = spanned_str(&inner.next()?);
        let ty_pair = inner.next()?;
        let ty_span = span_of(&ty_pair);
        let ty_inner = children(ty_pair).next()?;
        let ty = match ty_inner.as_rule() {
            G::one_of => {
                FieldType::OneOf(children(ty_inner).map(|s| self.parse_string(s)).collect())
            }
            _ => match ty_inner.as_str() {
                "text" => FieldType::Text,
                "number" => FieldType::Number,
                "bool" => FieldType::Bool,
                "date" => FieldType::Date,
                _ => FieldType::DateTime,
            },
        };
        let required = inner.next().is_some();
        Some(FieldDecl {
            name,
            ty: Spanned::new(ty, ty_span),
            required,
            span,
        })
    }

    fn parse_rule(&mut self, pair: Pair<'_, G>) -> Rule {
        let span = span_of(&pair);
        let mut name = Spanned::new(String::new(), span);
        let mut condition = Condition::And(Vec::new());
        let mut actions = Vec::new();
        let mut continues = None;
        for part in children(pair) {
            match part.as_rule() {
                G::name => name = spanned_str(&part),
                G::condition => condition = self.parse_condition(part),
                G::cont => continues = Some(span_of(&part)),
                _ => {
                    if let Some(action) = self.parse_action(part) {
                        actions.push(action);
                    }
                }
            }
        }
        Rule {
            name,
            condition,
            actions,
            continues,
            span,
        }
    }

    fn parse_otherwise(&mut self, pair: Pair<'_, G>) -> Otherwise {
        let span = span_of(&pair);
        let actions = children(pair)
            .filter_map(|p| self.parse_action(p))
            .collect();
        Otherwise { actions, span }
    }

    fn parse_condition(&mut self, pair: Pair<'_, G>) -> Condition {
        let mut parts: Vec<Condition> = children(pair).map(|p| self.parse_conjunction(p)).collect();
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::Or(parts)
        }
    }

    fn parse_conjunction(&mut self, pair: Pair<'_, G>) -> Condition {
        let mut parts: Vec<Condition> = children(pair).map(|p| self.parse_negation(p)).collect();
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            Condition::And(parts)
        }
    }

    fn parse_negation(&mut self, pair: Pair<'_, G>) -> Condition {
        let span = span_of(&pair);
        let mut inner = pair.into_inner();
        let Some(first) = inner.next() else {
            return Condition::And(Vec::new());
        };
        match first.as_rule() {
            G::kw_not => match inner.next() {
                Some(rest) => Condition::Not(Box::new(self.parse_negation(rest)), span),
                None => Condition::And(Vec::new()),
            },
            G::condition => self.parse_condition(first),
            G::test => Condition::Test(self.parse_test(first)),
            _ => Condition::And(Vec::new()),
        }
    }

    fn parse_test(&mut self, pair: Pair<'_, G>) -> Test {
        let span = span_of(&pair);
        let mut inner = children(pair);
        let path = inner
            .next()
            .map(|p| spanned_str(&p))
            .unwrap_or_else(|| Spanned::new(String::new(), span));
        let op = match inner.next() {
            None => TestOp::Truthy,
            Some(tail) => self.parse_test_tail(tail),
        };
        Test { path, op, span }
    }

    fn parse_test_tail(&mut self, pair: Pair<'_, G>) -> TestOp {
        let kind = pair.as_rule();
        let mut inner = children(pair).peekable();
        match kind {
            G::compare => {
                let op = match inner.next().map(|p| p.as_str().to_string()).as_deref() {
                    Some("==") => CmpOp::Eq,
                    Some("!=") => CmpOp::Ne,
                    Some("<") => CmpOp::Lt,
                    Some("<=") => CmpOp::Le,
                    Some(">") => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                TestOp::Compare(op, self.parse_literal_opt(inner.next()))
            }
            G::in_list | G::not_in_list => {
                let items = inner
                    .next()
                    .map(|list| children(list).map(|v| self.parse_literal(v)).collect())
                    .unwrap_or_default();
                if kind == G::in_list {
                    TestOp::In(items)
                } else {
                    TestOp::NotIn(items)
                }
            }
            G::contains => TestOp::Contains(self.parse_literal_opt(inner.next())),
            G::matches => TestOp::Matches(self.parse_literal_opt(inner.next())),
            G::is_set => {
                if inner.peek().is_some() {
                    TestOp::IsNotSet
                } else {
                    TestOp::IsSet
                }
            }
            _ => {
                let direction = match inner.next().map(|p| p.as_str().to_string()).as_deref() {
                    Some("last") => Direction::Last,
                    _ => Direction::Next,
                };
                let amount = match inner.next() {
                    Some(n) => self.parse_amount(&n),
                    None => Spanned::new(0, Span::default()),
                };
                let unit = match inner.next().map(|p| p.as_str().to_string()).as_deref() {
                    Some("minute" | "minutes") => TimeUnit::Minutes,
                    Some("hour" | "hours") => TimeUnit::Hours,
                    Some("week" | "weeks") => TimeUnit::Weeks,
                    _ => TimeUnit::Days,
                };
                TestOp::Within {
                    direction,
                    amount,
                    unit,
                }
            }
        }
    }

    fn parse_amount(&mut self, pair: &Pair<'_, G>) -> Spanned<u32> {
        self.parse_count(pair, "`within`", "`within next 7 days`")
    }

    /// A whole number of units, for `keyword` (shown in `example`).
    fn parse_count(&mut self, pair: &Pair<'_, G>, keyword: &str, example: &str) -> Spanned<u32> {
        let span = span_of(pair);
        let text = pair.as_str().replace('_', "");
        match text.parse::<u32>() {
            Ok(n) => Spanned::new(n, span),
            Err(_) => {
                let d = self.error(
                    Code::E027BadNumber,
                    format!(
                        "{keyword} needs a whole number of units, not `{}`",
                        pair.as_str()
                    ),
                    span,
                );
                d.help = Some(format!("write a count such as `7`, as in {example}"));
                Spanned::new(0, span)
            }
        }
    }

    fn parse_literal_opt(&mut self, pair: Option<Pair<'_, G>>) -> Literal {
        match pair {
            Some(p) => self.parse_literal(p),
            None => Literal {
                value: LiteralValue::Invalid,
                span: Span::default(),
            },
        }
    }

    fn parse_literal(&mut self, pair: Pair<'_, G>) -> Literal {
        let span = span_of(&pair);
        let text = pair.as_str();
        let value = match pair.as_rule() {
            G::string => LiteralValue::Text(self.parse_string(pair).node),
            G::boolean => LiteralValue::Bool(text == "true"),
            G::number => match text.replace('_', "").parse::<f64>() {
                Ok(n) if n.is_finite() => LiteralValue::Number(n),
                _ => {
                    self.error(
                        Code::E027BadNumber,
                        format!("`{text}` is not a number"),
                        span,
                    );
                    LiteralValue::Invalid
                }
            },
            G::date => match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(d) => LiteralValue::Date(d),
                Err(_) => {
                    let d = self.error(
                        Code::E009BadDate,
                        format!("`{text}` is not a date on the calendar"),
                        span,
                    );
                    d.help = Some("dates are written `YYYY-MM-DD`, as in `2027-03-14`".into());
                    LiteralValue::Invalid
                }
            },
            _ => match DateTime::parse_from_rfc3339(&normalize_datetime(text)) {
                Ok(dt) => LiteralValue::DateTime(dt),
                Err(_) => {
                    let d = self.error(
                        Code::E009BadDate,
                        format!("`{text}` is not a valid datetime"),
                        span,
                    );
                    d.help =
                        Some("datetimes are RFC 3339, as in `2027-03-14T10:00:00+05:30`".into());
                    LiteralValue::Invalid
                }
            },
        };
        Literal { value, span }
    }

    fn parse_string(&mut self, pair: Pair<'_, G>) -> Spanned<String> {
        let span = span_of(&pair);
        let raw = pair
            .into_inner()
            .next()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        Spanned::new(unescape(&raw), span)
    }

    fn parse_action(&mut self, pair: Pair<'_, G>) -> Option<Action> {
        let span = span_of(&pair);
        let kind = pair.as_rule();
        let mut inner = children(pair);
        let kind = match kind {
            G::handoff => {
                let mut open: Option<Spanned<String>> = None;
                let mut template: Option<Spanned<String>> = None;
                for part in inner {
                    let part_span = span_of(&part);
                    let is_open = part.as_rule() == G::handoff_open;
                    let value = children(part).next().map(|s| self.parse_string(s))?;
                    let slot = if is_open { &mut open } else { &mut template };
                    if slot.is_some() {
                        let word = if is_open { "open" } else { "template" };
                        let d = self.error(
                            Code::E024HandoffParts,
                            format!("`{word}` given twice in one `handoff whatsapp`"),
                            part_span,
                        );
                        d.help = Some(format!("keep one `{word}`"));
                    }
                    *slot = Some(value);
                }
                if open.is_none() && template.is_none() {
                    let d = self.error(
                        Code::E024HandoffParts,
                        "`handoff whatsapp` needs `open`, `template` or both".into(),
                        span,
                    );
                    d.help = Some("name a session message with `open \"<file>\"` and an approved template with `template \"<name>\"`".into());
                }
                ActionKind::Handoff { open, template }
            }
            G::takeover => ActionKind::Takeover(self.parse_string(inner.next()?)),
            G::assign => ActionKind::Assign(self.parse_string(inner.next()?)),
            G::tag => ActionKind::Tag(self.parse_string(inner.next()?)),
            G::notify => ActionKind::Notify(self.parse_string(inner.next()?)),
            G::drop => ActionKind::Drop(self.parse_string(inner.next()?)),
            G::ask => {
                let target = inner.next()?;
                if target.as_rule() == G::ask_missing {
                    ActionKind::Ask(AskTarget::Missing)
                } else {
                    ActionKind::Ask(AskTarget::Field(spanned_str(&target)))
                }
            }
            _ => return None,
        };
        Some(Action { kind, span })
    }
}

fn parse_day(text: &str) -> Day {
    match text {
        "mon" => Day::Mon,
        "tue" => Day::Tue,
        "wed" => Day::Wed,
        "thu" => Day::Thu,
        "fri" => Day::Fri,
        "sat" => Day::Sat,
        _ => Day::Sun,
    }
}

/// Accepts `2027-03-14T10:00+05:30` (no seconds) and lowercase `t`/`z` as
/// RFC 3339 readers in other tools do.
fn normalize_datetime(text: &str) -> String {
    let upper = text.replace('t', "T").replace('z', "Z");
    // Insert `:00` seconds when the time has only hours and minutes.
    if let Some(t) = upper.find('T') {
        let time = &upper[t + 1..];
        let zone_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
        if time[..zone_at].len() == 5 {
            return format!("{}:00{}", &upper[..t + 1 + zone_at], &time[zone_at..]);
        }
    }
    upper
}

/// Resolves `\"`, `\\`, `\n` and `\t` escapes. Unknown escapes keep their character.
pub fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---- syntax errors in words ----

fn syntax_error(source: &str, file: &str, error: pest::error::Error<G>) -> Diagnostic {
    let pos = match error.location {
        InputLocation::Pos(p) => p,
        InputLocation::Span((s, _)) => s,
    };
    let expected: Vec<G> = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } => positives.clone(),
        ErrorVariant::CustomError { .. } => Vec::new(),
    };
    let found = found_at(source, pos);
    let after = token_before(source, pos);
    let mut words: Vec<&'static str> = Vec::new();
    // After a path, `not` can only start `not in`: say "a test", not "a condition".
    let after_path = expected
        .iter()
        .any(|k| describe_rule(*k).starts_with("a test"));
    for kind in &expected {
        if after_path && *kind == G::kw_not {
            continue;
        }
        let word = describe_rule(*kind);
        if !words.contains(&word) {
            words.push(word);
        }
    }
    let wanted = join_or(&words);
    if let Some(f) = &found {
        if f.starts_with('"') && (f.len() == 1 || !f.ends_with('"')) {
            let end = pos + f.len();
            return Diagnostic::new(
                Code::E001Syntax,
                "unterminated string",
                file,
                Some(Span::new(pos, end)),
            )
            .label("this string is never closed")
            .help("close the string with `\"` on the same line");
        }
    }
    let mut message = if wanted.is_empty() {
        "unexpected input".to_string()
    } else {
        format!("expected {wanted}")
    };
    if let Some(after) = &after {
        message.push_str(&format!(" after `{after}`"));
    }
    let end = pos + found.as_ref().map(|f| f.len()).unwrap_or(0);
    let label = match &found {
        Some(f) => format!("found `{f}`"),
        None => "found the end of the file".to_string(),
    };
    let help = syntax_help(&expected, found.as_deref(), after.as_deref());
    Diagnostic::new(
        Code::E001Syntax,
        message,
        file,
        Some(Span::new(pos, end.max(pos))),
    )
    .label(label)
    .maybe_help(help)
}

fn syntax_help(expected: &[G], found: Option<&str>, after: Option<&str>) -> Option<String> {
    let found = found.unwrap_or("");
    if found == "=" || found == "=>" {
        return Some("compare with `==`".into());
    }
    if found == "&&" {
        return Some("join tests with `and`".into());
    }
    if found == "||" {
        return Some("join tests with `or`".into());
    }
    if found.is_empty()
        && expected
            .iter()
            .any(|k| matches!(k, G::rule | G::kw_rule | G::otherwise))
    {
        return Some("a `{` is never closed: end the playbook with `}`".into());
    }
    if found.starts_with('\'') {
        return Some("strings use double quotes: `\"...\"`".into());
    }
    if found.chars().next().is_some_and(|c| c.is_ascii_uppercase()) && expected.contains(&G::name) {
        return Some("names are lowercase letters, digits and `_`, starting with a letter".into());
    }
    if expected.contains(&G::kw_then) {
        return Some("a rule reads `when <condition> then <action> ...`".into());
    }
    if after == Some("then") {
        return Some("actions are `handoff whatsapp { ... }`, `assign`, `takeover`, `tag`, `notify`, `ask` and `drop`".into());
    }
    None
}

fn join_or(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The token at `pos`, for "found `...`".
fn found_at(source: &str, pos: usize) -> Option<String> {
    let rest = source.get(pos..)?;
    let mut chars = rest.chars();
    let first = chars.next()?;
    let token: String = if first.is_alphanumeric() || first == '_' {
        rest.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            .collect()
    } else if first == '"' {
        let end = rest[1..]
            .find(['"', '\n'])
            .map(|i| i + 2)
            .unwrap_or(rest.len());
        rest[..end.min(rest.len())].to_string()
    } else {
        rest.chars()
            .take_while(|c| !c.is_alphanumeric() && !c.is_whitespace() && *c != '"')
            .take(2)
            .collect()
    };
    if token.is_empty() {
        Some(first.to_string())
    } else {
        Some(token)
    }
}

/// The word or symbol just before `pos`, skipping spaces and comments.
fn token_before(source: &str, pos: usize) -> Option<String> {
    let before = source.get(..pos)?;
    // Drop comment tails line by line.
    let mut text = String::new();
    for line in before.split_inclusive('\n') {
        match line.find('#') {
            Some(i) if !in_string(&line[..i]) => {
                text.push_str(&line[..i]);
                if line.ends_with('\n') {
                    text.push('\n');
                }
            }
            _ => text.push_str(line),
        }
    }
    let trimmed = text.trim_end();
    let last = trimmed.chars().last()?;
    let token: String = if last.is_alphanumeric() || last == '_' {
        let start = trimmed
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map(|i| i + 1)
            .unwrap_or(0);
        trimmed[start..].to_string()
    } else if last == '"' {
        let open = trimmed[..trimmed.len() - 1].rfind('"').unwrap_or(0);
        trimmed[open..].to_string()
    } else {
        let start = trimmed
            .rfind(|c: char| c.is_alphanumeric() || c.is_whitespace() || c == '"' || c == '_')
            .map(|i| i + trimmed[i..].chars().next().map_or(1, char::len_utf8))
            .unwrap_or(0);
        trimmed[start..].to_string()
    };
    Some(token)
}

fn in_string(text: &str) -> bool {
    text.matches('"').count() % 2 == 1
}

/// Words for grammar rules in messages.
fn describe_rule(kind: G) -> &'static str {
    match kind {
        G::EOI => "the end of the file",
        G::playbook | G::kw_playbook => "`playbook <name> { ... }`",
        G::name => "a name",
        G::path => "a field or path",
        G::string | G::string_inner => "a string in double quotes",
        G::number => "a number",
        G::date => "a date",
        G::datetime => "a datetime",
        G::boolean => "`true` or `false`",
        G::list => "a list `[...]`",
        G::condition | G::conjunction | G::negation | G::test | G::kw_not => "a condition",
        G::test_tail
        | G::compare
        | G::cmp_op
        | G::in_list
        | G::not_in_list
        | G::contains
        | G::matches
        | G::is_set
        | G::within
        | G::kw_in
        | G::kw_contains
        | G::kw_matches
        | G::kw_is
        | G::kw_within => "a test such as `==`, `in`, `contains` or `is set`",
        G::kw_set => "`set`",
        G::is_not => "`not`",
        G::kw_and => "`and`",
        G::kw_or => "`or`",
        G::kw_then => "`then`",
        G::kw_when => "`when`",
        G::direction => "`next` or `last`",
        G::unit => "a unit (`minutes`, `hours`, `days` or `weeks`)",
        G::idle_unit => "`days`",
        G::rule | G::kw_rule => "a rule",
        G::otherwise | G::kw_otherwise => "`otherwise`",
        G::setting
        | G::timezone
        | G::hours
        | G::intents
        | G::field
        | G::sender
        | G::idle
        | G::kw_idle
        | G::kw_timezone
        | G::kw_hours
        | G::kw_intents
        | G::kw_field
        | G::kw_sender => "a setting",
        G::item => "a setting or a rule",
        G::hours_span | G::day_set | G::day_item | G::day => "a day (`mon` .. `sun`)",
        G::time_range | G::clock => "a time such as `10:00`",
        G::field_type | G::type_name | G::one_of | G::kw_one => {
            "a type (`text`, `number`, `bool`, `date`, `datetime` or `one of \"a\", \"b\"`)"
        }
        G::kw_of => "`of`",
        G::required | G::kw_required => "`required`",
        G::action
        | G::handoff
        | G::takeover
        | G::assign
        | G::tag
        | G::notify
        | G::ask
        | G::drop
        | G::kw_handoff
        | G::kw_takeover
        | G::kw_assign
        | G::kw_tag
        | G::kw_notify
        | G::kw_ask
        | G::kw_drop => "an action",
        G::kw_whatsapp => "`whatsapp`",
        G::handoff_part | G::handoff_open | G::handoff_template | G::kw_open | G::kw_template => {
            "`open \"...\"` or `template \"...\"`"
        }
        G::ask_missing | G::kw_missing => "a field name or `missing`",
        G::cont | G::kw_continue => "`continue`",
        _ => "something else",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_ok(src: &str) -> Playbook {
        let parsed = parse_playbook(src, "t.rules");
        assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
        parsed.playbook.unwrap()
    }

    #[test]
    fn precedence_is_not_then_and_then_or() {
        let pb = parse_ok("playbook t { rule r { when not a == 1 and b or c then tag \"x\" } }");
        let Condition::Or(parts) = &pb.rules[0].condition else {
            panic!("expected or at the top: {:?}", pb.rules[0].condition)
        };
        assert_eq!(parts.len(), 2);
        let Condition::And(conj) = &parts[0] else {
            panic!()
        };
        assert!(matches!(conj[0], Condition::Not(..)));
    }

    #[test]
    fn keywords_are_whole_words() {
        let pb = parse_ok(
            "playbook t { field notes: text\n rule r { when notes is set then notify \"crm\" } }",
        );
        assert_eq!(pb.rules[0].actions[0].kind.keyword(), "notify");
    }

    #[test]
    fn syntax_errors_speak_in_words() {
        let parsed = parse_playbook(
            "playbook t {\n rule r { when a == 1 and then tag \"x\" }\n}",
            "t.rules",
        );
        let d = &parsed.diagnostics[0];
        assert_eq!(d.message, "expected a condition after `and`");
    }

    #[test]
    fn nesting_is_measured_in_parentheses_and_nots_outside_strings_and_comments() {
        let at_limit = format!("{}a{}", "(".repeat(64), ")".repeat(64));
        assert_eq!(too_deep(&at_limit), None);
        let over = format!("{}a{}", "(".repeat(65), ")".repeat(65));
        assert_eq!(too_deep(&over), Some(Span::new(64, 65)));
        // Siblings do not add up; only nesting does.
        let siblings = "(a) and ".repeat(1_000);
        assert_eq!(too_deep(&siblings), None);
        let nots = format!("{}a", "not ".repeat(65));
        assert_eq!(too_deep(&nots), Some(Span::new(256, 259)));
        // `notify` is not `not`; parentheses in strings and comments do not count.
        let quoted = format!("notify \"{}\" # {}\n", "(".repeat(100), "(".repeat(100));
        assert_eq!(too_deep(&quoted.repeat(100)), None);
    }

    #[test]
    fn a_deep_condition_is_one_diagnostic_not_a_stack_overflow() {
        let text = format!(
            "playbook t {{\n rule r {{ when {}a == 1{} then tag \"x\" }}\n}}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let parsed = parse_playbook(&text, "t.rules");
        assert!(parsed.playbook.is_none());
        assert_eq!(parsed.diagnostics.len(), 1);
        assert_eq!(parsed.diagnostics[0].code, Code::E034ConditionTooDeep);
    }

    #[test]
    fn strings_unescape() {
        assert_eq!(unescape(r#"a\"b\\c"#), "a\"b\\c");
    }

    #[test]
    fn datetimes_without_seconds_are_read() {
        assert_eq!(
            normalize_datetime("2027-03-14T10:00+05:30"),
            "2027-03-14T10:00:00+05:30"
        );
    }
}

//! The canonical layout of a rules file. Formatting keeps every comment and
//! never changes what a file means: the formatted text parses to the same
//! AST (spans aside), and formatting it again changes nothing.

use super::ast::*;
use super::span::Span;

/// Width past which a condition is broken at its top-level `and`/`or`.
const CONDITION_WIDTH: usize = 64;

/// Width at which long `one of` lists wrap.
const LINE_WIDTH: usize = 96;

/// The indent of a wrapped `one of` list whose field name is too long to
/// align under.
const LONG_NAME_INDENT: usize = 8;

/// A comment in the source.
#[derive(Clone, Debug)]
struct Comment {
    start: usize,
    text: String,
    /// Code stands before it on its line.
    trailing: bool,
}

/// One output line, tied to where its construct starts and ends in the source.
struct Line {
    indent: usize,
    text: String,
    /// Source offset of the construct this line prints; `None` for blank lines.
    anchor: Option<usize>,
    /// Source offset where the construct ends.
    end: usize,
    /// Indentation for comments placed before this line.
    comment_indent: usize,
    /// Whether comments may be placed before this line.
    takes_comments: bool,
}

/// Formats a playbook parsed from `source`.
pub fn format_playbook(playbook: &Playbook, source: &str) -> String {
    let mut f = Formatter {
        source,
        lines: Vec::new(),
    };
    f.playbook(playbook);
    place_comments(f.lines, comments(source), source)
}

struct Formatter<'s> {
    source: &'s str,
    lines: Vec<Line>,
}

impl Formatter<'_> {
    fn line(&mut self, indent: usize, text: String, span: Span) {
        self.lines.push(Line {
            indent,
            text,
            anchor: Some(span.start),
            end: span.end,
            comment_indent: indent,
            takes_comments: true,
        });
    }

    fn closing(&mut self, indent: usize, text: &str, at: usize, inner: usize) {
        self.lines.push(Line {
            indent,
            text: text.into(),
            anchor: Some(at),
            end: at + 1,
            comment_indent: inner,
            takes_comments: true,
        });
    }

    fn blank(&mut self) {
        if self.lines.last().is_some_and(|l| l.anchor.is_some()) {
            self.lines.push(Line {
                indent: 0,
                text: String::new(),
                anchor: None,
                end: 0,
                comment_indent: 0,
                takes_comments: false,
            });
        }
    }

    fn text(&self, span: Span) -> &str {
        span.text(self.source)
    }

    fn playbook(&mut self, p: &Playbook) {
        let open_end = p.name.span.end;
        self.line(
            0,
            format!("playbook {} {{", p.name.node),
            Span::new(p.span.start, open_end),
        );
        let mut last_group = None;
        for setting in &p.settings {
            let group = match setting {
                Setting::Timezone(_)
                | Setting::Hours(..)
                | Setting::Sender(_)
                | Setting::Idle(..) => 0,
                Setting::Intents(..) => 1,
                Setting::Field(_) => 2,
            };
            if last_group.is_some_and(|g| g != group) {
                self.blank();
            }
            last_group = Some(group);
            let text = self.setting(setting);
            self.line(2, text, setting.span());
        }
        for rule in &p.rules {
            if self.lines.len() > 1 {
                self.blank();
            }
            self.rule(rule);
        }
        if let Some(o) = &p.otherwise {
            if self.lines.len() > 1 {
                self.blank();
            }
            self.line(
                2,
                "otherwise {".into(),
                Span::new(o.span.start, o.span.start + 9),
            );
            for a in &o.actions {
                self.action(4, a);
            }
            self.closing(2, "}", o.span.end.saturating_sub(1), 4);
        }
        self.closing(0, "}", p.span.end.saturating_sub(1), 2);
    }

    fn setting(&self, s: &Setting) -> String {
        match s {
            Setting::Timezone(tz) => format!("timezone {}", self.text(tz.span)),
            Setting::Sender(sender) => format!("sender {}", self.text(sender.span)),
            Setting::Idle(days, _) => format!(
                "idle {} {}",
                self.text(days.span),
                if days.node == 1 { "day" } else { "days" }
            ),
            Setting::Intents(names, _) => {
                format!(
                    "intents {}",
                    names
                        .iter()
                        .map(|n| n.node.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Setting::Hours(spans, _) => {
                let parts: Vec<String> = spans.iter().map(|h| self.hours_span(h)).collect();
                format!("hours {}", parts.join(", "))
            }
            Setting::Field(field) => {
                let ty = match &field.ty.node {
                    FieldType::OneOf(values) => {
                        // Long lists wrap, each line aligned under the first value.
                        let head = format!("field {}: one of ", field.name.node);
                        // Aligned under the first value, unless the name is so
                        // long that every wrapped line would repeat its width
                        // in spaces: then a fixed indent keeps the output the
                        // size of the input.
                        let align = if 2 + head.len() <= LINE_WIDTH / 2 {
                            2 + head.len()
                        } else {
                            LONG_NAME_INDENT
                        };
                        let mut text = String::from("one of ");
                        let mut width = align;
                        for (i, v) in values.iter().enumerate() {
                            let item = self.text(v.span);
                            let sep = if i + 1 < values.len() { "," } else { "" };
                            if i > 0 {
                                if width + 1 + item.len() + sep.len() > LINE_WIDTH {
                                    text.push('\n');
                                    text.push_str(&" ".repeat(align));
                                    width = align;
                                } else {
                                    text.push(' ');
                                    width += 1;
                                }
                            }
                            text.push_str(item);
                            text.push_str(sep);
                            width += item.len() + sep.len();
                        }
                        text
                    }
                    other => other.describe().to_string(),
                };
                let required = if field.required { " required" } else { "" };
                format!("field {}: {ty}{required}", field.name.node)
            }
        }
    }

    fn hours_span(&self, h: &HoursSpan) -> String {
        let days: Vec<String> = h
            .days
            .iter()
            .map(|(from, to)| match to {
                Some(to) => format!("{}-{}", from.as_str(), to.as_str()),
                None => from.as_str().to_string(),
            })
            .collect();
        let clock = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let times: Vec<String> = h
            .times
            .iter()
            .map(|(o, c)| format!("{}-{}", clock(*o), clock(*c)))
            .collect();
        format!("{} {}", days.join(","), times.join(", "))
    }

    fn rule(&mut self, rule: &Rule) {
        self.line(
            2,
            format!("rule {} {{", rule.name.node),
            Span::new(rule.span.start, rule.name.span.end + 2),
        );
        let one_line = self.condition(&rule.condition, 0);
        let parts: Option<(&[Condition], &str)> = match &rule.condition {
            Condition::Or(parts) => Some((parts, "or")),
            Condition::And(parts) => Some((parts, "and")),
            _ => None,
        };
        match parts {
            Some((parts, word)) if one_line.len() > CONDITION_WIDTH || parts.len() > 3 => {
                let precedence = if word == "or" { 1 } else { 2 };
                for (i, part) in parts.iter().enumerate() {
                    let text = self.condition(part, precedence);
                    let prefix = if i == 0 {
                        "when".to_string()
                    } else {
                        format!(" {word}")
                    };
                    self.line(4, format!("{prefix} {text}"), part.span());
                }
            }
            _ => self.line(4, format!("when {one_line}"), rule.condition.span()),
        }
        let cond_end = rule.condition.span().end;
        let single =
            rule.actions.len() == 1 && !matches!(rule.actions[0].kind, ActionKind::Handoff { .. });
        if single {
            let action = &rule.actions[0];
            let text = self.action_text(action);
            self.line(4, format!("then {text}"), action.span);
        } else {
            // Comments between the condition and the actions go before the
            // first action, wherever they stood, so formatting is stable.
            self.line(4, "then".into(), Span::new(cond_end, cond_end));
            if let Some(last) = self.lines.last_mut() {
                last.takes_comments = false;
            }
            for action in &rule.actions {
                self.action(6, action);
            }
        }
        if let Some(span) = rule.continues {
            self.line(4, "continue".into(), span);
        }
        self.closing(2, "}", rule.span.end.saturating_sub(1), 4);
    }

    fn action(&mut self, indent: usize, action: &Action) {
        if let ActionKind::Handoff { open, template } = &action.kind {
            self.line(
                indent,
                "handoff whatsapp {".into(),
                Span::new(action.span.start, action.span.start + 16),
            );
            for (word, part) in [("open", open), ("template", template)] {
                if let Some(part) = part {
                    let text = format!("{word} {}", self.text(part.span));
                    self.line(indent + 2, text, part.span);
                }
            }
            self.closing(indent, "}", action.span.end.saturating_sub(1), indent + 2);
        } else {
            let text = self.action_text(action);
            self.line(indent, text, action.span);
        }
    }

    fn action_text(&self, action: &Action) -> String {
        match &action.kind {
            ActionKind::Takeover(s)
            | ActionKind::Assign(s)
            | ActionKind::Tag(s)
            | ActionKind::Notify(s)
            | ActionKind::Drop(s) => format!("{} {}", action.kind.keyword(), self.text(s.span)),
            ActionKind::Ask(AskTarget::Missing) => "ask missing".into(),
            ActionKind::Ask(AskTarget::Field(f)) => format!("ask {}", f.node),
            ActionKind::Handoff { open, template } => {
                let mut parts = Vec::new();
                if let Some(o) = open {
                    parts.push(format!("open {}", self.text(o.span)));
                }
                if let Some(t) = template {
                    parts.push(format!("template {}", self.text(t.span)));
                }
                format!("handoff whatsapp {{ {} }}", parts.join(" "))
            }
        }
    }

    /// A condition on one line. `outer` is the binding strength of the
    /// context: 0 top, 1 inside `or`, 2 inside `and`, 3 under `not`.
    fn condition(&self, c: &Condition, outer: u8) -> String {
        let (text, strength) = match c {
            Condition::Or(parts) => (
                parts
                    .iter()
                    .map(|p| self.condition(p, 1))
                    .collect::<Vec<_>>()
                    .join(" or "),
                1,
            ),
            Condition::And(parts) => (
                parts
                    .iter()
                    .map(|p| self.condition(p, 2))
                    .collect::<Vec<_>>()
                    .join(" and "),
                2,
            ),
            Condition::Not(inner, _) => (format!("not {}", self.condition(inner, 3)), 3),
            Condition::Test(t) => (self.test(t), 4),
        };
        // Same-operator nesting keeps its parentheses, so `(a and b) and c`
        // parses back to the same tree.
        if strength < outer || (strength == outer && strength < 3) {
            format!("({text})")
        } else {
            text
        }
    }

    fn test(&self, t: &Test) -> String {
        let path = &t.path.node;
        let lit = |l: &Literal| self.text(l.span).to_string();
        let list = |items: &[Literal]| {
            format!("[{}]", items.iter().map(lit).collect::<Vec<_>>().join(", "))
        };
        match &t.op {
            TestOp::Truthy => path.clone(),
            TestOp::Compare(op, l) => format!("{path} {} {}", op.as_str(), lit(l)),
            TestOp::In(items) => format!("{path} in {}", list(items)),
            TestOp::NotIn(items) => format!("{path} not in {}", list(items)),
            TestOp::Contains(l) => format!("{path} contains {}", lit(l)),
            TestOp::Matches(l) => format!("{path} matches {}", lit(l)),
            TestOp::IsSet => format!("{path} is set"),
            TestOp::IsNotSet => format!("{path} is not set"),
            TestOp::Within {
                direction,
                amount,
                unit,
            } => {
                let dir = match direction {
                    Direction::Next => "next",
                    Direction::Last => "last",
                };
                let unit = if amount.node == 1 {
                    unit.as_str().trim_end_matches('s')
                } else {
                    unit.as_str()
                };
                format!("{path} within {dir} {} {unit}", self.text(amount.span))
            }
        }
    }
}

/// Every comment in the source, outside strings.
fn comments(source: &str) -> Vec<Comment> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut line_has_code = false;
    let mut iter = source.char_indices();
    while let Some((i, c)) = iter.next() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                '\n' => {
                    in_string = false;
                    line_has_code = false;
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                line_has_code = true;
            }
            '#' => {
                let end = source[i..]
                    .find('\n')
                    .map(|n| i + n)
                    .unwrap_or(source.len());
                out.push(Comment {
                    start: i,
                    text: source[i..end].trim_end().to_string(),
                    trailing: line_has_code,
                });
                // Skip to the end of the line.
                for (j, _) in iter.by_ref() {
                    if j + 1 >= end {
                        break;
                    }
                }
                line_has_code = false;
            }
            '\n' => line_has_code = false,
            c if !c.is_whitespace() => line_has_code = true,
            _ => {}
        }
    }
    out
}

fn line_number(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count()
}

fn place_comments(mut lines: Vec<Line>, comments: Vec<Comment>, source: &str) -> String {
    let mut before: Vec<Vec<String>> = (0..=lines.len()).map(|_| Vec::new()).collect();
    let mut trailing: Vec<Option<String>> = (0..lines.len()).map(|_| None).collect();
    for comment in comments {
        if comment.trailing {
            // The last printed construct that ends on the comment's line.
            let line = line_number(source, comment.start);
            let found = lines.iter().enumerate().rev().find(|(_, l)| {
                l.anchor.is_some()
                    && l.end <= comment.start
                    && line_number(source, l.end.saturating_sub(1).max(l.anchor.unwrap_or(0)))
                        == line
            });
            if let Some((i, _)) = found {
                match &mut trailing[i] {
                    Some(existing) => {
                        existing.push(' ');
                        existing.push_str(&comment.text);
                    }
                    slot => *slot = Some(comment.text),
                }
                continue;
            }
        }
        let at = lines
            .iter()
            .position(|l| l.takes_comments && l.anchor.is_some_and(|a| a >= comment.start))
            .unwrap_or(lines.len());
        before[at].push(comment.text);
    }
    let mut out = String::new();
    for (i, line) in lines.iter_mut().enumerate() {
        for c in &before[i] {
            out.push_str(&" ".repeat(line.comment_indent));
            out.push_str(c);
            out.push('\n');
        }
        if line.anchor.is_none() {
            // Never two blank lines in a row, nor a blank line right after comments.
            if !out.ends_with("\n\n") && !out.is_empty() {
                out.push('\n');
            }
            continue;
        }
        out.push_str(&" ".repeat(line.indent));
        out.push_str(&line.text);
        if let Some(t) = &trailing[i] {
            out.push_str("  ");
            out.push_str(t);
        }
        out.push('\n');
    }
    for c in &before[lines.len()] {
        out.push_str(c);
        out.push('\n');
    }
    out
}

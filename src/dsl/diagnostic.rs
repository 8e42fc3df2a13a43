//! Diagnostics: what went wrong, where, and what to do, rendered for a person
//! (source line with the span underlined) or as JSON for tools.

use super::codes::Code;
use super::span::{LineCol, Span};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding of the parser or the checker.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub code: Code,
    pub message: String,
    /// The file as the user named it (a path, displayed as given).
    pub file: String,
    pub span: Option<Span>,
    /// A short note under the underline.
    pub label: Option<String>,
    /// Advice, printed as `= help: ...`.
    pub help: Option<String>,
    /// Other places that matter, such as the earlier rule that shadows this one.
    pub related: Vec<Related>,
}

/// A second place a diagnostic points at.
#[derive(Clone, Debug, PartialEq)]
pub struct Related {
    pub file: String,
    pub span: Span,
    pub label: String,
}

impl Diagnostic {
    /// A diagnostic with `code` and `message` at `span` of `file`.
    pub fn new(code: Code, message: impl Into<String>, file: &str, span: Option<Span>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            file: file.to_string(),
            span,
            label: None,
            help: None,
            related: Vec::new(),
        }
    }

    /// Adds the note printed under the underline.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds advice.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds advice when there is some.
    pub fn maybe_help(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }

    /// Points at a second place.
    pub fn related(mut self, file: &str, span: Span, label: impl Into<String>) -> Self {
        self.related.push(Related {
            file: file.to_string(),
            span,
            label: label.into(),
        });
        self
    }

    /// Error or warning, from the code.
    pub fn severity(&self) -> Severity {
        if self.code.is_warning() {
            Severity::Warning
        } else {
            Severity::Error
        }
    }

    /// Whether this diagnostic rejects the file.
    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }
}

/// The text of every file diagnostics may point into, by the name they use.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    files: BTreeMap<String, String>,
    /// The byte offset where each line of each file starts: a report with
    /// thousands of diagnostics finds each one's line without rescanning the
    /// file from the top.
    line_starts: BTreeMap<String, Vec<usize>>,
}

impl Sources {
    /// Remembers the text of `file`.
    pub fn add(&mut self, file: &str, text: &str) {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        self.line_starts.insert(file.to_string(), starts);
        self.files.insert(file.to_string(), text.to_string());
    }

    /// The line and column of `offset` in `file`, as [`line_col`] gives them.
    fn line_col(&self, file: &str, offset: usize) -> Option<LineCol> {
        let source = self.get(file)?;
        let starts = self.line_starts.get(file)?;
        let offset = crate::dsl::span::floor_char_boundary(source, offset.min(source.len()));
        let line = starts.partition_point(|&s| s <= offset).max(1);
        let before = &source[starts[line - 1]..offset];
        // Most lines are ASCII, where a column is a byte count.
        let col = if before.is_ascii() {
            before.len()
        } else {
            before.chars().count()
        };
        Some(LineCol { line, col: col + 1 })
    }

    /// The text of `file`, if known.
    pub fn get(&self, file: &str) -> Option<&str> {
        self.files.get(file).map(String::as_str)
    }
}

/// Sorts diagnostics by file, then position, then code, so output is stable.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.span.map(|s| s.start), a.code).cmp(&(&b.file, b.span.map(|s| s.start), b.code))
    });
}

/// Renders a diagnostic for a terminal, rustc style:
///
/// ```text
/// error[E002]: unknown field `cty`
///   --> rules/events.rules:12:10
///    |
/// 12 |      and cty in ["Goa", "Mumbai"]
///    |          ^^^ not a field of playbook `events`
///    |
///    = help: did you mean `city`?
/// ```
pub fn render(diagnostic: &Diagnostic, sources: &Sources) -> String {
    let mut out = String::new();
    let kind = match diagnostic.severity() {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let _ = writeln!(
        out,
        "{kind}[{}]: {}",
        diagnostic.code.as_str(),
        clip(&diagnostic.message, MAX_MESSAGE_CHARS)
    );
    let main = snippet(
        &diagnostic.file,
        sources,
        diagnostic.span,
        diagnostic.label.as_deref(),
    );
    let mut snippets = vec![main];
    for related in &diagnostic.related {
        snippets.push(snippet(
            &related.file,
            sources,
            Some(related.span),
            Some(&related.label),
        ));
    }
    let gutter = snippets.iter().map(|s| s.gutter).max().unwrap_or(1);
    let pad = " ".repeat(gutter);
    for (i, s) in snippets.iter().enumerate() {
        if i > 0 {
            let _ = writeln!(out, "{pad} ...");
        }
        let _ = writeln!(out, "{pad}--> {}", s.location);
        for line in &s.lines {
            match line {
                SnippetLine::Blank => {
                    let _ = writeln!(out, "{pad} |");
                }
                SnippetLine::Source(n, text) => {
                    let _ = writeln!(out, "{n:>gutter$} | {text}");
                }
                SnippetLine::Marks(marks) => {
                    let _ = writeln!(out, "{pad} | {marks}");
                }
            }
        }
    }
    if let Some(help) = &diagnostic.help {
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{pad} = help: {}", clip(help, MAX_MESSAGE_CHARS));
    }
    out
}

/// The most characters of a message, label or help line printed: they
/// quote names and values from the file, which may be any length.
const MAX_MESSAGE_CHARS: usize = 400;

/// The most characters of a source line printed. A longer line is shown as a
/// window around the span, so a report on a file with one very long line
/// does not quote that line once per diagnostic.
const MAX_SNIPPET_CHARS: usize = 120;

/// How many characters of the line the window keeps before the span.
const SNIPPET_LEAD: usize = 40;

/// `text`, cut to `max` characters with `...` when longer.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]).into(),
        None => text.into(),
    }
}

enum SnippetLine {
    Blank,
    Source(usize, String),
    Marks(String),
}

struct Snippet {
    location: String,
    gutter: usize,
    lines: Vec<SnippetLine>,
}

fn snippet(file: &str, sources: &Sources, span: Option<Span>, label: Option<&str>) -> Snippet {
    let (Some(source), Some(span)) = (sources.get(file), span) else {
        return Snippet {
            location: file.to_string(),
            gutter: 1,
            lines: label
                .map(|l| vec![SnippetLine::Blank, SnippetLine::Marks(format!("= {l}"))])
                .unwrap_or_default(),
        };
    };
    // A span from elsewhere (a template engine's byte offsets) may end or
    // start inside a character: widen it to whole characters.
    let span = {
        let start = crate::dsl::span::floor_char_boundary(source, span.start);
        let mut end = span.end.min(source.len()).max(start);
        while !source.is_char_boundary(end) {
            end += 1;
        }
        Span::new(start, end)
    };
    let start = sources
        .line_col(file, span.start)
        .unwrap_or(LineCol { line: 1, col: 1 });
    let line_start = source[..span.start.min(source.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    let line_end = source[line_start..]
        .find('\n')
        .map(|i| line_start + i)
        .unwrap_or(source.len());
    let line_text = source[line_start..line_end].trim_end_matches('\r');
    // The underline stops at the end of the first line of a multi-line span.
    let end = span.end.min(line_end).max(span.start);
    let (display_line, before, width) = if line_text.chars().nth(MAX_SNIPPET_CHARS).is_none() {
        let before: String = source[line_start..span.start.min(line_end)]
            .chars()
            .map(|c| if c == '\t' { "    " } else { " " })
            .collect();
        let width = source[span.start.min(line_end)..end].chars().count().max(1);
        (line_text.replace('\t', "    "), before, width)
    } else {
        window(
            line_text,
            span.start.min(line_end) - line_start,
            end - line_start,
        )
    };
    let mut marks = format!("{before}{}", "^".repeat(width));
    if let Some(label) = label {
        marks.push(' ');
        marks.push_str(&clip(label, MAX_MESSAGE_CHARS));
    }
    let gutter = start.line.to_string().len();
    Snippet {
        location: format!("{file}:{}:{}", start.line, start.col),
        gutter,
        lines: vec![
            SnippetLine::Blank,
            SnippetLine::Source(start.line, display_line),
            SnippetLine::Marks(marks),
        ],
    }
}

/// A long line cut to [`MAX_SNIPPET_CHARS`] around the span from byte `start`
/// to `end` of it: the text shown, the spaces before the underline, and the
/// underline's width. Tabs show as one space here, to keep columns simple.
fn window(line: &str, start: usize, end: usize) -> (String, String, usize) {
    let (start, end) = (start.min(line.len()), end.min(line.len()));
    // The window opens up to SNIPPET_LEAD characters before the span,
    // found walking back from the span, not counting from the line's start.
    let (from, lead) = line[..start]
        .char_indices()
        .rev()
        .take(SNIPPET_LEAD)
        .last()
        .map(|(i, _)| (i, line[i..start].chars().count()))
        .unwrap_or((start, 0));
    let mut shown = String::new();
    if from > 0 {
        shown.push_str("...");
    }
    let mut rest = line[from..].chars();
    for c in rest.by_ref().take(MAX_SNIPPET_CHARS) {
        shown.push(if c == '\t' { ' ' } else { c });
    }
    if rest.next().is_some() {
        shown.push_str("...");
    }
    let offset = lead + if from > 0 { 3 } else { 0 };
    let span_chars = line[start..end].chars().take(MAX_SNIPPET_CHARS).count();
    let width = span_chars
        .min(MAX_SNIPPET_CHARS.saturating_sub(lead))
        .max(1);
    (shown, " ".repeat(offset), width)
}

/// A finding of the rules checker, as JSON for editors and scripts.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Diagnostic)]
pub struct JsonDiagnostic<'a> {
    pub severity: Severity,
    /// Such as `E002`.
    pub code: &'static str,
    pub message: &'a str,
    pub file: &'a str,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub end_line: Option<usize>,
    pub end_column: Option<usize>,
    pub label: Option<&'a str>,
    pub help: Option<&'a str>,
    /// The diagnostic as `handoff check` prints it.
    pub rendered: String,
}

/// Converts a diagnostic for JSON output.
pub fn to_json<'a>(diagnostic: &'a Diagnostic, sources: &Sources) -> JsonDiagnostic<'a> {
    let positions = diagnostic.span.and_then(|span| {
        Some((
            sources.line_col(&diagnostic.file, span.start)?,
            sources.line_col(&diagnostic.file, span.end)?,
        ))
    });
    JsonDiagnostic {
        severity: diagnostic.severity(),
        code: diagnostic.code.as_str(),
        message: &diagnostic.message,
        file: &diagnostic.file,
        line: positions.map(|p| p.0.line),
        column: positions.map(|p| p.0.col),
        end_line: positions.map(|p| p.1.line),
        end_column: positions.map(|p| p.1.col),
        label: diagnostic.label.as_deref(),
        help: diagnostic.help.as_deref(),
        rendered: render(diagnostic, sources),
    }
}

/// The longest name, in bytes, for which a suggestion is searched.
pub const MAX_SUGGESTION_LEN: usize = 64;

/// The closest of `candidates` to `name`, if it is close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Typos are short; a long name is compared with nothing, so a pasted
    // paragraph costs no quadratic distance against every candidate.
    if name.len() > MAX_SUGGESTION_LEN {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        if candidate.len() > MAX_SUGGESTION_LEN {
            continue;
        }
        let distance = edit_distance(name, candidate);
        let limit = (name.chars().count().max(candidate.chars().count()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_finds_typos_and_ignores_strangers() {
        let names = ["city", "event_date", "guests"];
        assert_eq!(closest("cty", names), Some("city"));
        assert_eq!(closest("guest", names), Some("guests"));
        assert_eq!(closest("budget", names), None);
    }

    #[test]
    fn a_long_line_is_shown_as_a_window_around_the_span() {
        let mut sources = Sources::default();
        let text = format!("{}bad{}\n", "a".repeat(100_000), "b".repeat(100_000));
        sources.add("x.rules", &text);
        let d = Diagnostic::new(
            Code::E002UnknownPath,
            "x",
            "x.rules",
            Some(Span::new(100_000, 100_003)),
        );
        let out = render(&d, &sources);
        assert!(out.len() < 600, "{out}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[1], " --> x.rules:1:100001");
        let shown = lines[3].strip_prefix("1 | ").unwrap();
        let marks = lines[4].strip_prefix("  | ").unwrap();
        let at = marks.find('^').unwrap();
        assert_eq!(&shown[at..at + 3], "bad");
        assert_eq!(marks.trim(), "^^^");
        assert!(
            shown.starts_with("...a") && shown.ends_with("b..."),
            "{shown}"
        );
    }

    #[test]
    fn line_and_column_come_from_the_index_as_line_col_gives_them() {
        let mut sources = Sources::default();
        let text = "ab\né€x\n\nz";
        sources.add("f", text);
        for offset in 0..=text.len() {
            let offset = crate::dsl::span::floor_char_boundary(text, offset);
            assert_eq!(
                sources.line_col("f", offset),
                Some(crate::dsl::span::line_col(text, offset)),
                "at {offset}"
            );
        }
    }

    #[test]
    fn long_names_get_no_suggestion_search() {
        let long = "c".repeat(65);
        assert_eq!(closest(&long, [long.as_str()]), None);
        assert_eq!(clip("abcdef", 3), "abc...");
        assert_eq!(clip("abc", 3), "abc");
    }

    #[test]
    fn render_underlines_the_span() {
        let mut sources = Sources::default();
        let text = "playbook x {\n  field cty: text\n}\n";
        sources.add("x.rules", text);
        let at = text.find("cty").unwrap();
        let d = Diagnostic::new(
            Code::E002UnknownPath,
            "unknown field `cty`",
            "x.rules",
            Some(Span::new(at, at + 3)),
        )
        .label("here")
        .help("did you mean `city`?");
        let out = render(&d, &sources);
        assert_eq!(
            out,
            "error[E002]: unknown field `cty`\n --> x.rules:2:9\n  |\n2 |   field cty: text\n  |         ^^^ here\n  |\n  = help: did you mean `city`?\n"
        );
    }
}

//! Templates: the minijinja environment over `templates/` (strict undefined
//! behaviour, the `date` filter) and the approved WhatsApp templates of
//! `templates/whatsapp.yaml`, with their previews.
//!
//! Lead data only ever reaches a template as a value in its context, never as
//! template source, so a lead named `{{ 7*7 }}` is greeted as `{{ 7*7 }}`.

use crate::dsl::check::{DateFormatUse, TemplateCatalog, VariableUse};
use crate::dsl::codes::Code;
use crate::dsl::diagnostic::{Diagnostic, Sources};
use crate::dsl::span::{offset_of, Span};
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The approved-templates file inside the templates directory.
pub const APPROVED_FILE: &str = "whatsapp.yaml";

/// Meta's template categories.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Marketing,
    Utility,
    Authentication,
}

/// A template Meta approved: its body with `{{1}}`.. placeholders and the
/// expressions that fill them.
#[derive(Clone, Debug)]
pub struct ApprovedTemplate {
    pub name: String,
    pub language: String,
    pub category: Category,
    pub body: String,
    pub params: Vec<String>,
    param_spans: Vec<Option<Span>>,
    /// The environment's name for each param's template, made once.
    param_templates: Vec<String>,
}

/// A rendered approved template: parameters in order, and the preview.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct RenderedTemplate {
    pub name: String,
    pub language: String,
    pub params: Vec<String>,
    pub preview: String,
}

/// Every template of a templates directory, compiled.
pub struct Templates {
    env: Environment<'static>,
    /// Template name (`events/options`) -> the file as named in diagnostics.
    files: BTreeMap<String, String>,
    sources: BTreeMap<String, String>,
    approved: BTreeMap<String, ApprovedTemplate>,
    /// Approved templates that exist but failed their own checks; rules may
    /// name them without a second error.
    invalid_approved: std::collections::BTreeSet<String>,
    approved_file: String,
    /// The text of `whatsapp.yaml`, to point into it.
    approved_source: String,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .field("approved", &self.approved.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The largest template file read, in bytes (a WhatsApp message is at most
/// 4,096 characters; the bundled templates are under 1 KB).
pub const MAX_TEMPLATE_BYTES: usize = 256 * 1024;

/// The largest `whatsapp.yaml` read, in bytes.
pub const MAX_APPROVED_FILE_BYTES: usize = 1024 * 1024;

/// How many instructions one render may run. A template loops over a
/// transcript or a form's answers, a few hundred steps; a runaway loop stops
/// here with an error in the decision instead of holding a worker forever.
pub const TEMPLATE_FUEL: u64 = 100_000;

/// The most text one render may produce, in bytes: sixteen times the longest
/// WhatsApp message, so no render can fill memory.
pub const MAX_RENDER_BYTES: usize = 64 * 1024;

/// How deep a render may recurse (macros, includes, nested blocks), below
/// minijinja's own 500 so that a render on a small worker stack is safe too.
pub const TEMPLATE_RECURSION_LIMIT: usize = 100;

/// The most items a filter may walk or a value printed may hold. Lists in a
/// template are a lead's transcript or answers; `[1] * 1000000000` is not
/// built until something walks it, and nothing walks it this far.
pub const MAX_TEMPLATE_ITEMS: usize = 10_000;

/// A fresh environment with the settings every template gets.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_RECURSION_LIMIT);
    guard_builtin_filters(&mut env);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_keep_trailing_newline(false);
    env.add_filter("date", date_filter);
    // A message must never read "Hi none": printing a value that is not set
    // fails the render, so nothing half-filled reaches a buyer.
    env.set_formatter(|out, state, value| {
        if value.is_none() || value.is_undefined() {
            return Err(minijinja::Error::new(
                ErrorKind::InvalidOperation,
                "a value printed here is not set; guard it with `{% if ... %}` or give a default, as in `{{ lead.first_name or \"there\" }}`",
            ));
        }
        within_items(value)?;
        minijinja::escape_formatter(out, state, value)
    });
    env
}

/// An error unless `value` holds at most [`MAX_TEMPLATE_ITEMS`] items. The
/// length of a list, even a repeated one, is known without walking it.
fn within_items(value: &Value) -> Result<(), minijinja::Error> {
    if value.as_str().is_none() && value.len().is_some_and(|n| n > MAX_TEMPLATE_ITEMS) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("a list of more than {MAX_TEMPLATE_ITEMS} items is too long for a template"),
        ));
    }
    Ok(())
}

/// The built-in filters that walk a whole list, each first checking its
/// length: minijinja's fuel counts template instructions, not the items a
/// filter walks inside one instruction.
fn guard_builtin_filters(env: &mut Environment<'static>) {
    use minijinja::filters as f;
    use minijinja::value::{Kwargs, Rest, StringInput};
    use minijinja::State;
    type R = Result<Value, minijinja::Error>;
    type Items = Result<Vec<Value>, minijinja::Error>;
    env.add_filter("list", |s: &State, v: Value| -> R {
        within_items(&v)?;
        f::list(s, v)
    });
    fn join(s: &State, v: Value, j: Option<StringInput<'_>>) -> Result<Value, minijinja::Error> {
        within_items(&v)?;
        f::join(s, &v, j)
    }
    env.add_filter("join", join);
    env.add_filter("sum", |s: &State, v: Value| -> R {
        within_items(&v)?;
        f::sum(s, v)
    });
    env.add_filter("sort", |s: &State, v: Value, k: Kwargs| -> R {
        within_items(&v)?;
        f::sort(s, v, k)
    });
    env.add_filter("reverse", |v: Value| -> R {
        within_items(&v)?;
        f::reverse(&v)
    });
    env.add_filter("unique", |s: &State, v: Value, k: Kwargs| -> R {
        within_items(&v)?;
        f::unique(s, v, k)
    });
    env.add_filter("min", |s: &State, v: Value| -> R {
        within_items(&v)?;
        f::min(s, v)
    });
    env.add_filter("max", |s: &State, v: Value| -> R {
        within_items(&v)?;
        f::max(s, v)
    });
    env.add_filter("last", |v: Value| -> R {
        within_items(&v)?;
        f::last(v)
    });
    env.add_filter("string", |s: &State, v: Value| -> R {
        within_items(&v)?;
        f::string(s, &v)
    });
    env.add_filter("items", |v: Value| -> R {
        within_items(&v)?;
        f::items(&v)
    });
    env.add_filter("dictsort", |v: Value, k: Kwargs| -> R {
        within_items(&v)?;
        f::dictsort(&v, k)
    });
    env.add_filter("groupby", |v: Value, a: Option<String>, k: Kwargs| -> R {
        within_items(&v)?;
        f::groupby(v, a.as_deref(), k)
    });
    env.add_filter(
        "batch",
        |s: &State, v: Value, n: usize, fill: Option<Value>| -> R {
            within_items(&v)?;
            f::batch(s, v, n, fill)
        },
    );
    env.add_filter(
        "slice",
        |s: &State, v: Value, n: usize, fill: Option<Value>| -> R {
            within_items(&v)?;
            f::slice(s, v, n, fill)
        },
    );
    env.add_filter("map", |s: &State, v: Value, args: Rest<Value>| -> Items {
        within_items(&v)?;
        f::map(s, v, args)
    });
    env.add_filter(
        "select",
        |s: &State, v: Value, t: Option<String>, args: Rest<Value>| -> Items {
            within_items(&v)?;
            f::select(s, v, t.map(Into::into), args)
        },
    );
    env.add_filter(
        "reject",
        |s: &State, v: Value, t: Option<String>, args: Rest<Value>| -> Items {
            within_items(&v)?;
            f::reject(s, v, t.map(Into::into), args)
        },
    );
    env.add_filter(
        "selectattr",
        |s: &State, v: Value, a: String, t: Option<String>, args: Rest<Value>| -> Items {
            within_items(&v)?;
            f::selectattr(s, v, a.into(), t.map(Into::into), args)
        },
    );
    env.add_filter(
        "rejectattr",
        |s: &State, v: Value, a: String, t: Option<String>, args: Rest<Value>| -> Items {
            within_items(&v)?;
            f::rejectattr(s, v, a.into(), t.map(Into::into), args)
        },
    );
}

/// The most operators, filters, calls, subscripts and attribute steps one
/// `{{ ... }}` or `{% ... %}` tag may hold. minijinja builds a chain such as
/// `x | list | list ...` into a nested tree and compiles it recursively: ten
/// thousand links overflow the stack before any limit of its own applies.
/// A real tag has a handful.
pub const MAX_TEMPLATE_TAG_OPERATORS: usize = 200;

/// The longest line of a template, in bytes. minijinja counts columns in 16
/// bits, and a syntax error past column 65,535 overflows that count; no
/// message template has a line a fraction as long.
pub const MAX_TEMPLATE_LINE_BYTES: usize = u16::MAX as usize;

/// The diagnostic for the first line of `text` (at `base` in `file`) longer
/// than [`MAX_TEMPLATE_LINE_BYTES`].
fn too_long_line(text: &str, file: &str, base: usize) -> Option<Diagnostic> {
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        if line.len() > MAX_TEMPLATE_LINE_BYTES {
            return Some(
                Diagnostic::new(
                    Code::E035FileTooLarge,
                    format!(
                        "template line is {} bytes, more than the {MAX_TEMPLATE_LINE_BYTES} handoff reads",
                        line.len()
                    ),
                    file,
                    Some(Span::new(base + start, base + start)),
                )
                .help("break the line; a template's text may span many lines"),
            );
        }
        start += line.len();
    }
    None
}

/// The diagnostic for the first tag of `text` (at `base` in `file`) with
/// more than [`MAX_TEMPLATE_TAG_OPERATORS`]: a lexical pass, so it is safe
/// on any input; quoted strings are skipped.
fn too_complex(text: &str, file: &str, base: usize) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        let opens_tag = bytes[i] == b'{' && (bytes[i + 1] == b'{' || bytes[i + 1] == b'%');
        if !opens_tag {
            i += 1;
            continue;
        }
        let start = i;
        i += 2;
        let mut operators = 0usize;
        while i < bytes.len() {
            match bytes[i] {
                b'}' | b'%' if bytes.get(i + 1) == Some(&b'}') => {
                    i += 2;
                    break;
                }
                quote @ (b'"' | b'\'') => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote {
                        i += if bytes[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                b'|' | b'.' | b'(' | b'[' | b'{' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~'
                | b'<' | b'>' | b'=' | b'!' => {
                    operators += 1;
                    i += 1;
                }
                c if c.is_ascii_alphabetic() => {
                    let word = i;
                    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_')
                    {
                        i += 1;
                    }
                    if matches!(
                        &bytes[word..i],
                        b"and" | b"or" | b"not" | b"is" | b"in" | b"if"
                    ) {
                        operators += 1;
                    }
                }
                _ => i += 1,
            }
            if operators > MAX_TEMPLATE_TAG_OPERATORS {
                let end = i.min(text.len());
                let end = (end..=text.len())
                    .find(|e| text.is_char_boundary(*e))
                    .unwrap_or(text.len());
                return Some(
                    Diagnostic::new(
                        Code::E039TemplateTooComplex,
                        format!(
                            "template tag has more than {MAX_TEMPLATE_TAG_OPERATORS} operators and filters"
                        ),
                        file,
                        Some(Span::new(base + start, base + end)),
                    )
                    .label("this tag")
                    .help("split the expression with `{% set ... %}`, or compute the value before it reaches the template"),
                );
            }
        }
    }
    None
}

/// A sink for rendered text that refuses to grow past [`MAX_RENDER_BYTES`].
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_RENDER_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("render output too large"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `template` within the output budget; on failure, what went wrong
/// in words.
fn render_bounded(
    template: &minijinja::Template<'_, '_>,
    context: &Value,
) -> Result<String, String> {
    let mut out = Bounded::default();
    match template.render_captured_to(context, &mut out) {
        Ok(_) => Ok(String::from_utf8(out.bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
        Err(_) if out.overflowed => Err(format!(
            "the rendered text is longer than {MAX_RENDER_BYTES} bytes"
        )),
        Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(format!(
            "the template ran more than {TEMPLATE_FUEL} steps; a loop runs too long"
        )),
        Err(e) => Err(describe(&e)),
    }
}

impl Templates {
    /// No templates at all (for playbooks that hand nothing off).
    pub fn empty() -> Templates {
        Templates {
            env: environment(),
            files: BTreeMap::new(),
            sources: BTreeMap::new(),
            approved: BTreeMap::new(),
            invalid_approved: Default::default(),
            approved_file: APPROVED_FILE.to_string(),
            approved_source: String::new(),
        }
    }

    /// Loads and compiles every `*.j2` under `dir` and `dir/whatsapp.yaml`.
    /// `display` is how `dir` is named in diagnostics. A missing directory is
    /// no error: the playbooks' references to templates will be.
    pub fn load(dir: &Path, display: &str, sources: &mut Sources) -> (Templates, Vec<Diagnostic>) {
        let mut templates = Templates::empty();
        let mut diagnostics = Vec::new();
        let display = display.trim_end_matches('/');
        let mut paths = Vec::new();
        collect_j2(dir, dir, &mut paths);
        paths.sort();
        for (name, path) in paths {
            let shown = format!("{display}/{name}.j2");
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    diagnostics.push(Diagnostic::new(
                        Code::E025Io,
                        format!("cannot read template: {e}"),
                        &shown,
                        None,
                    ));
                    continue;
                }
            };
            if text.len() > MAX_TEMPLATE_BYTES {
                diagnostics.push(too_large(
                    &shown,
                    "template",
                    text.len(),
                    MAX_TEMPLATE_BYTES,
                ));
                continue;
            }
            sources.add(&shown, &text);
            if let Some(d) = too_long_line(&text, &shown, 0) {
                diagnostics.push(d);
                continue;
            }
            if let Some(d) = too_complex(&text, &shown, 0) {
                diagnostics.push(d);
                continue;
            }
            if let Err(e) = templates.env.add_template_owned(name.clone(), text.clone()) {
                diagnostics.push(template_error(&e, &shown, &text, 0));
                continue;
            }
            templates.files.insert(name.clone(), shown);
            templates.sources.insert(name, text);
        }
        let approved_path = dir.join(APPROVED_FILE);
        templates.approved_file = format!("{display}/{APPROVED_FILE}");
        if approved_path.exists() {
            match std::fs::read_to_string(&approved_path) {
                Ok(text) if text.len() > MAX_APPROVED_FILE_BYTES => diagnostics.push(too_large(
                    &templates.approved_file,
                    "approved templates file",
                    text.len(),
                    MAX_APPROVED_FILE_BYTES,
                )),
                Ok(text) => {
                    sources.add(&templates.approved_file, &text);
                    templates.load_approved(&text, &mut diagnostics);
                }
                Err(e) => diagnostics.push(Diagnostic::new(
                    Code::E025Io,
                    format!("cannot read approved templates: {e}"),
                    &templates.approved_file,
                    None,
                )),
            }
        }
        (templates, diagnostics)
    }

    fn load_approved(&mut self, text: &str, diagnostics: &mut Vec<Diagnostic>) {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            language: String,
            category: Category,
            body: serde_saphyr::Spanned<String>,
            #[serde(default)]
            params: Vec<serde_saphyr::Spanned<String>>,
        }
        let file = self.approved_file.clone();
        self.approved_source = text.to_string();
        let raw: BTreeMap<String, serde_saphyr::Spanned<Raw>> = if text.trim().is_empty() {
            BTreeMap::new()
        } else {
            match read_yaml(text) {
                Ok(r) => r,
                Err(e) if is_yaml_limit(&e) => {
                    diagnostics.push(yaml_limit_diagnostic(&e, &file, text));
                    return;
                }
                Err(e) => {
                    let span = e.location().map(|l| location_span(text, &l));
                    diagnostics.push(
                        Diagnostic::new(
                            Code::E023ApprovedTemplatesFile,
                            format!("`{APPROVED_FILE}` cannot be read: {}", yaml_message(&e)),
                            &file,
                            span,
                        )
                        .help("each entry is `name:` with `language`, `category` (marketing, utility or authentication), `body` and `params`"),
                    );
                    return;
                }
            }
        };
        for (name, entry) in raw {
            let entry_span = location_span(text, &entry.referenced);
            let raw = entry.value;
            let body_span = location_span(text, &raw.body.referenced);
            let placeholders = placeholders(&raw.body.value);
            let expected = placeholders.iter().copied().max().unwrap_or(0);
            let mut ok = true;
            if (1..=expected).any(|n| !placeholders.contains(&n)) {
                ok = false;
                diagnostics.push(
                    Diagnostic::new(
                        Code::E015ParamsCount,
                        format!(
                            "approved template `{name}` skips a placeholder number in its body"
                        ),
                        &file,
                        Some(body_span),
                    )
                    .help(
                        "number placeholders `{{1}}`, `{{2}}`, ... without gaps, as Meta requires",
                    ),
                );
            } else if raw.params.len() != expected {
                ok = false;
                let at = raw
                    .params
                    .first()
                    .map(|p| location_span(text, &p.referenced))
                    .unwrap_or(entry_span);
                diagnostics.push(
                    Diagnostic::new(
                        Code::E015ParamsCount,
                        format!(
                            "approved template `{name}` has {} params, but its body has {expected} placeholders",
                            raw.params.len()
                        ),
                        &file,
                        Some(at),
                    )
                    .label(format!("{} given", raw.params.len()))
                    .help(format!("give one param per placeholder, `{{{{1}}}}` to `{{{{{expected}}}}}`, in order")),
                );
            }
            let mut param_spans = Vec::new();
            let mut param_templates = Vec::new();
            for (i, param) in raw.params.iter().enumerate() {
                let span = location_span(text, &param.referenced);
                param_spans.push(Some(span));
                let key = param_template_name(&name, i);
                param_templates.push(key.clone());
                let quoted = text
                    .get(span.start..)
                    .is_some_and(|t| t.starts_with(['"', '\'']));
                let at = span.start + usize::from(quoted);
                if let Some(d) = too_long_line(&param.value, &file, at)
                    .or_else(|| too_complex(&param.value, &file, at))
                {
                    ok = false;
                    diagnostics.push(d);
                    continue;
                }
                if let Err(e) = self.env.add_template_owned(key, param.value.clone()) {
                    ok = false;
                    diagnostics.push(template_error(&e, &file, text, span.start));
                }
            }
            if !ok {
                self.invalid_approved.insert(name.clone());
            } else {
                self.approved.insert(
                    name.clone(),
                    ApprovedTemplate {
                        name,
                        language: raw.language,
                        category: raw.category,
                        body: raw.body.value,
                        params: raw.params.into_iter().map(|p| p.value).collect(),
                        param_spans,
                        param_templates,
                    },
                );
            }
        }
    }

    /// The names of the approved templates of category `marketing`, sorted.
    pub fn marketing_names(&self) -> Vec<String> {
        self.approved
            .values()
            .filter(|t| t.category == Category::Marketing)
            .map(|t| t.name.clone())
            .collect()
    }

    /// The approved template named `name`.
    pub fn approved(&self, name: &str) -> Option<&ApprovedTemplate> {
        self.approved.get(name)
    }

    /// Renders a template file for a session message.
    pub fn render_file(&self, name: &str, context: &Value) -> Result<String, String> {
        let template = self.env.get_template(name).map_err(|e| describe(&e))?;
        render_bounded(&template, context)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("template `{name}`: {e}"))
    }

    /// Renders an approved template's params and its preview.
    pub fn render_approved(&self, name: &str, context: &Value) -> Result<RenderedTemplate, String> {
        let approved = self
            .approved
            .get(name)
            .ok_or_else(|| format!("no approved template `{name}`"))?;
        let mut params = Vec::with_capacity(approved.params.len());
        for (i, key) in approved.param_templates.iter().enumerate() {
            let template = self.env.get_template(key).map_err(|e| describe(&e))?;
            let value = render_bounded(&template, context)
                .map_err(|e| format!("approved template `{name}`, param {}: {e}", i + 1))?;
            params.push(clean_param(&value));
        }
        let preview = fill_placeholders(&approved.body, &params);
        Ok(RenderedTemplate {
            name: name.to_string(),
            language: approved.language.clone(),
            params,
            preview,
        })
    }
}

fn param_template_name(name: &str, index: usize) -> String {
    format!("{APPROVED_FILE}#{name}/{}", index + 1)
}

/// Meta rejects parameter text with newlines, tabs or runs of more than four
/// spaces; such whitespace is folded to one space.
fn clean_param(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The placeholder numbers `{{n}}` in a body.
pub fn placeholders(body: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                if let Ok(n) = after[..end].trim().parse::<usize>() {
                    found.push(n);
                }
                rest = &after[end + 2..];
            }
            None => break,
        }
    }
    found
}

/// The body with `{{n}}` replaced by the n-th param.
pub fn fill_placeholders(body: &str, params: &[String]) -> String {
    let mut out = String::with_capacity(body.len() + 32);
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                match after[..end].trim().parse::<usize>() {
                    Ok(n) if n >= 1 && n <= params.len() => out.push_str(&params[n - 1]),
                    _ => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn collect_j2(root: &Path, dir: &Path, out: &mut Vec<(String, std::path::PathBuf)>) {
    for path in walk_files(dir) {
        if path.extension().is_some_and(|e| e == "j2") {
            if let Ok(rel) = path.strip_prefix(root) {
                let name = rel
                    .with_extension("")
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((name, path));
            }
        }
    }
}

/// How many directories deep the templates directory is walked.
pub const MAX_TEMPLATE_DIR_DEPTH: usize = 16;

/// Every file under `dir`, in no particular order. Symbolic links are
/// followed, since a templates directory may be assembled from links, but
/// each real directory is entered once: a link back to a parent (a loop)
/// would otherwise be walked forever.
pub fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut entered = std::collections::HashSet::new();
    let mut todo = vec![(dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = todo.pop() {
        let Ok(real) = std::fs::canonicalize(&dir) else {
            continue;
        };
        if depth > MAX_TEMPLATE_DIR_DEPTH || !entered.insert(real) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push((path, depth + 1));
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn location_span(text: &str, location: &serde_saphyr::Location) -> Span {
    let start = match location.span().byte_offset() {
        Some(b) => b as usize,
        None => offset_of(text, location.line() as usize, location.column() as usize),
    };
    let start = start.min(text.len());
    let rest = &text[start..];
    let len = match location.span().byte_len() {
        Some(l) if l > 0 => (l as usize).min(rest.find('\n').unwrap_or(rest.len())),
        _ => rest.find(['\n', ':']).unwrap_or(rest.len()),
    };
    Span::new(start, start + len.max(1).min(rest.len().max(1)))
}

/// The YAML files handoff reads (`whatsapp.yaml`, dry-run test files) are
/// written by hand and small. Their parser's own budget is sized for large
/// configs; these limits are far above any real file and far below what
/// could hold a command for long: aliases are the billion-laughs lever,
/// depth the stack.
pub const YAML_MAX_ALIASES: usize = 1_000;
/// See [`YAML_MAX_ALIASES`].
pub const YAML_MAX_DEPTH: usize = 32;
/// See [`YAML_MAX_ALIASES`]: events read, counting each alias's replay.
pub const YAML_MAX_EVENTS: usize = 200_000;

/// Reads a YAML file of ours under [`YAML_MAX_ALIASES`], [`YAML_MAX_DEPTH`]
/// and [`YAML_MAX_EVENTS`].
pub fn read_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, serde_saphyr::Error> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_aliases: YAML_MAX_ALIASES,
            max_depth: YAML_MAX_DEPTH,
            flow_nesting_limit: YAML_MAX_DEPTH,
            max_events: YAML_MAX_EVENTS,
            max_nodes: YAML_MAX_EVENTS,
            max_recorded_anchor_events: YAML_MAX_EVENTS,
        },
    };
    serde_saphyr::from_str_with_options(text, options)
}

/// Whether a YAML error is one of [`read_yaml`]'s limits, not a mistake in
/// the file's shape.
pub fn is_yaml_limit(error: &serde_saphyr::Error) -> bool {
    let mut error = error;
    loop {
        match error {
            serde_saphyr::Error::WithSnippet { error: inner, .. }
            | serde_saphyr::Error::AliasError { error: inner, .. } => error = inner,
            serde_saphyr::Error::Budget { .. }
            | serde_saphyr::Error::AliasReplayLimitExceeded { .. }
            | serde_saphyr::Error::AliasExpansionLimitExceeded { .. }
            | serde_saphyr::Error::AliasReplayStackDepthExceeded { .. } => return true,
            // The parser reports `[[[...` past its flow nesting limit only
            // as a message of its own.
            other => return other.to_string().contains("recursion limit exceeded"),
        }
    }
}

/// The diagnostic for a YAML file refused by [`read_yaml`]'s limits.
pub fn yaml_limit_diagnostic(error: &serde_saphyr::Error, file: &str, text: &str) -> Diagnostic {
    let span = error.location().map(|l| location_span(text, &l));
    Diagnostic::new(
        Code::E038YamlTooComplex,
        format!("YAML file is too complex to read: {}", yaml_message(error)),
        file,
        span,
    )
    .help(format!(
        "handoff reads YAML with at most {YAML_MAX_ALIASES} aliases, {YAML_MAX_DEPTH} levels of nesting and {YAML_MAX_EVENTS} values; write the values out"
    ))
}

/// The diagnostic for a file larger than handoff reads.
pub fn too_large(file: &str, what: &str, len: usize, max: usize) -> Diagnostic {
    Diagnostic::new(
        Code::E035FileTooLarge,
        format!("{what} is {len} bytes, more than the {max} handoff reads"),
        file,
        None,
    )
    .help("split the file, or look for text pasted into it by mistake")
}

/// A YAML error's message without its location (diagnostics show that).
pub fn yaml_message(error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let mut first = text.lines().next().unwrap_or("").trim();
    first = first.strip_prefix("error:").unwrap_or(first).trim();
    // "line 3 column 13: ..." duplicates what the diagnostic shows.
    if first.starts_with("line ") {
        if let Some(i) = first.find(": ") {
            first = &first[i + 2..];
        }
    }
    // Locations are shown by the diagnostic itself.
    match first.find(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{} ({detail})", error.kind()),
        None => error.kind().to_string(),
    }
}

fn template_error(error: &minijinja::Error, file: &str, text: &str, base: usize) -> Diagnostic {
    let span = error
        .range()
        .map(|r| Span::new(base + r.start, base + r.end))
        .or_else(|| {
            error.line().map(|line| {
                let start = offset_of(&text[base..], line, 1) + base;
                let end = text[start..]
                    .find('\n')
                    .map(|i| start + i)
                    .unwrap_or(text.len());
                Span::new(start, end)
            })
        });
    Diagnostic::new(
        Code::E013TemplateSyntax,
        format!("template does not compile: {}", describe(error)),
        file,
        span,
    )
    .help("templates use minijinja (Jinja2) syntax: `{{ value }}`, `{% if ... %}`")
}

/// `{{ value | date("%B %-d") }}`: formats a date or datetime strftime-style.
fn date_filter(value: Value, format: Option<String>) -> Result<String, minijinja::Error> {
    let format = format.unwrap_or_else(|| "%Y-%m-%d".to_string());
    if StrftimeItems::new(&format).any(|item| matches!(item, Item::Error)) {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("`{format}` is not a valid date format"),
        ));
    }
    let Some(text) = value.as_str() else {
        return Err(minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("`date` formats a date, not {}", value.kind()),
        ));
    };
    // Written through `fmt::Write`: a format asking for what the value does
    // not have (`%H` of a date) is an error chrono reports by failing the
    // write, which `to_string` would turn into a panic.
    let written = |shown: &dyn std::fmt::Display| {
        let mut out = String::new();
        std::fmt::Write::write_fmt(&mut out, format_args!("{shown}")).map_err(|_| {
            minijinja::Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "`{format}` asks for a part `{text}` does not have (a date has no time of day or zone)"
                ),
            )
        })?;
        Ok(out)
    };
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return written(&d.format(&format));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return written(&dt.format(&format));
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        return written(&dt.format(&format));
    }
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("`date` cannot read `{text}` as a date"),
    ))
}

/// Finds where a variable is used in template text, for diagnostics.
fn find_variable(text: &str, path: &str) -> Option<(usize, usize)> {
    let root = path.split('.').next().unwrap_or(path);
    for needle in [path, root] {
        let mut from = 0;
        while let Some(i) = text[from..].find(needle) {
            let at = from + i;
            let before_ok = text[..at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.'));
            let after_ok = text[at + needle.len()..]
                .chars()
                .next()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
            if before_ok && after_ok {
                return Some((at, at + needle.len()));
            }
            from = at + needle.len();
        }
    }
    None
}

/// Every `name | date("format")` in template text: the variable's path, the
/// format, and the byte range of the filter expression. A lexical scan, like
/// [`find_variable`]: enough to point at the mistake, no template executed.
fn find_date_filters(text: &str) -> Vec<(String, String, usize, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("date") {
        let at = from + i;
        from = at + 4;
        let before = text[..at].trim_end();
        let Some(before) = before.strip_suffix('|') else {
            continue;
        };
        let before = before.trim_end();
        let path_start = before
            .char_indices()
            .rev()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '.'))
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let path = &before[path_start..];
        let after = text[at + 4..].trim_start();
        let Some(after) = after.strip_prefix('(') else {
            continue;
        };
        let after = after.trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(close) = after[1..].find(quote) else {
            continue;
        };
        if path.is_empty() {
            continue;
        }
        let format = &after[1..1 + close];
        let quote_end = text.len() - after.len() + close + 2;
        let rest = &text[quote_end..];
        let end = match rest.trim_start().strip_prefix(')') {
            Some(tail) => text.len() - tail.len(),
            None => quote_end,
        };
        found.push((path.to_string(), format.to_string(), path_start, end));
    }
    found
}

impl TemplateCatalog for Templates {
    fn date_formats(&self, name: &str, is_file: bool) -> Vec<DateFormatUse> {
        if is_file {
            let (Some(file), Some(text)) = (self.files.get(name), self.sources.get(name)) else {
                return Vec::new();
            };
            return find_date_filters(text)
                .into_iter()
                .map(|(path, format, start, end)| DateFormatUse {
                    path,
                    format,
                    file: file.clone(),
                    span: Some(Span::new(start, end)),
                })
                .collect();
        }
        let Some(approved) = self.approved.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, param) in approved.params.iter().enumerate() {
            let base = approved.param_spans.get(i).copied().flatten();
            for (path, format, start, end) in find_date_filters(param) {
                // The param sits in the YAML file, after its quote if it has one.
                let span = base.map(|b| {
                    let quoted = self
                        .approved_source
                        .get(b.start..)
                        .is_some_and(|t| t.starts_with(['"', '\'']));
                    let shift = b.start + usize::from(quoted);
                    Span::new(shift + start, shift + end)
                });
                out.push(DateFormatUse {
                    path,
                    format,
                    file: self.approved_file.clone(),
                    span,
                });
            }
        }
        out
    }

    fn has_file(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    fn file_names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    fn has_approved(&self, name: &str) -> bool {
        self.approved.contains_key(name) || self.invalid_approved.contains(name)
    }

    fn approved_names(&self) -> Vec<String> {
        self.approved.keys().cloned().collect()
    }

    fn file_variables(&self, name: &str) -> Vec<VariableUse> {
        let (Ok(template), Some(file), Some(text)) = (
            self.env.get_template(name),
            self.files.get(name),
            self.sources.get(name),
        ) else {
            return Vec::new();
        };
        let mut vars: Vec<String> = template.undeclared_variables(true).into_iter().collect();
        vars.sort();
        vars.into_iter()
            .map(|path| VariableUse {
                span: find_variable(text, &path).map(|(s, e)| Span::new(s, e)),
                path,
                file: file.clone(),
            })
            .collect()
    }

    fn approved_variables(&self, name: &str) -> Vec<VariableUse> {
        let Some(approved) = self.approved.get(name) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, param) in approved.params.iter().enumerate() {
            let Ok(template) = self.env.get_template(&param_template_name(name, i)) else {
                continue;
            };
            let mut vars: Vec<String> = template.undeclared_variables(true).into_iter().collect();
            vars.sort();
            let base = approved.param_spans.get(i).copied().flatten();
            for path in vars {
                // The param sits in the YAML file; point at the variable inside it.
                let span = base.map(|b| match find_variable(param, &path) {
                    Some((s, e)) => {
                        let quoted = usize::from(!param.starts_with("{{"));
                        let shift = b.start + quoted.min(1);
                        Span::new(shift + s, shift + e)
                    }
                    None => b,
                });
                out.push(VariableUse {
                    path,
                    file: self.approved_file.clone(),
                    span,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_fill_in_order() {
        let body = "Hi {{1}}, options for your {{2}} {{3}} event.";
        assert_eq!(placeholders(body), vec![1, 2, 3]);
        let params = [
            "Aisha".to_string(),
            "March 14".to_string(),
            "Goa".to_string(),
        ];
        assert_eq!(
            fill_placeholders(body, &params),
            "Hi Aisha, options for your March 14 Goa event."
        );
    }

    #[test]
    fn date_filter_formats_strftime() {
        let v = date_filter(Value::from("2027-03-14"), Some("%B %-d".into())).unwrap();
        assert_eq!(v, "March 14");
        assert!(date_filter(Value::from("2027-03-14"), Some("%Q".into())).is_err());
        assert!(date_filter(Value::from(()), None).is_err());
    }

    #[test]
    fn a_time_of_day_asked_of_a_date_is_an_error_not_a_panic() {
        let e = date_filter(Value::from("2027-03-14"), Some("%d %B at %H:%M".into())).unwrap_err();
        assert!(e.to_string().contains("does not have"), "{e}");
        // A zone asked of a local datetime, likewise.
        assert!(date_filter(Value::from("2027-03-14T10:00:00"), Some("%z".into())).is_err());
        assert_eq!(
            date_filter(
                Value::from("2027-03-14T10:30:00+05:30"),
                Some("%H:%M".into())
            )
            .unwrap(),
            "10:30"
        );
    }

    #[test]
    fn date_filters_are_found_with_their_variable_and_format() {
        let found = find_date_filters(
            "Hi {{ fields.day|date('%d %B') }} {{ at | date(\"%H:%M\") }} {{ date }} {{ x | date }}",
        );
        let found: Vec<(&str, &str)> = found
            .iter()
            .map(|(p, f, _, _)| (p.as_str(), f.as_str()))
            .collect();
        assert_eq!(found, vec![("fields.day", "%d %B"), ("at", "%H:%M")]);
        let text = "{{ at | date(\"%H\") }}";
        let (_, _, start, end) = &find_date_filters(text)[0];
        assert_eq!(&text[*start..*end], "at | date(\"%H\")");
    }

    #[test]
    fn a_render_stops_at_its_budgets() {
        let mut t = Templates::empty();
        for (name, source) in [
            (
                "loops",
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
            ),
            (
                "output",
                "{% for i in range(1000) %}{{ \"x\" * 1000 }}{% endfor %}",
            ),
            ("items", "{{ [1] * 1000000000 }}"),
            ("walked", "{{ ([1] * 1000000000) | unique | list }}"),
            ("ok", "{{ [1, 2] | join(\",\") }} {{ range(3) | sum }}"),
        ] {
            t.env.add_template_owned(name, source).unwrap();
            t.files.insert(name.into(), name.into());
        }
        let ctx = Value::from(());
        assert!(t.render_file("loops", &ctx).unwrap_err().contains("steps"));
        assert!(t
            .render_file("output", &ctx)
            .unwrap_err()
            .contains("65536 bytes"));
        assert!(t
            .render_file("items", &ctx)
            .unwrap_err()
            .contains("10000 items"));
        assert!(t
            .render_file("walked", &ctx)
            .unwrap_err()
            .contains("10000 items"));
        assert_eq!(t.render_file("ok", &ctx).unwrap(), "1,2 3");
    }

    #[test]
    fn a_directory_linked_into_itself_is_walked_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x.j2"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("..", dir.path().join("a/up")).unwrap();
        let files = walk_files(dir.path());
        assert_eq!(files.len(), 1, "{files:?}");
    }

    #[test]
    fn params_lose_newlines_and_tabs() {
        assert_eq!(clean_param("a\n\tb     c"), "a b c");
    }
}

//! The checker: every error and warning of a playbook in one run, so an ops
//! person fixes a file in one pass. It never stops at the first problem, and
//! does not pile follow-on errors onto a definition that already failed.

use super::ast::*;
use super::codes::Code;
use super::diagnostic::{closest, Diagnostic};
use super::schema::*;
use super::shadow;
use super::span::Span;
use chrono_tz::Tz;
use std::collections::{HashMap, HashSet};

/// The most memory a `matches` pattern may take compiled, in bytes (the
/// `regex` crate's size limit, 10 MiB by default). Every lead tested runs the
/// pattern, and the service compiles it on each reload; patterns in real
/// playbooks take a few kilobytes.
pub const REGEX_SIZE_LIMIT: usize = 1024 * 1024;

/// What the checker needs to know about templates (the render module provides it).
pub trait TemplateCatalog {
    /// Whether `templates/<name>.j2` exists and compiled.
    fn has_file(&self, name: &str) -> bool;
    /// Every template file name, for suggestions.
    fn file_names(&self) -> Vec<String>;
    /// Whether `whatsapp.yaml` lists the approved template.
    fn has_approved(&self, name: &str) -> bool;
    /// Every approved template name, for suggestions.
    fn approved_names(&self) -> Vec<String>;
    /// The variables a template file reads, with where.
    fn file_variables(&self, name: &str) -> Vec<VariableUse>;
    /// The variables an approved template's params read, with where.
    fn approved_variables(&self, name: &str) -> Vec<VariableUse>;
    /// Where a template file (`is_file`) or an approved template's params
    /// format a variable with `date("...")`. A catalog that holds no template
    /// text (the ones tests and the queue checks use) has none.
    fn date_formats(&self, name: &str, is_file: bool) -> Vec<DateFormatUse> {
        let _ = (name, is_file);
        Vec::new()
    }
}

/// `{{ event_date | date("%B %-d") }}` in a template: the variable, the
/// format, and where the filter stands.
#[derive(Clone, Debug)]
pub struct DateFormatUse {
    pub path: String,
    pub format: String,
    pub file: String,
    pub span: Option<Span>,
}

/// Whether strftime `format` asks a date for what it does not have (a time
/// of day, a zone): chrono fails the write, as the `date` filter would.
pub fn format_needs_time(format: &str) -> bool {
    use std::fmt::Write as _;
    let Some(day) = chrono::NaiveDate::from_ymd_opt(2027, 3, 14) else {
        return false;
    };
    let items = chrono::format::StrftimeItems::new(format);
    // A format with unknown specifiers is a different mistake, which the
    // filter reports when it renders.
    if items
        .clone()
        .any(|item| matches!(item, chrono::format::Item::Error))
    {
        return false;
    }
    write!(String::new(), "{}", day.format_with_items(items)).is_err()
}

/// A variable a template reads: `lead.first_name`, `city`.
#[derive(Clone, Debug)]
pub struct VariableUse {
    pub path: String,
    pub file: String,
    pub span: Option<Span>,
}

/// Names every template context has, besides the playbook's fields.
pub const CONTEXT_ROOTS: [&str; 8] = [
    "lead",
    "intent",
    "channel",
    "playbook",
    "tags",
    "transcript",
    "answers",
    "now",
];

/// The attributes of `lead` in a template context.
pub const LEAD_ATTRIBUTES: [&str; 5] = ["name", "first_name", "phone", "email", "language"];

/// Functions and names minijinja provides in every template.
const TEMPLATE_GLOBALS: [&str; 6] = ["range", "dict", "namespace", "debug", "loop", "self"];

/// The result of checking one playbook.
pub struct Checked {
    pub schema: Option<Schema>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Checks a parsed playbook. `file` names it in diagnostics; `stem` is the
/// file's name without `.rules`, which the playbook's name must equal.
pub fn check_playbook(
    playbook: &Playbook,
    file: &str,
    stem: &str,
    templates: &dyn TemplateCatalog,
) -> Checked {
    let mut checker = Checker {
        file,
        diagnostics: Vec::new(),
    };
    if playbook.name.node != stem {
        checker.push(
            Diagnostic::new(
                Code::E018PlaybookName,
                format!(
                    "playbook `{}` is in a file named `{stem}.rules`",
                    playbook.name.node
                ),
                file,
                Some(playbook.name.span),
            )
            .label("the name must match the file")
            .help(format!(
                "rename the playbook to `{stem}` or the file to `{}.rules`",
                playbook.name.node
            )),
        );
    }
    let schema = checker.check_settings(playbook);
    checker.check_rules(playbook, &schema, templates);
    Checked {
        schema: Some(schema),
        diagnostics: checker.diagnostics,
    }
}

struct Checker<'f> {
    file: &'f str,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    fn error(&mut self, code: Code, message: String, span: Span) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::new(code, message, self.file, Some(span)));
        let last = self.diagnostics.len() - 1;
        &mut self.diagnostics[last]
    }

    fn check_settings(&mut self, playbook: &Playbook) -> Schema {
        let mut schema = Schema {
            name: playbook.name.node.clone(),
            fields: Vec::new(),
            intents: None,
            timezone: Tz::UTC,
            hours: None,
            sender: None,
            idle_days: DEFAULT_IDLE_DAYS,
        };
        let mut seen: HashMap<&'static str, Span> = HashMap::new();
        let mut field_spans: HashMap<String, Span> = HashMap::new();
        for setting in &playbook.settings {
            let keyword = setting.keyword();
            if keyword != "field" {
                if let Some(first) = seen.get(keyword) {
                    let first = *first;
                    let file = self.file.to_string();
                    let d = self.error(
                        Code::E019DuplicateSetting,
                        format!("`{keyword}` is set twice"),
                        setting.span(),
                    );
                    d.label = Some("second setting".into());
                    d.help = Some(format!("keep one `{keyword}` line"));
                    d.related.push(super::diagnostic::Related {
                        file,
                        span: first,
                        label: "first set here".into(),
                    });
                    continue;
                }
                seen.insert(keyword, setting.span());
            }
            match setting {
                Setting::Timezone(tz) => match tz.node.parse::<Tz>() {
                    Ok(zone) => schema.timezone = zone,
                    Err(_) => {
                        let names: Vec<&str> =
                            chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()).collect();
                        let suggestion = closest(&tz.node, names.iter().copied());
                        let d = self.error(
                            Code::E010BadTimezone,
                            format!("unknown timezone `{}`", tz.node),
                            tz.span,
                        );
                        d.label = Some("not an IANA timezone".into());
                        d.help = Some(match suggestion {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => "use an IANA name such as `Asia/Kolkata` or `UTC`".into(),
                        });
                    }
                },
                Setting::Hours(spans, _) => {
                    let mut hours = Hours::default();
                    for span in spans {
                        for (from, to) in &span.days {
                            let to = to.unwrap_or(*from);
                            if to < *from {
                                let d = self.error(
                                    Code::E020BadHours,
                                    format!(
                                        "day range `{}-{}` runs backwards",
                                        from.as_str(),
                                        to.as_str()
                                    ),
                                    span.span,
                                );
                                d.help = Some("write ranges from Monday towards Sunday, as in `mon-fri`; list others with commas, as in `sat,sun`".into());
                                continue;
                            }
                            for day in Day::ALL {
                                if day >= *from && day <= to {
                                    for &(open, close) in &span.times {
                                        hours.add(day, open, close);
                                    }
                                }
                            }
                        }
                    }
                    schema.hours = Some(hours);
                }
                Setting::Intents(names, _) => {
                    let mut list: Vec<String> = Vec::new();
                    for name in names {
                        if !list.contains(&name.node) {
                            list.push(name.node.clone());
                        }
                    }
                    schema.intents = Some(list);
                }
                Setting::Sender(s) => schema.sender = Some(s.node.clone()),
                Setting::Idle(days, _) => {
                    if days.node == 0 {
                        self.error(
                            Code::E033IdleZero,
                            "`idle 0 days` would close every thread as soon as it opens".into(),
                            days.span,
                        )
                        .help = Some(
                            "give at least `idle 1 day`; leave `idle` out for the default of 30 days"
                                .into(),
                        );
                    } else {
                        schema.idle_days = days.node;
                    }
                }
                Setting::Field(field) => {
                    let name = &field.name.node;
                    if RESERVED_FIELD_NAMES.contains(&name.as_str()) {
                        let d = self.error(
                            Code::E017FieldShadowsBuiltin,
                            format!("field `{name}` takes the name of a built-in"),
                            field.name.span,
                        );
                        d.help = Some(format!(
                            "`{name}` is built in; name the field differently, as in `{name}_value`"
                        ));
                        continue;
                    }
                    if let Some(first) = field_spans.get(name) {
                        let first = *first;
                        let file = self.file.to_string();
                        let d = self.error(
                            Code::E007DuplicateField,
                            format!("field `{name}` is declared twice"),
                            field.name.span,
                        );
                        d.help = Some("remove one declaration".into());
                        d.related.push(super::diagnostic::Related {
                            file,
                            span: first,
                            label: "first declared here".into(),
                        });
                        continue;
                    }
                    field_spans.insert(name.clone(), field.name.span);
                    schema.fields.push(FieldInfo {
                        name: name.clone(),
                        ty: field.ty.node.clone(),
                        required: field.required,
                    });
                }
            }
        }
        schema
    }

    fn check_rules(
        &mut self,
        playbook: &Playbook,
        schema: &Schema,
        templates: &dyn TemplateCatalog,
    ) {
        let mut names: HashMap<&str, Span> = HashMap::new();
        let mut valid_conditions: Vec<Option<&Rule>> = Vec::new();
        let mut used_templates: HashSet<(bool, &str)> = HashSet::new();
        for rule in &playbook.rules {
            if let Some(first) = names.get(rule.name.node.as_str()) {
                let first = *first;
                let file = self.file.to_string();
                let d = self.error(
                    Code::E006DuplicateRule,
                    format!("rule `{}` is defined twice", rule.name.node),
                    rule.name.span,
                );
                d.help = Some("rule names are unique within a playbook; rename one".into());
                d.related.push(super::diagnostic::Related {
                    file,
                    span: first,
                    label: "first defined here".into(),
                });
            } else {
                names.insert(&rule.name.node, rule.name.span);
            }
            let before = self.error_count();
            let mut tests_consent = false;
            rule.condition.for_each_test(&mut |test| {
                if test.path.node == "consent.whatsapp" {
                    tests_consent = true;
                }
            });
            rule.condition
                .for_each_test(&mut |test| self.check_test(test, schema));
            let condition_ok = self.error_count() == before;
            self.check_actions(
                &rule.actions,
                rule.continues,
                schema,
                templates,
                &mut used_templates,
            );
            for action in &rule.actions {
                if matches!(action.kind, ActionKind::Handoff { .. }) && !tests_consent {
                    self.push(
                        Diagnostic::new(
                            Code::W103HandoffWithoutConsent,
                            format!(
                                "rule `{}` hands off to WhatsApp without testing `consent.whatsapp`",
                                rule.name.node
                            ),
                            self.file,
                            Some(action.span),
                        )
                        .label("leads without an opt-in will be blocked here")
                        .help("add `and consent.whatsapp` to the rule's condition, or route leads without an opt-in in an earlier rule"),
                    );
                }
            }
            valid_conditions.push(condition_ok.then_some(rule));
        }
        if let Some(otherwise) = &playbook.otherwise {
            self.check_actions(
                &otherwise.actions,
                None,
                schema,
                templates,
                &mut used_templates,
            );
            for action in &otherwise.actions {
                if matches!(action.kind, ActionKind::Handoff { .. }) {
                    self.push(
                        Diagnostic::new(
                            Code::W103HandoffWithoutConsent,
                            "`otherwise` hands off to WhatsApp without testing `consent.whatsapp`",
                            self.file,
                            Some(action.span),
                        )
                        .label("leads without an opt-in will be blocked here")
                        .help("hand off in a rule that tests `consent.whatsapp` and keep `otherwise` for routing"),
                    );
                }
            }
        } else {
            self.push(
                Diagnostic::new(
                    Code::W102NoOtherwise,
                    format!("playbook `{}` has no `otherwise`", playbook.name.node),
                    self.file,
                    Some(playbook.name.span),
                )
                .label("leads that match no rule get no decision")
                .help("add `otherwise { assign \"<queue>\" }` after the last rule"),
            );
        }
        let usable: Vec<&Rule> = valid_conditions.iter().flatten().copied().collect();
        let file = self.file.to_string();
        for d in shadow::find(&usable, schema, &file) {
            self.push(d);
        }
        self.check_template_variables(schema, templates, &used_templates);
    }

    fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    fn check_actions<'a>(
        &mut self,
        actions: &'a [Action],
        continues: Option<Span>,
        schema: &Schema,
        templates: &dyn TemplateCatalog,
        used: &mut HashSet<(bool, &'a str)>,
    ) {
        let drop = actions
            .iter()
            .find(|a| matches!(a.kind, ActionKind::Drop(_)));
        if let Some(drop) = drop {
            let others: Vec<&Action> = actions.iter().filter(|a| !std::ptr::eq(*a, drop)).collect();
            if let Some(other) = others.first() {
                let d = self.error(
                    Code::E016DropWithOthers,
                    format!("`drop` beside `{}`", other.kind.keyword()),
                    other.span,
                );
                d.label = Some("a dropped lead gets no other action".into());
                d.help = Some("move this action to another rule, or remove `drop`".into());
            } else if let Some(span) = continues {
                let d = self.error(
                    Code::E016DropWithOthers,
                    "`continue` after `drop`".to_string(),
                    span,
                );
                d.label = Some("a dropped lead is not routed further".into());
                d.help = Some("remove `continue`".into());
            }
        }
        for action in actions {
            match &action.kind {
                ActionKind::Ask(AskTarget::Field(field))
                    if schema.field_index(&field.node).is_none() =>
                {
                    let names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
                    let help = closest(&field.node, names.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| "`ask` takes a declared field, or `missing`".into());
                    let d = self.error(
                        Code::E022AskUnknownField,
                        format!("`ask` names unknown field `{}`", field.node),
                        field.span,
                    );
                    d.help = Some(help);
                }
                ActionKind::Handoff { open, template } => {
                    if let Some(open) = open {
                        if templates.has_file(&open.node) {
                            used.insert((true, open.node.as_str()));
                        } else {
                            let names = templates.file_names();
                            let help = closest(&open.node, names.iter().map(String::as_str))
                                .map(|s| format!("did you mean `{s}`?"))
                                .unwrap_or_else(|| format!("create `templates/{}.j2`", open.node));
                            let d = self.error(
                                Code::E011MissingTemplateFile,
                                format!("no template file `{}.j2`", open.node),
                                open.span,
                            );
                            d.label = Some("not found under the templates directory".into());
                            d.help = Some(help);
                        }
                    }
                    if let Some(template) = template {
                        if templates.has_approved(&template.node) {
                            used.insert((false, template.node.as_str()));
                        } else {
                            let names = templates.approved_names();
                            let help = closest(&template.node, names.iter().map(String::as_str))
                                .map(|s| format!("did you mean `{s}`?"))
                                .unwrap_or_else(|| {
                                    "add it to `templates/whatsapp.yaml` once Meta has approved it"
                                        .into()
                                });
                            let d = self.error(
                                Code::E012MissingApprovedTemplate,
                                format!("no approved template `{}`", template.node),
                                template.span,
                            );
                            d.label = Some("not in `whatsapp.yaml`".into());
                            d.help = Some(help);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn check_template_variables(
        &mut self,
        schema: &Schema,
        templates: &dyn TemplateCatalog,
        used: &HashSet<(bool, &str)>,
    ) {
        let mut used: Vec<&(bool, &str)> = used.iter().collect();
        used.sort();
        let field_names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        for (is_file, name) in &used {
            self.check_date_formats(schema, templates, name, *is_file);
        }
        for (is_file, name) in used {
            let vars = if *is_file {
                templates.file_variables(name)
            } else {
                templates.approved_variables(name)
            };
            for var in vars {
                let mut parts = var.path.split('.');
                let root = parts.next().unwrap_or("");
                let attr = parts.next();
                if TEMPLATE_GLOBALS.contains(&root) {
                    continue;
                }
                let problem = if root == "lead" {
                    match attr {
                        Some(a) if !LEAD_ATTRIBUTES.contains(&a) => Some((
                            format!("`lead.{a}`"),
                            closest(a, LEAD_ATTRIBUTES).map(|s| format!("lead.{s}")),
                        )),
                        _ => None,
                    }
                } else if CONTEXT_ROOTS.contains(&root) || field_names.contains(&root) {
                    None
                } else {
                    let mut candidates: Vec<&str> = field_names.clone();
                    candidates.extend(CONTEXT_ROOTS);
                    Some((
                        format!("`{root}`"),
                        closest(root, candidates).map(str::to_string),
                    ))
                };
                if let Some((what, suggestion)) = problem {
                    let kind = if *is_file {
                        "template"
                    } else {
                        "approved template"
                    };
                    self.push(
                        Diagnostic::new(
                            Code::E014TemplateVariable,
                            format!(
                                "{kind} `{name}` uses {what}, which playbook `{}` does not provide",
                                schema.name
                            ),
                            &var.file,
                            var.span,
                        )
                        .label("unknown variable")
                        .help(match suggestion {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!(
                                "templates see `lead`, `intent`, `channel`, `playbook`, `tags`, `transcript`, `now` and the playbook's fields ({})",
                                if field_names.is_empty() { "none".to_string() } else { field_names.join(", ") }
                            ),
                        }),
                    );
                }
            }
        }
    }

    /// A `date` filter asking a `date` field for a time of day fails every
    /// render; found here, it is an error before any lead meets it.
    fn check_date_formats(
        &mut self,
        schema: &Schema,
        templates: &dyn TemplateCatalog,
        name: &str,
        is_file: bool,
    ) {
        for used in templates.date_formats(name, is_file) {
            let is_date = schema
                .fields
                .iter()
                .any(|f| f.name == used.path && f.ty == FieldType::Date);
            if !is_date || !format_needs_time(&used.format) {
                continue;
            }
            let kind = if is_file {
                "template"
            } else {
                "approved template"
            };
            self.push(
                Diagnostic::new(
                    Code::E037DateFormatOnDate,
                    format!(
                        "{kind} `{name}` formats `{}` with `{}`, but `{}` is a date, without a time of day",
                        used.path, used.format, used.path
                    ),
                    &used.file,
                    used.span,
                )
                .label("asks for a time or a zone")
                .help("use date parts only (`%d %B %Y`), or declare the field `datetime`"),
            );
        }
    }

    fn check_test(&mut self, test: &Test, schema: &Schema) {
        let path = &test.path;
        let Some(resolved) = schema.resolve(&path.node) else {
            let known = schema.known_paths();
            let suggestion = closest(&path.node, known.iter().copied());
            let kind = if path.node.contains('.') {
                "path"
            } else {
                "field"
            };
            let d = self.error(
                Code::E002UnknownPath,
                format!("unknown {kind} `{}`", path.node),
                path.span,
            );
            d.label = Some(format!("not a field of playbook `{}`", schema.name));
            d.help = Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("declare it: `field {}: text`", path.node.replace('.', "_")),
            });
            return;
        };
        let ty = schema.type_of(resolved);
        let name = &path.node;
        let tyname = ty.describe_as_noun();
        match &test.op {
            TestOp::Truthy => {
                if ty != FieldType::Bool {
                    let help = if ty == FieldType::TextList {
                        format!("test a list with `{name} contains \"...\"`")
                    } else {
                        format!("compare it, as in `{name} == ...`, or test `{name} is set`")
                    };
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!(
                            "`{name}` is {tyname}, not a bool, so it cannot stand alone as a test"
                        ),
                        test.span,
                    );
                    d.help = Some(help);
                }
            }
            TestOp::Compare(op, literal) => {
                if ty == FieldType::TextList {
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!(
                            "`{name}` is a list and cannot be compared with `{}`",
                            op.as_str()
                        ),
                        test.span,
                    );
                    d.help = Some(format!("test membership with `{name} contains \"...\"`"));
                    return;
                }
                if op.is_ordering()
                    && !matches!(
                        ty,
                        FieldType::Number | FieldType::Date | FieldType::DateTime
                    )
                {
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!(
                            "`{}` orders numbers, dates and datetimes, but `{name}` is {tyname}",
                            op.as_str()
                        ),
                        test.span,
                    );
                    d.help = Some("compare text with `==`, `!=`, `in` or `contains`".into());
                    return;
                }
                self.check_literal(resolved, name, &ty, literal, schema);
            }
            TestOp::In(items) | TestOp::NotIn(items) => {
                if matches!(ty, FieldType::Bool | FieldType::TextList) {
                    let help = if ty == FieldType::Bool {
                        format!("test a bool alone: `{name}` or `not {name}`")
                    } else {
                        format!("test a list with `{name} contains \"...\"`")
                    };
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!("`in` takes text, numbers or dates, but `{name}` is {tyname}"),
                        test.span,
                    );
                    d.help = Some(help);
                    return;
                }
                for item in items {
                    self.check_literal(resolved, name, &ty, item, schema);
                }
            }
            TestOp::Contains(literal) => {
                if !ty.is_text() && ty != FieldType::TextList {
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!("`contains` tests text and lists, but `{name}` is {tyname}"),
                        test.span,
                    );
                    d.help = Some(format!(
                        "compare it with `==` or `in`, as in `{name} == ...`"
                    ));
                    return;
                }
                if !matches!(literal.value, LiteralValue::Text(_) | LiteralValue::Invalid) {
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!(
                            "`contains` takes a string, not {}",
                            literal.value.describe()
                        ),
                        literal.span,
                    );
                    d.help = Some("put the value in double quotes".into());
                }
            }
            TestOp::Matches(literal) => {
                if !ty.is_text() {
                    let d = self.error(
                        Code::E003TypeMismatch,
                        format!("`matches` tests text, but `{name}` is {tyname}"),
                        test.span,
                    );
                    d.help = Some("use `matches` on text fields only".into());
                    return;
                }
                match &literal.value {
                    LiteralValue::Text(pattern) => {
                        let compiled = regex::RegexBuilder::new(pattern)
                            .size_limit(REGEX_SIZE_LIMIT)
                            .build();
                        if let Err(regex::Error::CompiledTooBig(_)) = compiled {
                            let d = self.error(
                                Code::E036RegexTooLarge,
                                format!(
                                    "regular expression is too large: compiled, it would take more than {REGEX_SIZE_LIMIT} bytes"
                                ),
                                literal.span,
                            );
                            d.help = Some("large repetitions such as `\\w{1000}` grow the compiled pattern; use `+` or `*`, or a smaller count".into());
                        } else if let Err(e) = compiled {
                            let reason = regex_reason(&e);
                            let d = self.error(
                                Code::E008BadRegex,
                                format!("regular expression does not compile: {reason}"),
                                literal.span,
                            );
                            d.help = Some("patterns use Rust `regex` syntax; escape a backslash as `\\\\` inside the string".into());
                        }
                    }
                    LiteralValue::Invalid => {}
                    other => {
                        let d = self.error(
                            Code::E003TypeMismatch,
                            format!("`matches` takes a pattern string, not {}", other.describe()),
                            literal.span,
                        );
                        d.help = Some("put the pattern in double quotes".into());
                    }
                }
            }
            TestOp::IsSet | TestOp::IsNotSet => {}
            TestOp::Within { unit, .. } => {
                match ty {
                    FieldType::DateTime => {}
                    FieldType::Date if unit.is_calendar() => {}
                    FieldType::Date => {
                        let d = self.error(
                        Code::E003TypeMismatch,
                        format!("`{name}` is a date, so `within` counts it in days or weeks, not {}", unit.as_str()),
                        test.span,
                    );
                        d.help = Some(
                            "use `days` or `weeks`, or declare the field as `datetime`".into(),
                        );
                    }
                    _ => {
                        let d = self.error(
                            Code::E003TypeMismatch,
                            format!("`within` tests dates and datetimes, but `{name}` is {tyname}"),
                            test.span,
                        );
                        d.help = Some("declare the field as `date` or `datetime`".into());
                    }
                }
            }
        }
    }

    fn check_literal(
        &mut self,
        path: PathRef,
        name: &str,
        ty: &FieldType,
        literal: &Literal,
        schema: &Schema,
    ) {
        let value = &literal.value;
        if matches!(value, LiteralValue::Invalid) {
            return;
        }
        let fits = matches!(
            (ty, value),
            (FieldType::Text | FieldType::OneOf(_), LiteralValue::Text(_))
                | (FieldType::Number, LiteralValue::Number(_))
                | (FieldType::Bool, LiteralValue::Bool(_))
                | (FieldType::Date, LiteralValue::Date(_))
                | (
                    FieldType::DateTime,
                    LiteralValue::DateTime(_) | LiteralValue::Date(_)
                )
        );
        if !fits {
            let help = match (ty, value) {
                (FieldType::Number, LiteralValue::Text(t))
                    if t.trim().replace('_', "").parse::<f64>().is_ok() =>
                {
                    format!("write the number without quotes: `{}`", t.trim())
                }
                (FieldType::Date | FieldType::DateTime, LiteralValue::Text(t))
                    if chrono::NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d").is_ok() =>
                {
                    format!("write the date without quotes: `{}`", t.trim())
                }
                (FieldType::Bool, LiteralValue::Text(t))
                    if matches!(t.trim(), "true" | "false") =>
                {
                    format!("write `{}` without quotes", t.trim())
                }
                (FieldType::Number, _) => "compare it with a number, as in `300`".into(),
                (FieldType::Date, _) => "compare it with a date, as in `2027-03-14`".into(),
                (FieldType::DateTime, _) => {
                    "compare it with a datetime, as in `2027-03-14T10:00:00+05:30`".into()
                }
                (FieldType::Bool, _) => format!("test it alone: `{name}` or `not {name}`"),
                _ => "compare it with a string in double quotes".into(),
            };
            let d = self.error(
                Code::E003TypeMismatch,
                format!(
                    "`{name}` is {}, but is compared with {}",
                    ty.describe_as_noun(),
                    value.describe()
                ),
                literal.span,
            );
            d.help = Some(help);
            return;
        }
        let LiteralValue::Text(text) = value else {
            return;
        };
        let normalized = normalize_text(text);
        if let FieldType::OneOf(options) = ty {
            if !options
                .iter()
                .any(|o| normalize_text(&o.node) == normalized)
            {
                let names: Vec<&str> = options.iter().map(|o| o.node.as_str()).collect();
                let help = match closest(&normalized, names.iter().copied()) {
                    Some(s) => format!("did you mean `\"{s}\"`?"),
                    None => format!(
                        "`{name}` is one of {}",
                        names
                            .iter()
                            .map(|n| format!("\"{n}\""))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                let d = self.error(
                    Code::E004NotOneOf,
                    format!("`\"{text}\"` is not one of the values of `{name}`"),
                    literal.span,
                );
                d.help = Some(help);
            }
            return;
        }
        if path == PathRef::Builtin(Builtin::Intent) {
            if let Some(intents) = &schema.intents {
                if !intents.iter().any(|i| normalize_text(i) == normalized) {
                    let help = match closest(&normalized, intents.iter().map(String::as_str)) {
                        Some(s) => format!("did you mean `\"{s}\"`?"),
                        None => format!(
                            "declared intents: {}; add it to the `intents` line",
                            intents.join(", ")
                        ),
                    };
                    let d = self.error(
                        Code::E005UndeclaredIntent,
                        format!("intent `{text}` is not declared"),
                        literal.span,
                    );
                    d.help = Some(help);
                }
            }
        }
    }
}

fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .map(|l| l.trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| text.lines().last().unwrap_or("").trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::format_needs_time;

    #[test]
    fn a_format_needs_a_time_when_it_asks_for_a_time_or_a_zone() {
        for format in ["%H:%M", "%d %B at %-I %p", "%z", "%s", "%c"] {
            assert!(format_needs_time(format), "{format}");
        }
        for format in ["%d %B", "%Y-%m-%d", "%A, %-d %b", "%%H", "%Q"] {
            assert!(!format_needs_time(format), "{format}");
        }
    }
}

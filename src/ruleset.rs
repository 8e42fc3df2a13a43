//! A rules directory loaded from disk: every playbook parsed, checked and
//! compiled, the templates compiled, and a hash that names this exact
//! version. A ruleset with any error is not built: a broken edit never
//! replaces a working ruleset.

use crate::dsl::check::check_playbook;
use crate::dsl::codes::Code;
use crate::dsl::diagnostic::{self, Diagnostic, Sources};
use crate::dsl::parse::parse_playbook;
use crate::engine::eval::{first_name, Actions, Evaluation, Outcome, Trace};
use crate::engine::value::{format_number, Val};
use crate::engine::{
    compile, evaluate, evaluate_with_trace, CompiledPlaybook, Event, Lead, Situation,
};
use crate::render::{RenderedTemplate, Templates};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A checked, compiled set of playbooks with their templates.
#[derive(Debug)]
pub struct Ruleset {
    pub playbooks: BTreeMap<String, LoadedPlaybook>,
    pub templates: Templates,
    /// SHA-256 over every rules and template file, hex.
    pub hash: String,
}

/// One compiled playbook and where it came from.
#[derive(Debug)]
pub struct LoadedPlaybook {
    pub compiled: CompiledPlaybook,
    pub file: String,
}

/// The result of loading: the ruleset when nothing is wrong, and every
/// diagnostic either way.
pub struct Loaded {
    pub ruleset: Option<Ruleset>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: Sources,
    /// How many playbooks and templates were read.
    pub playbook_count: usize,
    pub template_count: usize,
}

impl Loaded {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Whether loading failed for a reason outside the files (unreadable directory).
    pub fn has_io_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.code == Code::E025Io)
    }
}

/// The templates directory used when none is given: `<rules>/../templates`.
pub fn default_templates_dir(rules_dir: &Path) -> PathBuf {
    match rules_dir.parent() {
        Some(parent) => parent.join("templates"),
        None => PathBuf::from("templates"),
    }
}

/// Loads every `*.rules` file of `rules_dir`, with templates from
/// `templates_dir` (default: beside the rules directory).
pub fn load(rules_dir: &Path, templates_dir: Option<&Path>) -> Loaded {
    let templates_dir = templates_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_templates_dir(rules_dir));
    let mut sources = Sources::default();
    let mut diagnostics = Vec::new();
    let mut files: Vec<(String, String, String)> = Vec::new();
    match std::fs::read_dir(rules_dir) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "rules") && p.is_file())
                .collect();
            paths.sort();
            for path in paths {
                let shown = path.display().to_string();
                let stem = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match std::fs::read_to_string(&path) {
                    Ok(text) => files.push((shown, stem, text)),
                    Err(e) => diagnostics.push(Diagnostic::new(
                        Code::E025Io,
                        format!("cannot read rules file: {e}"),
                        &shown,
                        None,
                    )),
                }
            }
            if files.is_empty() && diagnostics.is_empty() {
                diagnostics.push(
                    Diagnostic::new(
                        Code::E025Io,
                        "no `.rules` files in this directory",
                        &rules_dir.display().to_string(),
                        None,
                    )
                    .help("a rules directory holds one `<playbook>.rules` file per playbook"),
                );
            }
        }
        Err(e) => diagnostics.push(
            Diagnostic::new(
                Code::E025Io,
                format!("cannot read rules directory: {e}"),
                &rules_dir.display().to_string(),
                None,
            )
            .help("pass the directory that holds your `.rules` files, as in `handoff check rules`"),
        ),
    }
    let (templates, template_diagnostics) = Templates::load(
        &templates_dir,
        &templates_dir.display().to_string(),
        &mut sources,
    );
    diagnostics.extend(template_diagnostics);
    let mut loaded = from_sources(files, templates, sources, diagnostics);
    loaded.hash_templates(&templates_dir);
    loaded
}

/// Builds a ruleset from rules text already in memory: `(file, stem, text)`.
pub fn from_sources(
    files: Vec<(String, String, String)>,
    templates: Templates,
    mut sources: Sources,
    mut diagnostics: Vec<Diagnostic>,
) -> Loaded {
    let mut hasher = Sha256::new();
    let mut playbooks = BTreeMap::new();
    let playbook_count = files.len();
    for (file, stem, text) in &files {
        sources.add(file, text);
        hasher.update(stem.as_bytes());
        hasher.update([0]);
        hasher.update(text.as_bytes());
        hasher.update([0]);
        let parsed = parse_playbook(text, file);
        let mut file_diagnostics = parsed.diagnostics;
        if let Some(playbook) = parsed.playbook {
            let checked = check_playbook(&playbook, file, stem, &templates);
            file_diagnostics.extend(checked.diagnostics);
            let has_errors = file_diagnostics.iter().any(Diagnostic::is_error);
            if let (false, Some(schema)) = (has_errors, checked.schema) {
                let mut compiled = compile(&playbook, schema, text);
                compiled.marketing_templates = templates.marketing_names();
                playbooks.insert(
                    playbook.name.node.clone(),
                    LoadedPlaybook {
                        compiled,
                        file: file.clone(),
                    },
                );
            }
        }
        diagnostics.extend(file_diagnostics);
    }
    diagnostic::sort(&mut diagnostics);
    let template_count = templates.count();
    let has_errors = diagnostics.iter().any(Diagnostic::is_error);
    let hash = hex(&hasher.finalize());
    Loaded {
        ruleset: (!has_errors).then_some(Ruleset {
            playbooks,
            templates,
            hash,
        }),
        diagnostics,
        sources,
        playbook_count,
        template_count,
    }
}

impl Loaded {
    fn hash_templates(&mut self, dir: &Path) {
        let Some(ruleset) = &mut self.ruleset else {
            return;
        };
        // The version names the rules and the templates they render with.
        let mut hasher = Sha256::new();
        hasher.update(ruleset.hash.as_bytes());
        hasher.update(templates_fingerprint(dir).as_bytes());
        ruleset.hash = hex(&hasher.finalize());
    }
}

/// A SHA-256 over every file under a templates directory (names and bytes),
/// to tell whether two rulesets render alike.
pub fn templates_fingerprint(dir: &Path) -> String {
    let mut files = crate::render::walk_files(dir);
    files.sort();
    let mut hasher = Sha256::new();
    for path in files {
        if let Ok(bytes) = std::fs::read(&path) {
            hasher.update(
                path.strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hasher.update([0]);
            hasher.update(&bytes);
            hasher.update([0]);
        }
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A decision: what the playbook decided, and what the handoff would send.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub playbook: String,
    /// What was decided: an upstream lead event, or a WhatsApp message.
    pub event: Event,
    /// The hash of the ruleset that decided.
    pub ruleset: String,
    /// Every rule that fired, in order.
    #[schema(value_type = Vec<String>)]
    pub rules: Vec<Arc<str>>,
    /// Whether `otherwise` applied (no rule fired).
    pub otherwise: bool,
    pub actions: Actions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handoff: Option<HandoffDecision>,
    pub warnings: Vec<String>,
}

/// In place of a decision: why there is none (the lead's playbook is not
/// one the account routes to, or a reload removed it while the request was
/// in flight).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DecisionError {
    /// What was to be decided, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    pub error: String,
}

/// A decision as answered and stored: the decision, or why there is none.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DecisionOrError {
    Decision(Box<Decision>),
    Error(DecisionError),
}

/// The WhatsApp handoff of a decision, rendered.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HandoffDecision {
    pub outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The session text, or the template's preview: what the buyer would read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The approved template to send: as the message itself (outcome
    /// `template`), or as the fallback should Meta report the window closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved: Option<RenderedTemplate>,
    /// Why the message could not be rendered, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a lead cannot be decided at all.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownPlaybook {
    pub name: String,
    pub known: Vec<String>,
}

impl std::fmt::Display for UnknownPlaybook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no playbook `{}` (loaded: {})",
            self.name,
            if self.known.is_empty() {
                "none".to_string()
            } else {
                self.known.join(", ")
            }
        )
    }
}

impl Ruleset {
    /// The playbook named `name`.
    pub fn playbook(&self, name: &str) -> Result<&LoadedPlaybook, UnknownPlaybook> {
        self.playbooks.get(name).ok_or_else(|| UnknownPlaybook {
            name: name.to_string(),
            known: self.playbooks.keys().cloned().collect(),
        })
    }

    /// Decides a lead with the named playbook.
    pub fn decide(
        &self,
        playbook: &str,
        lead: &Lead,
        situation: &Situation,
    ) -> Result<Decision, UnknownPlaybook> {
        let loaded = self.playbook(playbook)?;
        let evaluation = evaluate(&loaded.compiled, lead, situation);
        Ok(self.finish(&loaded.compiled, lead, situation, evaluation))
    }

    /// Decides a lead and explains why.
    pub fn explain<'a>(
        &'a self,
        playbook: &str,
        lead: &'a Lead,
        situation: &'a Situation,
    ) -> Result<(Decision, Trace<'a>), UnknownPlaybook> {
        let loaded = self.playbook(playbook)?;
        let (evaluation, trace) = evaluate_with_trace(&loaded.compiled, lead, situation);
        Ok((
            self.finish(&loaded.compiled, lead, situation, evaluation),
            trace,
        ))
    }

    fn finish(
        &self,
        playbook: &CompiledPlaybook,
        lead: &Lead,
        situation: &Situation,
        evaluation: Evaluation,
    ) -> Decision {
        let Evaluation {
            playbook: name,
            rules,
            otherwise,
            actions,
            handoff,
            mut warnings,
        } = evaluation;
        let handoff = handoff.map(|h| {
            let mut out = HandoffDecision {
                outcome: h.outcome,
                open: h.open.clone(),
                template: h.template.clone(),
                message: None,
                approved: None,
                error: None,
            };
            let sends = matches!(h.outcome, Outcome::Session | Outcome::Template);
            if sends {
                let context = template_context(playbook, lead, situation, &actions);
                if h.outcome == Outcome::Session {
                    if let Some(open) = &h.open {
                        match self.templates.render_file(open, &context) {
                            Ok(text) => out.message = Some(text),
                            Err(e) => out.error = Some(e),
                        }
                    }
                }
                if let Some(template) = &h.template {
                    match self.templates.render_approved(template, &context) {
                        Ok(rendered) => {
                            if h.outcome == Outcome::Template {
                                out.message = Some(rendered.preview.clone());
                            }
                            out.approved = Some(rendered);
                        }
                        Err(e) => {
                            if h.outcome == Outcome::Template {
                                out.error = Some(e);
                            } else {
                                warnings
                                    .push(format!("the fallback template cannot be rendered: {e}"));
                            }
                        }
                    }
                }
                if let Some(e) = &out.error {
                    warnings.push(format!("nothing can be sent: {e}"));
                }
            }
            out
        });
        Decision {
            playbook: name,
            event: situation.event,
            ruleset: self.hash.clone(),
            rules,
            otherwise,
            actions,
            handoff,
            warnings,
        }
    }
}

impl Templates {
    /// How many template files and approved templates there are.
    pub fn count(&self) -> usize {
        use crate::dsl::check::TemplateCatalog;
        self.file_names().len() + self.approved_names().len()
    }
}

/// The context a template sees: `lead`, every declared field by name,
/// `intent`, `channel`, `playbook`, `tags`, `transcript`, `answers`, `now`.
///
/// Built as minijinja values directly: each map in key order, numbers of
/// the width and sign JSON gives them, exactly what a JSON object passed
/// through `Value::from_serialize` became, without the JSON tree between.
pub fn template_context(
    playbook: &CompiledPlaybook,
    lead: &Lead,
    situation: &Situation,
    actions: &Actions,
) -> minijinja::Value {
    use minijinja::Value;
    let tz = playbook.schema.timezone;
    let text = |s: &Option<String>| match s.as_deref().map(str::trim) {
        Some(t) if !t.is_empty() => Value::from(t),
        _ => Value::from(()),
    };
    // Sorted, as JSON's maps were: a template walking a map sees its keys
    // in the same order.
    let mut context: BTreeMap<&str, Value> = BTreeMap::new();
    let lead_map: BTreeMap<&str, Value> = [
        ("email", text(&lead.email)),
        (
            "first_name",
            first_name(lead).map(Value::from).unwrap_or(Value::from(())),
        ),
        ("language", text(&lead.language)),
        ("name", text(&lead.name)),
        ("phone", text(&lead.phone)),
    ]
    .into_iter()
    .collect();
    context.insert("lead", Value::from_iter(lead_map));
    let fields = crate::engine::eval::bound_fields(playbook, lead, situation);
    for (name, _ty, value) in &fields {
        let value = match value {
            Val::Missing => Value::from(()),
            Val::Text { raw, .. } => Value::from(&**raw),
            // A whole number was a JSON integer: unsigned when not negative.
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                let whole = *n as i64;
                match u64::try_from(whole) {
                    Ok(unsigned) => Value::from(unsigned),
                    Err(_) => Value::from(whole),
                }
            }
            Val::Num(n) => Value::from(format_number(*n)),
            Val::Bool(b) => Value::from(*b),
            Val::Date(d) => crate::engine::value::day_to_date(*d)
                .map(|d| Value::from(d.to_string()))
                .unwrap_or(Value::from(())),
            Val::Instant(secs, _) => chrono::DateTime::from_timestamp(*secs, 0)
                .map(|d| Value::from(d.with_timezone(&tz).to_rfc3339()))
                .unwrap_or(Value::from(())),
            Val::List(items) => items.iter().map(String::as_str).collect(),
        };
        context.insert(name, value);
    }
    context.insert("intent", text(&lead.intent));
    context.insert("channel", text(&lead.channel));
    context.insert("playbook", Value::from(playbook.schema.name.as_str()));
    let mut tags: Vec<&str> = lead.tags.iter().map(String::as_str).collect();
    for tag in &actions.tags {
        if !tags.contains(&tag.as_str()) {
            tags.push(tag);
        }
    }
    context.insert("tags", tags.into_iter().collect());
    context.insert(
        "transcript",
        lead.transcript
            .iter()
            .map(|m| {
                let message: BTreeMap<&str, Value> = [
                    // The time as its JSON form wrote it.
                    ("at", Value::from_serialize(m.at)),
                    ("channel", Value::from(m.channel.as_str())),
                    ("from", Value::from(m.from.as_str())),
                    ("text", Value::from(m.text.as_str())),
                ]
                .into_iter()
                .collect();
                Value::from_iter(message)
            })
            .collect(),
    );
    context.insert(
        "now",
        Value::from(situation.now.with_timezone(&tz).to_rfc3339()),
    );
    if lead.answers.is_empty() {
        context.insert("answers", Value::from_iter(BTreeMap::<&str, Value>::new()));
        return Value::from_iter(context);
    }
    let base = Value::from_iter(context);
    // A map in the order the questions were asked (minijinja keeps insertion
    // order; the other maps here are sorted): `answers["Preferred venue?"]`,
    // or `for q, a in answers|items`.
    let answers: Value = lead
        .answers
        .iter()
        .map(|a| (a.question.clone(), a.answer.clone()))
        .collect();
    minijinja::context! { answers => answers, ..base }
}

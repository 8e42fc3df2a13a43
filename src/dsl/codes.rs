//! The table of diagnostic codes. Append only: a code, once published, keeps
//! its meaning forever, so scripts and docs can rely on it.

use serde::Serialize;

/// A stable diagnostic code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Code {
    /// The file is not valid syntax.
    E001Syntax,
    /// A path names no field and no built-in.
    E002UnknownPath,
    /// A test does not fit the type of its path.
    E003TypeMismatch,
    /// A value is not one of the field's `one of` values.
    E004NotOneOf,
    /// An intent that the playbook does not declare.
    E005UndeclaredIntent,
    /// Two rules with one name.
    E006DuplicateRule,
    /// Two fields with one name.
    E007DuplicateField,
    /// A regular expression that does not compile.
    E008BadRegex,
    /// A date or datetime that does not exist.
    E009BadDate,
    /// A timezone that is not an IANA zone.
    E010BadTimezone,
    /// `open` names a template file that does not exist.
    E011MissingTemplateFile,
    /// `template` names an approved template that does not exist.
    E012MissingApprovedTemplate,
    /// A template that fails to compile.
    E013TemplateSyntax,
    /// A template uses a variable that its context will not have.
    E014TemplateVariable,
    /// An approved template's `params` do not match the placeholders of its body.
    E015ParamsCount,
    /// `drop` beside other actions.
    E016DropWithOthers,
    /// A field named like a built-in path.
    E017FieldShadowsBuiltin,
    /// The playbook's name differs from its file's name.
    E018PlaybookName,
    /// A setting given twice.
    E019DuplicateSetting,
    /// Business hours that cannot be read.
    E020BadHours,
    /// `otherwise` given twice, or before a rule.
    E021OtherwisePlacement,
    /// `ask` names a field the playbook does not declare.
    E022AskUnknownField,
    /// `templates/whatsapp.yaml` cannot be read.
    E023ApprovedTemplatesFile,
    /// `handoff whatsapp` without `open` and without `template`, or with one twice.
    E024HandoffParts,
    /// A rules file or directory that cannot be read.
    E025Io,
    /// A setting after the first rule.
    E026SettingAfterRule,
    /// A number that does not fit where it stands.
    E027BadNumber,
    /// A dry-run test file that cannot be read as YAML of the right shape.
    E028TestFile,
    /// A test file names a playbook that does not exist.
    E029TestUnknownPlaybook,
    /// A test case expects a rule the playbook does not have.
    E030TestUnknownRule,
    /// A test case's lead sets a field the playbook does not declare.
    E031TestUndeclaredField,
    /// A test case's `now` is not an RFC 3339 time.
    E032TestBadNow,
    /// `idle 0 days`: a thread that closes as soon as it opens.
    E033IdleZero,
    /// A condition nested deeper than the parser follows.
    E034ConditionTooDeep,
    /// A rules, template or test file larger than handoff reads.
    E035FileTooLarge,
    /// A regular expression whose compiled program would be too large.
    E036RegexTooLarge,
    /// A `date` filter asks a date for a time of day or a zone.
    E037DateFormatOnDate,
    /// A YAML file with more aliases or nesting than handoff reads.
    E038YamlTooComplex,
    /// A template tag with more operators and filters than handoff compiles.
    E039TemplateTooComplex,
    /// A rule that can never fire because an earlier rule catches every lead it matches.
    W101ShadowedRule,
    /// A playbook without `otherwise`.
    W102NoOtherwise,
    /// A WhatsApp handoff whose rule does not test `consent.whatsapp`.
    W103HandoffWithoutConsent,
    /// A rule whose conditions contradict each other, so it never fires.
    W104NeverFires,
}

impl Code {
    /// The code as printed: `E003`, `W101`.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            E001Syntax => "E001",
            E002UnknownPath => "E002",
            E003TypeMismatch => "E003",
            E004NotOneOf => "E004",
            E005UndeclaredIntent => "E005",
            E006DuplicateRule => "E006",
            E007DuplicateField => "E007",
            E008BadRegex => "E008",
            E009BadDate => "E009",
            E010BadTimezone => "E010",
            E011MissingTemplateFile => "E011",
            E012MissingApprovedTemplate => "E012",
            E013TemplateSyntax => "E013",
            E014TemplateVariable => "E014",
            E015ParamsCount => "E015",
            E016DropWithOthers => "E016",
            E017FieldShadowsBuiltin => "E017",
            E018PlaybookName => "E018",
            E019DuplicateSetting => "E019",
            E020BadHours => "E020",
            E021OtherwisePlacement => "E021",
            E022AskUnknownField => "E022",
            E023ApprovedTemplatesFile => "E023",
            E024HandoffParts => "E024",
            E025Io => "E025",
            E026SettingAfterRule => "E026",
            E027BadNumber => "E027",
            E028TestFile => "E028",
            E029TestUnknownPlaybook => "E029",
            E030TestUnknownRule => "E030",
            E031TestUndeclaredField => "E031",
            E032TestBadNow => "E032",
            E033IdleZero => "E033",
            E034ConditionTooDeep => "E034",
            E035FileTooLarge => "E035",
            E036RegexTooLarge => "E036",
            E037DateFormatOnDate => "E037",
            E038YamlTooComplex => "E038",
            E039TemplateTooComplex => "E039",
            W101ShadowedRule => "W101",
            W102NoOtherwise => "W102",
            W103HandoffWithoutConsent => "W103",
            W104NeverFires => "W104",
        }
    }

    /// Whether this code is a warning (the file still loads).
    pub fn is_warning(self) -> bool {
        self.as_str().starts_with('W')
    }
}

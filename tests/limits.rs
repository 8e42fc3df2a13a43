//! Rules, templates, test files and lead files can never crash, hang or
//! exhaust the router: each input below once did one of those in some
//! command. Each test runs the real binary on it, under a memory ceiling,
//! and expects an exit code of 0, 1 or 2 with the diagnostic or render
//! error that names the limit.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::binary;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Not a timing assertion: a guard so that a regression to a hang kills the
/// child and fails the test instead of stalling the suite. Every case here
/// finishes in well under a second when it works.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The child's address-space ceiling, in KiB: far above what any case
/// needs, far below the gigabytes the unbounded versions took.
const MEMORY_CEILING_KIB: u64 = 3 * 1024 * 1024;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `handoff args...` in `dir` under the memory ceiling and the hang guard.
fn run(dir: &Path, args: &[&str]) -> Run {
    let handoff = binary().get_program().to_owned();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {MEMORY_CEILING_KIB}; exec \"$0\" \"$@\""
        ))
        .arg(handoff)
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read both pipes on threads so a large report cannot block the child.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`handoff {}` hung; killed", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let run = Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    };
    assert!(
        status.code().is_some(),
        "`handoff {}` was killed by a signal (a crash or an abort): {}",
        args.join(" "),
        tail(&run.stderr)
    );
    assert!(
        !run.stderr.contains("panicked"),
        "`handoff {}` panicked: {}",
        args.join(" "),
        tail(&run.stderr)
    );
    run
}

fn tail(text: &str) -> &str {
    let at = text.len().saturating_sub(2_000);
    let at = (at..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    &text[at..]
}

/// A project: `rules/demo.rules`, `templates/` with `files`, and a lead.
fn project(rules: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates/demo")).unwrap();
    std::fs::write(dir.path().join("rules/demo.rules"), rules).unwrap();
    for (name, text) in files {
        let path = dir.path().join("templates").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(
        dir.path().join("lead.json"),
        r#"{"name": "Aisha Khan", "channel": "instagram", "intent": "hi",
            "consent": {"whatsapp": true}, "fields": {"day": "2027-03-14"}}"#,
    )
    .unwrap();
    dir
}

/// A playbook that opens `demo/msg` for every lead with consent.
const OPENS_MSG: &str = r#"playbook demo {
  intents hi
  field day: date
  rule r {
    when intent == "hi" and consent.whatsapp
    then handoff whatsapp { open "demo/msg" }
  }
  otherwise { tag "y" }
}
"#;

/// A test file whose one case expects `demo/msg` to render as `message`.
fn test_file(message: &str) -> String {
    format!(
        r#"playbook: demo
now: 2027-01-10T10:00:00+05:30
cases:
  - name: the message renders
    lead:
      name: Aisha Khan
      channel: instagram
      intent: hi
      consent: {{whatsapp: true}}
      fields: {{day: 2027-03-14}}
    window: open
    expect:
      rules: [r]
      handoff: session
      message: "{message}"
"#
    )
}

fn condition_playbook(condition: &str) -> String {
    format!(
        "playbook demo {{\n  field a: number\n  rule r {{\n    when {condition}\n    then tag \"x\"\n  }}\n  otherwise {{ tag \"y\" }}\n}}\n"
    )
}

#[test]
fn a_condition_6000_parentheses_deep_is_refused_by_check_and_fmt() {
    let n = 6_000;
    let deep = format!("{}a > 1{}", "(".repeat(n), ")".repeat(n));
    let dir = project(&condition_playbook(&deep), &[]);
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check.stdout.contains("error[E034]"),
        "{}",
        tail(&check.all())
    );
    assert!(
        check.stdout.contains("rules/demo.rules:4:"),
        "{}",
        check.stdout
    );
    let fmt = run(dir.path(), &["fmt", "--check", "rules"]);
    assert_eq!(fmt.code, 2, "{}", tail(&fmt.all()));
    assert!(fmt.stderr.contains("error[E034]"), "{}", tail(&fmt.all()));
}

#[test]
fn a_chain_of_50000_nots_is_refused_by_check_and_fmt() {
    let chain = format!("{}a > 1", "not ".repeat(50_000));
    let dir = project(&condition_playbook(&chain), &[]);
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check.stdout.contains("error[E034]"),
        "{}",
        tail(&check.all())
    );
    let fmt = run(dir.path(), &["fmt", "--check", "rules"]);
    assert_eq!(fmt.code, 2);
    assert!(fmt.stderr.contains("error[E034]"), "{}", tail(&fmt.all()));
}

#[test]
fn a_condition_as_deep_as_the_limit_still_checks() {
    // 64 levels: 32 parentheses, each after a `not`.
    let deep = format!("{}a > 1{}", "not (".repeat(32), ")".repeat(32));
    let dir = project(&condition_playbook(&deep), &[]);
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 0, "{}", check.all());
}

/// Runs `explain` and `test` on a project whose `demo/msg` is `template`,
/// and returns their output; both must finish with the render error.
fn render_fails(template: &str, error: &str) {
    let dir = project(OPENS_MSG, &[("demo/msg.j2", template)]);
    std::fs::write(dir.path().join("rules/demo.test.yaml"), test_file("hi")).unwrap();
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 0, "the template checks: {}", check.all());
    let explain = run(
        dir.path(),
        &[
            "explain",
            "--rules",
            "rules",
            "--lead",
            "lead.json",
            "--window",
            "open",
        ],
    );
    assert_eq!(explain.code, 0, "{}", tail(&explain.all()));
    assert!(explain.stdout.contains(error), "{}", tail(&explain.all()));
    let test = run(dir.path(), &["test", "rules"]);
    assert_eq!(test.code, 1, "{}", tail(&test.all()));
    assert!(test.all().contains(error), "{}", tail(&test.all()));
}

#[test]
fn two_nested_100000_step_loops_run_out_of_fuel() {
    render_fails(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "ran more than 100000 steps",
    );
}

#[test]
fn a_70_byte_template_that_would_render_10_gb_stops_at_the_output_limit() {
    render_fails(
        r#"{% for i in range(100000) %}{{ "x" * 100000 }}{% endfor %}"#,
        "longer than 65536 bytes",
    );
}

#[test]
fn a_list_repeated_a_billion_times_is_never_walked() {
    render_fails("{{ [1] * 1000000000 }}", "more than 10000 items");
    render_fails(
        "{{ ([1] * 1000000000) | join(\",\") }}",
        "more than 10000 items",
    );
    render_fails("{{ ([1] * 1000000000) | sum }}", "more than 10000 items");
}

#[test]
fn a_macro_that_calls_itself_stops_at_the_recursion_limit() {
    render_fails(
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "recursion limit exceeded",
    );
}

#[test]
fn a_date_filter_asking_a_date_field_for_a_time_is_a_check_error() {
    let dir = project(
        &OPENS_MSG.replace(
            "open \"demo/msg\"",
            "open \"demo/msg\" template \"when\"",
        ),
        &[
            ("demo/msg.j2", r#"See you {{ day | date("%d %B at %H:%M") }}."#),
            (
                "whatsapp.yaml",
                "when:\n  language: en\n  category: utility\n  body: \"See you {{1}}.\"\n  params:\n    - \"{{ day | date('%H:%M') }}\"\n",
            ),
        ],
    );
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(
        check
            .stdout
            .contains("error[E037]: template `demo/msg` formats `day` with `%d %B at %H:%M`"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("templates/demo/msg.j2:1:12"),
        "{}",
        check.stdout
    );
    assert!(
        check
            .stdout
            .contains("error[E037]: approved template `when`"),
        "{}",
        check.stdout
    );
    assert!(
        check.stdout.contains("templates/whatsapp.yaml:6:11"),
        "{}",
        check.stdout
    );
    // Date parts of a date are fine.
    std::fs::write(
        dir.path().join("templates/demo/msg.j2"),
        r#"See you {{ day | date("%d %B") }}."#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("templates/whatsapp.yaml"),
        "when:\n  language: en\n  category: utility\n  body: \"See you {{1}}.\"\n  params:\n    - \"{{ day | date('%B %-d') }}\"\n",
    )
    .unwrap();
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 0, "{}", check.all());
}

#[test]
fn fmt_on_a_very_long_field_name_with_a_long_one_of_list_stays_small() {
    let name = format!("f{}", "x".repeat(60_000));
    let values: Vec<String> = (0..20_000).map(|i| format!("\"v{i}\"")).collect();
    let rules = format!(
        "playbook demo {{\n field {name}: one of {}\n otherwise {{ tag \"y\" }}\n}}\n",
        values.join(", ")
    );
    let dir = project(&rules, &[]);
    let fmt = run(dir.path(), &["fmt", "--check", "rules"]);
    assert_eq!(fmt.code, 1, "{}", tail(&fmt.all()));
    assert!(
        fmt.stdout.contains("would reformat"),
        "{}",
        tail(&fmt.all())
    );
    let fmt = run(dir.path(), &["fmt", "rules"]);
    assert_eq!(fmt.code, 0, "{}", tail(&fmt.all()));
    let formatted = std::fs::read_to_string(dir.path().join("rules/demo.rules")).unwrap();
    assert!(
        formatted.len() < 2 * rules.len(),
        "{} bytes",
        formatted.len()
    );
    let again = run(dir.path(), &["fmt", "--check", "rules"]);
    assert_eq!(again.code, 0, "{}", tail(&again.all()));
}

#[test]
fn two_thousand_errors_on_one_200000_character_line_make_a_short_report() {
    let intents: Vec<String> = (0..2_000)
        .map(|i| format!("\"{:x<90}\"", format!("undeclared_intent_{i:04}")))
        .collect();
    let rules = format!(
        "playbook demo {{\n intents hi\n rule r {{\n  when intent in [{}]\n  then tag \"x\"\n }}\n otherwise {{ tag \"y\" }}\n}}\n",
        intents.join(", ")
    );
    assert!(rules.len() > 180_000);
    let dir = project(&rules, &[]);
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1);
    assert!(
        check.stdout.contains("2000 errors"),
        "{}",
        tail(&check.stdout)
    );
    // Each diagnostic quotes a window of the line, not the line.
    assert!(
        check.stdout.len() < 2_000 * 1_000,
        "{} bytes",
        check.stdout.len()
    );
    assert!(check.stdout.contains("rules/demo.rules:4:"));
    let json = run(dir.path(), &["check", "--format", "json", "rules"]);
    assert_eq!(json.code, 1);
    assert!(
        json.stdout.len() < 2_000 * 2_000,
        "{} bytes",
        json.stdout.len()
    );
}

#[cfg(unix)]
#[test]
fn a_symlink_loop_under_templates_is_walked_once() {
    let dir = project(OPENS_MSG, &[("demo/msg.j2", "Hi")]);
    let demo = dir.path().join("templates/demo");
    std::os::unix::fs::symlink("..", demo.join("parent")).unwrap();
    std::os::unix::fs::symlink(".", demo.join("itself")).unwrap();
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 0, "{}", check.all());
    assert!(
        check.stdout.contains("1 playbook and 1 template checked"),
        "{}",
        check.stdout
    );
}

#[test]
fn a_very_long_unknown_intent_gets_no_suggestion_search() {
    let intents: Vec<String> = (0..2_000).map(|i| format!("i{i}")).collect();
    let tests: Vec<String> = (0..50)
        .map(|i| format!("intent == \"{}{i}\"", "q".repeat(20_000)))
        .collect();
    let rules = format!(
        "playbook demo {{\n intents {}\n rule r {{\n  when {}\n  then tag \"x\"\n }}\n otherwise {{ tag \"y\" }}\n}}\n",
        intents.join(", "),
        tests.join(" or ")
    );
    let dir = project(&rules, &[]);
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1);
    assert!(
        check.stdout.contains("error[E005]"),
        "{}",
        tail(&check.stdout)
    );
    assert!(
        !check.stdout.contains("did you mean"),
        "{}",
        tail(&check.stdout)
    );
}

#[test]
fn a_pattern_too_large_to_compile_is_refused() {
    let dir = project(
        "playbook demo {\n  field note: text\n  rule r {\n    when note matches \"(\\\\w{100}){100}\"\n    then tag \"x\"\n  }\n  otherwise { tag \"y\" }\n}\n",
        &[],
    );
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", check.all());
    assert!(check.stdout.contains("error[E036]"), "{}", check.stdout);
    assert!(
        check.stdout.contains("rules/demo.rules:4:23"),
        "{}",
        check.stdout
    );
}

#[test]
fn files_larger_than_handoff_reads_are_refused_with_their_size() {
    // Also a template line longer than minijinja's 16-bit column count.
    let long_line = project(
        OPENS_MSG,
        &[(
            "demo/msg.j2",
            &format!("Hi\n{{# {} #}}", "x".repeat(70_000)),
        )],
    );
    let check = run(long_line.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check
            .stdout
            .contains("error[E035]: template line is 70006 bytes, more than the 65535 handoff reads\n --> templates/demo/msg.j2:2:1"),
        "{}",
        tail(&check.stdout)
    );
    let padding = format!("# {}\n", "x".repeat(1024 * 1024));
    let dir = project(
        &format!("{padding}{OPENS_MSG}"),
        &[("demo/msg.j2", &"Hi ".repeat(100_000))],
    );
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check.stdout.contains(&format!(
            "error[E035]: rules file is {} bytes, more than the 1048576 handoff reads",
            padding.len() + OPENS_MSG.len()
        )),
        "{}",
        tail(&check.stdout)
    );
    assert!(
        check
            .stdout
            .contains("error[E035]: template is 300000 bytes"),
        "{}",
        tail(&check.stdout)
    );
}

/// Nine levels of ten aliases each: a billion values once expanded.
fn alias_bomb(indent: &str) -> String {
    let mut lines = vec![format!(
        "{indent}a0: &a0 {{x: 1, y: 2, z: 3, w: 4, v: 5, u: 6, t: 7, s: 8, r: 9, q: 10}}"
    )];
    for i in 1..9 {
        let refs: Vec<String> = (0..10).map(|j| format!("k{j}: *a{}", i - 1)).collect();
        lines.push(format!("{indent}a{i}: &a{i} {{{}}}", refs.join(", ")));
    }
    lines.join("\n")
}

/// A test file whose one case's lead has `junk` under its fields.
fn test_file_with_junk(junk: &str) -> String {
    format!(
        "playbook: demo\nnow: 2027-01-10T10:00:00+05:30\ncases:\n  - name: one\n    lead:\n      name: Aisha Khan\n      intent: hi\n      fields:\n        day: 2027-03-14\n        junk:{junk}\n    expect:\n      rules: [r]\n"
    )
}

#[test]
fn a_yaml_alias_bomb_or_deep_nesting_in_a_test_file_is_refused() {
    let dir = project(OPENS_MSG, &[("demo/msg.j2", "Hi")]);
    let bomb = format!("\n{}", alias_bomb("          "));
    std::fs::write(
        dir.path().join("rules/demo.test.yaml"),
        test_file_with_junk(&bomb),
    )
    .unwrap();
    let test = run(dir.path(), &["test", "rules"]);
    assert_eq!(test.code, 1, "{}", tail(&test.all()));
    assert!(test.all().contains("error[E038]"), "{}", tail(&test.all()));
    assert!(
        test.all().contains("rules/demo.test.yaml:"),
        "{}",
        tail(&test.all())
    );
    let deep = format!(" {}{}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(
        dir.path().join("rules/demo.test.yaml"),
        test_file_with_junk(&deep),
    )
    .unwrap();
    let test = run(dir.path(), &["test", "rules"]);
    assert_eq!(test.code, 1, "{}", tail(&test.all()));
    assert!(test.all().contains("error[E038]"), "{}", tail(&test.all()));
}

#[test]
fn too_many_aliases_or_deep_nesting_in_whatsapp_yaml_are_refused() {
    // whatsapp.yaml's shape is strict, so a nested alias bomb fails on its
    // first unknown key; what fits the shape is many aliases of one param.
    let aliases = vec!["*p"; 2_000].join(", ");
    let many = format!(
        "when:\n  language: en\n  category: utility\n  body: \"Hi {{{{1}}}}\"\n  params: [&p \"{{{{ day }}}}\", {aliases}]\n"
    );
    let dir = project(
        OPENS_MSG,
        &[("demo/msg.j2", "Hi"), ("whatsapp.yaml", &many)],
    );
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check.stdout.contains("error[E038]"),
        "{}",
        tail(&check.stdout)
    );
    assert!(
        check.stdout.contains("templates/whatsapp.yaml:5:"),
        "{}",
        tail(&check.stdout)
    );
    // Nesting is refused at the first level the shape does not allow.
    let deep = format!("when: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(dir.path().join("templates/whatsapp.yaml"), deep).unwrap();
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check.stdout.contains("error[E023]"),
        "{}",
        tail(&check.stdout)
    );
}

#[test]
fn a_lead_file_nested_thousands_deep_is_an_error_not_a_crash() {
    let dir = project(OPENS_MSG, &[("demo/msg.j2", "Hi")]);
    let deep = format!(
        "{{\"name\": \"A\", \"fields\": {{\"day\": {}1{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(dir.path().join("deep.json"), deep).unwrap();
    let explain = run(
        dir.path(),
        &["explain", "--rules", "rules", "--lead", "deep.json"],
    );
    assert_eq!(explain.code, 2, "{}", tail(&explain.all()));
}

#[test]
fn a_chain_of_ten_thousand_filters_is_refused_before_it_is_compiled() {
    // Found by the fuzzer: minijinja compiles the chain recursively and
    // overflowed the stack of `check`.
    let chain = format!("{{{{ day{} }}}}", "\n | list".repeat(10_000));
    let approved = format!(
        "when:\n  language: en\n  category: utility\n  body: \"Hi {{{{1}}}}\"\n  params:\n    - \"{{{{ day{} }}}}\"\n",
        " ~ day".repeat(10_000)
    );
    let dir = project(
        &OPENS_MSG.replace("open \"demo/msg\"", "open \"demo/msg\" template \"when\""),
        &[("demo/msg.j2", &chain), ("whatsapp.yaml", &approved)],
    );
    let check = run(dir.path(), &["check", "rules"]);
    assert_eq!(check.code, 1, "{}", tail(&check.all()));
    assert!(
        check.stdout.contains("error[E039]: template tag has more than 200 operators and filters\n --> templates/demo/msg.j2:1:1"),
        "{}",
        tail(&check.stdout)
    );
    assert!(
        check.stdout.contains("--> templates/whatsapp.yaml:6:8"),
        "{}",
        tail(&check.stdout)
    );
}

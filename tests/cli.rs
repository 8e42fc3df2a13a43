//! The `test`, `diff`, `generate`, `check` and `explain` commands, driven
//! through the real binary on fixture directories.

// Test code: a failed unwrap, expect or panic is how a test reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::binary;
use std::process::Output;

fn handoff(args: &[&str]) -> Output {
    binary().args(args).output().expect("run handoff")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_passing_suite_exits_0_with_the_closing_line() {
    let out = handoff(&["test", "tests/fixtures/suite/passing/rules"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.trim_end().ends_with("2 passed, 0 failed"), "{text}");
    assert!(
        text.contains("rules no case made fire (1 of 3):\n  shop: support\n"),
        "{text}"
    );
}

#[test]
fn a_failing_suite_shows_expected_versus_got_and_exits_1() {
    let out = handoff(&["test", "tests/fixtures/suite/failing/rules"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    let expected = "  FAIL  a buyer at 700 goes to the senior team (tests/fixtures/suite/failing/rules/shop.test.yaml:7)
          rules
            expected  [big_buyer]
            got       [buyer]
          assign
            expected  \"senior\"
            got       \"sales\"
          warnings
            expected  [\"a warning that is not there\"]
            got       []
";
    assert!(text.contains(expected), "{text}");
    assert!(text.trim_end().ends_with("1 passed, 1 failed"), "{text}");
}

#[test]
fn coverage_fails_when_a_rule_never_fires() {
    let out = handoff(&[
        "test",
        "tests/fixtures/suite/failing/rules",
        "--filter",
        "big buyer goes",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).trim_end().ends_with("1 passed, 0 failed"));
    let out = handoff(&["test", "tests/fixtures/suite/passing/rules", "--coverage"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("--coverage asks for all"), "{text}");
}

#[test]
fn bad_test_files_get_diagnostics_with_file_and_line() {
    let out = handoff(&["test", "tests/fixtures/suite/bad/rules"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains(
            "error[E030]: case `names a rule that does not exist` expects rule `big_buyers`"
        ),
        "{text}"
    );
    assert!(text.contains("help: did you mean `big_buyer`?"), "{text}");
    assert!(
        text.contains(
            "error[E031]: case `sets a field the playbook does not declare` sets field `cty`"
        ),
        "{text}"
    );
    assert!(
        text.contains("--> tests/fixtures/suite/bad/rules/shop.test.yaml:10:28"),
        "{text}"
    );
    assert!(
        text.contains("error[E029]: unknown playbook `shops`"),
        "{text}"
    );
    assert!(
        text.contains("error[E028]: test file cannot be read"),
        "{text}"
    );
    assert!(
        text.contains("--> tests/fixtures/suite/bad/rules/broken.test.yaml:"),
        "{text}"
    );
    // The good case in the file still runs.
    assert!(text.trim_end().ends_with("1 passed, 0 failed"), "{text}");
}

#[test]
fn junit_and_json_reports() {
    let dir = tempfile::tempdir().unwrap();
    let junit = dir.path().join("junit.xml");
    let out = handoff(&[
        "test",
        "tests/fixtures/suite/failing/rules",
        "--format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["passed"], 1);
    assert_eq!(json["failed"], 1);
    assert_eq!(json["cases"][1]["mismatches"][0]["key"], "rules");
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(
        xml.contains("<testsuite name=\"shop\" tests=\"2\" failures=\"1\">"),
        "{xml}"
    );
    assert!(
        xml.contains(
            "<failure message=\"3 key(s) differ\">rules: expected [big_buyer], got [buyer]"
        ),
        "{xml}"
    );
}

#[test]
fn the_bundled_suites_pass_with_full_coverage() {
    let out = handoff(&["test", "rules", "--coverage"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("every rule fired in some case"), "{text}");
}

#[test]
fn diff_groups_the_changes_between_two_rule_versions() {
    let out = handoff(&[
        "diff",
        "tests/fixtures/diff/old/rules",
        "tests/fixtures/diff/new/rules",
        "--leads",
        "tests/fixtures/diff/leads.jsonl",
        "--now",
        "2027-01-01T10:00:00Z",
        "--format",
        "json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["leads"], 7);
    assert_eq!(s["changed"], 4);
    assert_eq!(s["unchanged"], 3);
    assert_eq!(s["skipped"], 2);
    let groups = s["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    assert_eq!(groups[0]["old_rule"], "buyer");
    assert_eq!(groups[0]["new_rule"], "big_buyer");
    assert_eq!(groups[0]["count"], 2);
    assert_eq!(groups[0]["examples"][0]["line"], 2);
    assert_eq!(groups[0]["examples"][1]["name"], "C");
    assert_eq!(groups[1]["old_rule"], "otherwise");
    assert_eq!(groups[1]["new_rule"], "support");
    assert_eq!(groups[1]["count"], 2);
    let errors = s["errors"].as_array().unwrap();
    assert_eq!(errors[0]["line"], 9);
    assert!(errors[0]["error"].as_str().unwrap().contains("intnt"));
    assert_eq!(errors[1]["line"], 10);
}

#[test]
fn diff_can_fail_ci_on_change_and_reads_standard_input() {
    let mut child = binary()
        .args([
            "diff",
            "tests/fixtures/diff/old/rules",
            "tests/fixtures/diff/new/rules",
            "--leads",
            "-",
            "--fail-on-change",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"name\": \"E\", \"intent\": \"support\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("1 leads: 1 decisions change (100.00%)"),
        "{text}"
    );
    assert!(
        text.contains("shop: otherwise -> support · no handoff"),
        "{text}"
    );
    // The same rules on both sides change nothing.
    let out = handoff(&[
        "diff",
        "tests/fixtures/diff/old/rules",
        "tests/fixtures/diff/old/rules",
        "--leads",
        "tests/fixtures/diff/leads.jsonl",
        "--fail-on-change",
    ]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn generate_writes_deterministic_leads_that_diff_can_read() {
    let a = handoff(&[
        "generate",
        "--playbook",
        "events",
        "--count",
        "200",
        "--seed",
        "7",
    ]);
    let b = handoff(&[
        "generate",
        "--playbook",
        "events",
        "--count",
        "200",
        "--seed",
        "7",
    ]);
    assert_eq!(a.status.code(), Some(0));
    assert_eq!(a.stdout, b.stdout);
    let text = stdout(&a);
    assert_eq!(text.lines().count(), 200);
    for line in text.lines() {
        handoff::history::LeadRecord::parse(line).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leads.jsonl");
    std::fs::write(&file, &a.stdout).unwrap();
    let out = handoff(&[
        "diff",
        "rules",
        "rules",
        "--leads",
        file.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["leads"], 200);
    assert_eq!(s["changed"], 0);
}

#[test]
fn check_exit_codes_follow_the_documented_contract() {
    assert_eq!(handoff(&["check", "rules"]).status.code(), Some(0));
    assert_eq!(handoff(&["check", "no/such/dir"]).status.code(), Some(2));
    assert_eq!(handoff(&["check", "--bogus-flag"]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("w.rules"),
        "playbook w {\n rule r { when qualified then tag \"x\" }\n}\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(
        handoff(&["check", d]).status.code(),
        Some(0),
        "warnings alone pass"
    );
    assert_eq!(
        handoff(&["check", d, "--deny-warnings"]).status.code(),
        Some(1)
    );
    std::fs::write(
        dir.path().join("w.rules"),
        "playbook w {\n rule r { when nope then tag \"x\" }\n}\n",
    )
    .unwrap();
    let out = handoff(&["check", d, "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["ok"], false);
    let e002 = json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["code"] == "E002")
        .unwrap();
    assert_eq!(e002["line"], 2);
    assert_eq!(e002["column"], 16);
}

#[test]
fn explain_prints_json_for_scripts() {
    let out = handoff(&[
        "explain",
        "--lead",
        "examples/leads/aisha.json",
        "--now",
        "2027-01-10T10:00:00+05:30",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["decision"]["rules"][0], "goa_options");
    assert_eq!(json["decision"]["handoff"]["outcome"], "template");
    assert_eq!(json["trace"]["stopped_by"], "goa_options");
    assert!(json["trace"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["rule"] == "goa_options" && r["result"] == "fired"));
}

//! `jumio-batchd validate` as a user runs it: output and exit status.

mod support;

use std::process::Command;
use support::fixtures::Batch;

fn validate(args: &[&str]) -> (i32, String, String) {
    let out =
        Command::new(env!("CARGO_BIN_EXE_jumio-batchd")).arg("validate").args(args).env_remove("JUMIO_BATCHD_CONFIG").output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn a_valid_batch_exits_zero_with_a_summary() {
    let batch = Batch::valid("batch-2026-11-23", 2);
    let (code, stdout, _) = validate(&[batch.dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.starts_with("batch-2026-11-23: valid: 2 rows, 6 images,"), "{stdout}");
}

#[test]
fn an_invalid_batch_exits_one_and_groups_problems_by_row() {
    let batch = Batch::valid("b", 2).csv(&format!(
        "{}\n{}\n10015,r/2,img/x.png,,,,,,,,,,,,,\n",
        support::fixtures::HEADER,
        support::fixtures::row(1)
    ));
    let (code, stdout, _) = validate(&[batch.dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    let expected_lines = [
        "b: INVALID: 2 rows, 4 images,",
        "row 2 (r/2):",
        "  error   [reference_forbidden_character] customerInternalReference: contains `/`; remove every one of <>\"/;`%{}|",
        "  error   [image_missing] frontImage: no such file in the batch folder;",
    ];
    for line in expected_lines {
        assert!(stdout.lines().any(|l| l.starts_with(line)), "missing {line:?} in\n{stdout}");
    }
}

#[test]
fn json_output_is_the_documented_object() {
    let batch = Batch::valid("b", 1).csv(&format!("{}\n{}\n", support::fixtures::HEADER, support::fixtures::row(1).replace("10015", "x")));
    let (code, stdout, _) = validate(&["--json", batch.dir.to_str().unwrap()]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["batch", "bytes", "errors", "files", "rows", "valid", "warnings"]);
    assert_eq!(
        v["errors"][0],
        serde_json::json!({"row": 1, "column": "workflowDefinitionKey", "code": "invalid_workflow_key", "message": v["errors"][0]["message"]})
    );
    assert_eq!(v["files"], 3);
}

#[test]
fn an_unreadable_folder_or_bad_usage_exits_two() {
    let (code, _, stderr) = validate(&["/nonexistent/batch"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read batch folder /nonexistent/batch"), "{stderr}");
    let (code, _, _) = validate(&[]);
    assert_eq!(code, 2);
}

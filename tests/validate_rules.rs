//! Every batch rule, valid and invalid, asserting row, column and code.

mod support;

use jumio_batchd::validate::{validate, Report};
use support::fixtures::{self, Batch};

type Expected<'a> = &'a [(Option<usize>, Option<&'a str>, &'a str)];

fn report(batch: &Batch) -> Report {
    validate(&batch.dir, Some("DONE")).expect("batch folder readable").report
}

#[track_caller]
fn check(batch: &Batch, errors: Expected, warnings: Expected) {
    let report = report(batch);
    let got = |problems: &[jumio_batchd::validate::Problem]| {
        let mut v: Vec<(Option<usize>, Option<String>, String)> =
            problems.iter().map(|p| (p.row, p.column.clone(), p.code.to_owned())).collect();
        v.sort();
        v
    };
    let want = |expected: Expected| {
        let mut v: Vec<(Option<usize>, Option<String>, String)> =
            expected.iter().map(|(r, c, code)| (*r, c.map(str::to_owned), (*code).to_owned())).collect();
        v.sort();
        v
    };
    assert_eq!(got(&report.errors), want(errors), "errors of {report:#?}");
    assert_eq!(got(&report.warnings), want(warnings), "warnings of {report:#?}");
    assert_eq!(report.valid, errors.is_empty());
    for p in report.errors.iter().chain(&report.warnings) {
        assert!(p.message.len() > 20, "message too vague: {p:?}");
    }
}

/// A batch whose header is the two required columns plus `column`, one row holding `value`.
fn one_value(column: &str, value: &str) -> Batch {
    Batch::new("b").csv(&format!("workflowDefinitionKey,customerInternalReference,{column}\n10015,ref-1,{value}\n"))
}

const MINIMAL: &str = "workflowDefinitionKey,customerInternalReference\n";

#[test]
fn a_complete_batch_is_valid_and_counted() {
    let batch = Batch::valid("good", 3);
    check(&batch, &[], &[]);
    let report = report(&batch);
    assert_eq!((report.batch.as_str(), report.rows, report.files), ("good", 3, 9));
    let on_disk: u64 = walk(&batch.dir).iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    assert_eq!(report.bytes, on_disk);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

#[test]
fn csv_must_be_named_input_csv() {
    check(
        &Batch::new("b").file("batch.csv", MINIMAL.as_bytes()),
        &[(None, None, "csv_wrong_name"), (None, None, "missing_input_csv")],
        &[],
    );
    check(
        &Batch::new("b").file("Input.CSV", MINIMAL.as_bytes()),
        &[(None, None, "csv_wrong_name"), (None, None, "missing_input_csv")],
        &[],
    );
    let both = Batch::new("b").csv(&format!("{MINIMAL}10015,r1\n")).file("old.csv", b"x");
    check(&both, &[(None, None, "csv_wrong_name")], &[]);
    let report = report(&both);
    assert!(report.errors[0].message.contains("1 CSV file(s) not named exactly input.csv"), "{}", report.errors[0].message);
    assert!(!report.errors[0].message.contains("old.csv"), "file names may be personal: counted, never quoted");
}

#[test]
fn encoding_and_excel_shapes_are_errors_with_hints() {
    let bom = Batch::new("b").file("input.csv", format!("\u{feff}{MINIMAL}10015,r1\n").as_bytes());
    check(&bom, &[(None, None, "utf8_bom")], &[]);
    assert!(report(&bom).errors[0].message.contains("Excel"));
    let latin1 =
        Batch::new("b").file("input.csv", b"workflowDefinitionKey,customerInternalReference,preparedData.lastName\n10015,r1,M\xfcller\n");
    check(&latin1, &[(Some(1), Some("preparedData.lastName"), "not_utf8")], &[]);
    let utf16 = Batch::new("b").file("input.csv", b"\xff\xfew\x00f\x00");
    check(&utf16, &[(None, None, "not_utf8")], &[]);
    check(&Batch::new("b").csv("workflowDefinitionKey;customerInternalReference\n10015;r1\n"), &[(None, None, "semicolon_separated")], &[]);
    check(&Batch::new("b").csv(&format!("sep=,\n{MINIMAL}10015,r1\n")), &[(None, None, "excel_sep_line")], &[]);
}

#[test]
fn empty_header_only_and_malformed_files_are_errors() {
    check(&Batch::new("b").csv(""), &[(None, None, "empty_csv")], &[]);
    check(&Batch::new("b").csv(MINIMAL), &[(None, None, "no_rows")], &[]);
    check(
        &Batch::new("b").csv("workflowDefinitionKey,customerInternalReference,customerInternalReference\n10015,r1,r2\n"),
        &[(None, Some("customerInternalReference"), "duplicate_column")],
        &[],
    );
    check(&Batch::new("b").csv(&format!("{MINIMAL}10015,r1\n10015,\"r2\n10015,r3\n")), &[(Some(2), None, "unterminated_quote")], &[]);
    check(
        &Batch::new("b").csv(&format!("{MINIMAL}10015,r1\n10015,r2,extra\n10015\n")),
        &[(Some(2), None, "wrong_field_count"), (Some(3), None, "wrong_field_count")],
        &[],
    );
}

#[test]
fn line_endings_final_newline_and_quoted_commas_are_fine() {
    check(&Batch::new("b").csv("workflowDefinitionKey,customerInternalReference\r\n10015,r1\r\n10015,r2"), &[], &[]);
    check(
        &Batch::new("b")
            .csv("workflowDefinitionKey,customerInternalReference,preparedData.address.line1\n10015,r1,\"12 Main St, Apt 4\"\n"),
        &[],
        &[],
    );
    check(&Batch::new("b").csv("workflowDefinitionKey,customerInternalReference,preparedData.address.line1\n10015,r1,\"two\nlines \"\"quoted\"\"\"\n10015,r2,x\n"), &[], &[]);
}

#[test]
fn at_most_ten_thousand_rows() {
    let rows = |n: usize| (1..=n).map(|i| format!("10015,r{i}\n")).collect::<String>();
    check(&Batch::new("b").csv(&format!("{MINIMAL}{}", rows(10_000))), &[], &[]);
    check(&Batch::new("b").csv(&format!("{MINIMAL}{}", rows(10_001))), &[(None, None, "too_many_rows")], &[]);
}

#[test]
fn required_columns_and_values() {
    check(&Batch::new("b").csv("workflowDefinitionKey\n10015\n"), &[(None, Some("customerInternalReference"), "missing_column")], &[]);
    check(&Batch::new("b").csv("customerInternalReference\nr1\n"), &[(None, Some("workflowDefinitionKey"), "missing_column")], &[]);
    check(
        &Batch::new("b").csv(&format!("{MINIMAL},r1\n10015,\n")),
        &[(Some(1), Some("workflowDefinitionKey"), "missing_value"), (Some(2), Some("customerInternalReference"), "missing_value")],
        &[],
    );
    for bad in ["abc", "0", "-5", "10015.0", " 10015"] {
        check(
            &Batch::new("b").csv(&format!("{MINIMAL}{bad},r1\n")),
            &[(Some(1), Some("workflowDefinitionKey"), "invalid_workflow_key")],
            &[],
        );
    }
}

#[test]
fn customer_internal_reference_rules() {
    let long = "x".repeat(101);
    check(&Batch::new("b").csv(&format!("{MINIMAL}10015,{}\n", "x".repeat(100))), &[], &[]);
    check(
        &Batch::new("b").csv(&format!("{MINIMAL}10015,{long}\n")),
        &[(Some(1), Some("customerInternalReference"), "reference_too_long")],
        &[],
    );
    for c in ["<", ">", "\"\"", "/", ";", "`", "%", "{", "}", "|"] {
        let value = if c == "\"\"" { "\"a\"\"b\"".to_owned() } else { format!("a{c}b") };
        check(
            &Batch::new("b").csv(&format!("{MINIMAL}10015,{value}\n")),
            &[(Some(1), Some("customerInternalReference"), "reference_forbidden_character")],
            &[],
        );
    }
    check(
        &Batch::new("b").csv(&format!("{MINIMAL}10015,r1\n10015,r2\n10015,r1\n")),
        &[],
        &[(Some(3), Some("customerInternalReference"), "duplicate_reference")],
    );
}

#[test]
fn unknown_columns_are_warnings() {
    check(&one_value("customer.nickname", "z"), &[], &[(None, Some("customer.nickname"), "unknown_column")]);
    check(&one_value("nickname", "z"), &[], &[(None, Some("nickname"), "unknown_column")]);
    let report = report(&one_value("FrontImage", ""));
    assert!(report.warnings[0].message.contains("frontImage"), "{:?}", report.warnings);
    check(&one_value("preparedData.address.city", "x"), &[], &[]);
    check(&one_value("preparedData.customField", "x"), &[], &[]);
}

#[test]
fn consent_values() {
    let table: &[(&str, &str, Option<&str>)] = &[
        ("userConsentUserIp", "226.80.211.232", None),
        ("userConsentUserIp", "2001:db8::1", None),
        ("userConsentUserIp", "226.80.211", Some("invalid_ip_address")),
        ("userConsentUserIp", "localhost", Some("invalid_ip_address")),
        ("userConsentUserLocationCountry", "USA", None),
        ("userConsentUserLocationCountry", "US", Some("invalid_country_code")),
        ("userConsentUserLocationCountry", "usa", Some("invalid_country_code")),
        ("userConsentUserLocationState", "IL", None),
        ("userConsentConsentObtained", "yes", None),
        ("userConsentConsentObtained", "no", None),
        ("userConsentConsentObtained", "Yes", Some("invalid_consent_value")),
        ("userConsentConsentObtained", "true", Some("invalid_consent_value")),
        ("userConsentConsentObtainedAt", "2022-07-20T17:20:35.000Z", None),
        ("userConsentConsentObtainedAt", "2022-07-20T17:20:35+02:00", None),
        ("userConsentConsentObtainedAt", "2022-07-20", Some("invalid_timestamp")),
        ("userConsentConsentObtainedAt", "yesterday", Some("invalid_timestamp")),
        ("userConsentConsentObtainedAt", "7/20/2022 17:20", Some("excel_date_format")),
    ];
    check_table(table);
}

#[track_caller]
fn check_table(table: &[(&str, &str, Option<&str>)]) {
    for (column, value, code) in table {
        let errors: Vec<_> = code.iter().map(|code| (Some(1), Some(*column), *code)).collect();
        check(&one_value(column, value), &errors, &[]);
    }
}

#[test]
fn prepared_data_values() {
    let table: &[(&str, &str, Option<&str>)] = &[
        ("preparedData.dateOfBirth", "1990-01-31", None),
        ("preparedData.dateOfBirth", "1992-02-29", None),
        ("preparedData.dateOfBirth", "1990-02-30", Some("invalid_date")),
        ("preparedData.dateOfBirth", "1990-1-31", Some("invalid_date")),
        ("preparedData.dateOfBirth", "01/31/1990", Some("excel_date_format")),
        ("preparedData.dateOfBirth", "31.01.1990", Some("excel_date_format")),
        ("preparedData.expiryDate", "01/31/2030", Some("excel_date_format")),
        ("preparedData.phoneNumber", "+15031234567", None),
        ("preparedData.phoneNumber", "15031234567", None),
        ("preparedData.phoneNumber", "1.5031E+10", Some("excel_scientific_notation")),
        ("preparedData.phoneNumber", "503-123-4567", Some("invalid_phone_number")),
        ("preparedData.phoneNumber", "1234567", Some("invalid_phone_number")),
        ("preparedData.phoneNumber", "+1234567890123456", Some("invalid_phone_number")),
        ("preparedData.idNumber", "1.23457E+11", Some("excel_scientific_notation")),
        ("preparedData.email", "a.b@example.com", None),
        ("preparedData.email", "a.b@example", Some("invalid_email")),
        ("preparedData.email", "a b@example.com", Some("invalid_email")),
        ("preparedData.email", "example.com", Some("invalid_email")),
        ("preparedData.firstName", "", None),
    ];
    check_table(table);
    let report = report(&one_value("preparedData.phoneNumber", "1.5031E+10"));
    assert!(report.errors[0].message.contains("Excel"));
}

#[test]
fn image_paths_must_stay_inside_the_batch() {
    let table: &[(&str, &str)] = &[
        ("/etc/passwd", "image_path_absolute"),
        ("../outside.png", "image_path_outside_batch"),
        ("img/../../outside.png", "image_path_outside_batch"),
        ("img\\front.png", "image_path_backslash"),
        ("missing.png", "image_missing"),
        ("img", "image_not_a_file"),
        ("./img/front.png", "image_path_not_canonical"),
        ("img/./front.png", "image_path_not_canonical"),
        ("img//front.png", "image_path_not_canonical"),
        ("img/", "image_path_not_canonical"),
        ("DONE", "image_named_like_marker"),
        ("done", "image_named_like_marker"),
    ];
    for (path, code) in table {
        let batch = one_value("frontImage", path);
        batch.png("img/front.png", 10, 10);
        check(&batch, &[(Some(1), Some("frontImage"), code)], &[(None, None, "unreferenced_file")]);
    }
}

#[test]
fn symlinks_inside_the_batch_are_followed_and_outside_refused() {
    let batch = one_value("frontImage", "link.png");
    batch.png("real/front.png", 10, 10);
    std::os::unix::fs::symlink("real/front.png", batch.path("link.png")).unwrap();
    check(&batch, &[], &[(None, None, "unreferenced_file")]);

    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.png"), fixtures::png(10, 10)).unwrap();
    let batch = one_value("frontImage", "link.png");
    std::os::unix::fs::symlink(outside.path().join("secret.png"), batch.path("link.png")).unwrap();
    check(&batch, &[(Some(1), Some("frontImage"), "image_outside_batch")], &[]);

    // A linked folder anywhere in the path that leads out is refused too, not only the last part.
    // (The link itself is a file no row names: a warning.)
    let linked_folder = [(None, None, "unreferenced_file")];
    let batch = one_value("frontImage", "imgs/secret.png");
    std::os::unix::fs::symlink(outside.path(), batch.path("imgs")).unwrap();
    check(&batch, &[(Some(1), Some("frontImage"), "image_outside_batch")], &linked_folder);
    let batch = one_value("frontImage", "imgs/secret.png");
    std::os::unix::fs::symlink("../../..", batch.path("imgs")).unwrap();
    check(&batch, &[(Some(1), Some("frontImage"), "image_outside_batch")], &linked_folder);
}

#[test]
fn special_files_are_refused_without_blocking_and_input_csv_never_leaves_the_batch() {
    let fifo = |path: &std::path::Path| {
        rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0).unwrap()
    };
    let batch = one_value("frontImage", "pipe.png");
    fifo(&batch.path("pipe.png"));
    check(&batch, &[(Some(1), Some("frontImage"), "image_not_a_file")], &[]);

    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("input.csv"), MINIMAL.to_owned() + "10015,ref-1\n").unwrap();
    for (target, code) in [
        (outside.path().join("input.csv"), "input_csv_outside_batch"),
        ("/dev/zero".into(), "input_csv_outside_batch"),
        ("".into(), "input_csv_not_a_file"),
    ] {
        let batch = Batch::new("b");
        if target.as_os_str().is_empty() {
            fifo(&batch.path("input.csv"));
        } else {
            std::os::unix::fs::symlink(&target, batch.path("input.csv")).unwrap();
        }
        check(&batch, &[(None, None, code)], &[]);
    }
}

#[test]
fn an_oversized_csv_is_refused_without_reading_it_whole() {
    let batch = Batch::new("b");
    let file = std::fs::File::create(batch.path("input.csv")).unwrap();
    file.set_len(jumio_batchd::validate::MAX_CSV_BYTES * 4).unwrap();
    check(&batch, &[(None, None, "csv_too_large")], &[]);
}

#[test]
fn a_csv_without_its_header_line_is_named_as_such_and_no_value_is_echoed() {
    let row = fixtures::row(1);
    let batch = Batch::new("b").csv(&format!("{row}\n{row}\n"));
    let report = report(&batch);
    assert_eq!(report.errors.iter().map(|p| p.code).collect::<Vec<_>>(), ["missing_header", "missing_column", "missing_column"]);
    let text = serde_json::to_string(&report).unwrap() + &jumio_batchd::validate::render_text(&report);
    for needle in fixtures::PERSONAL.iter().chain(&["203.0.113.7", "ref-00001"]) {
        assert!(!text.contains(needle), "{needle} echoed: {text}");
    }
    // A header with one odd cell: named by its position, never quoted.
    check(&one_value("Jane Doe", "x"), &[], &[(None, Some("#3"), "unknown_column")]);
}

#[test]
fn image_content_size_and_pixels() {
    let cases: Vec<(&str, &str, Vec<u8>, Option<&str>)> = vec![
        ("frontImage", "a.png", fixtures::png(20, 20), None),
        ("frontImage", "a.jpg", fixtures::jpeg(20, 20), None),
        ("frontImage", "a.pdf", b"%PDF-1.7\n...".to_vec(), None),
        ("backImage", "a.pdf", b"%PDF-1.7\n...".to_vec(), None),
        ("faceImage", "a.pdf", b"%PDF-1.7\n...".to_vec(), Some("image_bad_format")),
        ("faceImage", "a.png", b"just text, not an image".to_vec(), Some("image_bad_format")),
        ("faceImage", "a.gif", b"GIF89a........".to_vec(), Some("image_bad_format")),
        ("faceImage", "a.png", Vec::new(), Some("image_empty")),
        ("faceImage", "a.png", fixtures::png_header(8000, 8000), None),
        ("faceImage", "a.png", fixtures::png_header(8001, 10), Some("image_too_many_pixels")),
        ("faceImage", "a.png", fixtures::png_header(10, 9000), Some("image_too_many_pixels")),
        ("faceImage", "a.jpg", b"\xff\xd8\xff\xe0 truncated".to_vec(), Some("image_unreadable")),
        // Dimensions past the first 64 KiB (a big EXIF thumbnail first) are still read.
        ("frontImage", "a.jpg", fixtures::jpeg_with_big_exif(&fixtures::jpeg(20, 20)), None),
        ("faceImage", "a.jpg", fixtures::jpeg_with_big_exif(&fixtures::jpeg_header(8000, 8000)), None),
        ("faceImage", "a.jpg", fixtures::jpeg_with_big_exif(&fixtures::jpeg_header(9000, 10)), Some("image_too_many_pixels")),
        ("faceImage", "a.jpg", fixtures::jpeg_header(10, 8001), Some("image_too_many_pixels")),
    ];
    for (column, name, bytes, code) in cases {
        let batch = one_value(column, name).file(name, &bytes);
        let errors: Vec<_> = code.iter().map(|code| (Some(1), Some(column), *code)).collect();
        check(&batch, &errors, &[]);
    }
    let mut big = fixtures::png(10, 10);
    big.resize(15_000_001, 0);
    check(&one_value("frontImage", "big.png").file("big.png", &big), &[(Some(1), Some("frontImage"), "image_too_large")], &[]);
}

#[test]
fn a_misspelt_case_gets_the_real_name_as_hint() {
    let batch = one_value("frontImage", "IMG/Front.PNG");
    batch.png("img/front.png", 10, 10);
    let report = report(&batch);
    assert_eq!(report.errors[0].code, "image_missing");
    assert!(report.errors[0].message.contains("img/front.png"), "{}", report.errors[0].message);
}

#[test]
fn unreferenced_files_are_warnings_and_the_marker_is_not_one() {
    let batch = Batch::valid("b", 1).file("notes.txt", b"x").file("DONE", b"").file(".hidden", b"x").file("img/Zelda Quixwort.png", b"x");
    check(&batch, &[], &[(None, None, "unreferenced_file")]);
    let warning = &report(&batch).warnings[0].message;
    assert!(warning.starts_with("2 file(s) in the batch folder (1 of them in subfolders)"), "{warning}");
    assert!(!warning.contains("notes") && !warning.contains("Zelda"), "file names may be personal: {warning}");
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let csv = format!(
        "{},nickname\n{}\n10015,,img/nope.png,,,1.2.3,us,,maybe,,,,1.5031E+10,bad,1990-13-01,,x\n",
        fixtures::HEADER,
        fixtures::row(1) + ",x"
    );
    let batch = Batch::valid("b", 1).csv(&csv);
    check(
        &batch,
        &[
            (Some(2), Some("customerInternalReference"), "missing_value"),
            (Some(2), Some("frontImage"), "image_missing"),
            (Some(2), Some("userConsentUserIp"), "invalid_ip_address"),
            (Some(2), Some("userConsentUserLocationCountry"), "invalid_country_code"),
            (Some(2), Some("userConsentConsentObtained"), "invalid_consent_value"),
            (Some(2), Some("preparedData.phoneNumber"), "excel_scientific_notation"),
            (Some(2), Some("preparedData.email"), "invalid_email"),
            (Some(2), Some("preparedData.dateOfBirth"), "invalid_date"),
        ],
        &[(None, Some("nickname"), "unknown_column")],
    );
}

#[test]
fn messages_never_repeat_personal_values() {
    let csv =
        format!("{}\n10015,r1,,,,999.1.1.1,USA,,yes,,Zelda,Quixwort,4.4123E+11,zelda.quixwort@,12/25/1985,Smalltown\n", fixtures::HEADER);
    let report = report(&Batch::new("b").csv(&csv));
    assert!(!report.valid);
    let text = serde_json::to_string(&report).unwrap();
    for needle in ["999.1.1.1", "Zelda", "Quixwort", "4.4123E+11", "zelda.quixwort", "12/25/1985", "Smalltown"] {
        assert!(!text.contains(needle), "{needle} leaked into {text}");
    }
}

#[test]
fn each_file_is_digested_as_it_was_checked_however_large() {
    let padded = |mut image: Vec<u8>, len: usize| {
        image.extend(fixtures::noise(len - image.len(), 3));
        image
    };
    let images = [
        ("a.png", fixtures::png(10, 10)),
        ("b.png", padded(fixtures::png(10, 10), 64 * 1024)),
        ("c.png", padded(fixtures::png(10, 10), 64 * 1024 + 1)),
        ("d.jpg", fixtures::jpeg_with_big_exif(&fixtures::jpeg(20, 20))),
        ("e.png", padded(fixtures::png(10, 10), 3_000_000)),
    ];
    for (name, bytes) in images {
        let batch = one_value("frontImage", name).file(name, &bytes);
        let checked = validate(&batch.dir, Some("DONE")).unwrap();
        assert!(checked.report.valid, "{name}: {:?}", checked.report.errors);
        assert_eq!(checked.sha256[name], jumio_batchd::fingerprint::sha256_hex(&bytes), "{name}");
        let csv = std::fs::read(batch.dir.join("input.csv")).unwrap();
        assert_eq!(checked.sha256["input.csv"], jumio_batchd::fingerprint::sha256_hex(&csv));
    }
}

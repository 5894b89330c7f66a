//! Is a batch folder acceptable to Jumio? Reads the folder (no network, no database) and
//! returns every problem at once, each with its row, column, code and a fix hint.

mod csv_rules;
mod fields;
mod images;
mod problem;
mod report;

pub use csv_rules::{check_csv, CsvCheck, ImageRef, MAX_DATA_ROWS};
pub use images::MAX_IMAGE_BYTES;
pub use problem::{Findings, Problem};
pub use report::render_text;

use crate::batchfs::BatchFile;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub const INPUT_CSV: &str = "input.csv";
/// The file whose arrival starts Jumio's processing of a batch folder: never an image's name.
pub const DONE_FILE: &str = "DONE";
/// input.csv is read only up to this size: 10,000 rows of 5,000 bytes.
pub const MAX_CSV_BYTES: u64 = 50_000_000;

/// The outcome of validation, as `validate --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub batch: String,
    pub valid: bool,
    pub rows: usize,
    pub files: usize,
    pub bytes: u64,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// How a batch over Jumio's row limit is shipped with `[batch] split_over_limit`: one part
    /// per range of rows (empty for a batch within the limit).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<RowRange>,
    /// customerInternalReference of the rows that have problems, to name them in the text report.
    #[serde(skip)]
    pub references: BTreeMap<usize, String>,
}

/// Data rows `first..=last` of input.csv (1-based, as problems name them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowRange {
    pub first: usize,
    pub last: usize,
}

impl RowRange {
    pub fn rows(&self) -> usize {
        self.last + 1 - self.first
    }
}

/// The parts a batch of `rows` data rows is shipped as: in order, each at most Jumio's limit.
pub fn split(rows: usize) -> Vec<RowRange> {
    (1..=rows).step_by(MAX_DATA_ROWS).map(|first| RowRange { first, last: (first + MAX_DATA_ROWS - 1).min(rows) }).collect()
}

/// What the rules allow beyond Jumio's own: the ready marker, and splitting over the row limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules<'a> {
    /// The ready-marker file name: neither shipped nor reported as unreferenced.
    pub marker: Option<&'a str>,
    /// More than 10,000 rows is not an error: the batch is shipped as parts.
    pub split_over_limit: bool,
    /// Read every file whole and take its sha256 (for shipping); without, images are read only
    /// as far as their format and dimensions need (the `validate` command).
    pub digest: bool,
}

/// A checked batch: the report, and what would be shipped (input.csv first, then the images).
#[derive(Debug, Clone)]
pub struct Validated {
    pub report: Report,
    pub files: Vec<BatchFile>,
    /// The sha256 of each of `files`, taken as validation read it: the digest of the check
    /// (empty unless `Rules::digest`).
    pub sha256: BTreeMap<String, String>,
}

/// The folder itself could not be read: nothing about the batch is known.
#[derive(Debug, thiserror::Error)]
#[error("cannot read batch folder {}: {source}; check that it exists and that this user may read it", path.display())]
pub struct Unreadable {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Validates the batch in `dir`. `marker` is the ready-marker file name, which is neither
/// shipped nor reported as unreferenced.
pub fn validate(dir: &Path, marker: Option<&str>) -> Result<Validated, Unreadable> {
    validate_with(dir, Rules { marker, split_over_limit: false, digest: true })
}

/// Validates the batch in `dir` under `rules`.
pub fn validate_with(dir: &Path, rules: Rules<'_>) -> Result<Validated, Unreadable> {
    let marker = rules.marker;
    let unreadable = |source| Unreadable { path: dir.to_path_buf(), source };
    let entries = std::fs::read_dir(dir).map_err(unreadable)?;
    let batch = batch_name(dir);
    let mut findings = Findings::default();
    let mut other_csvs: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != INPUT_CSV && name.to_ascii_lowercase().ends_with(".csv") && !name.starts_with('.'))
        .collect();
    other_csvs.sort();
    // File names may be personal: they are counted, never quoted.
    if !other_csvs.is_empty() {
        findings.error(
            None,
            None,
            "csv_wrong_name",
            format!(
                "the batch folder holds {} CSV file(s) not named exactly input.csv; Jumio accepts only a CSV named input.csv: rename the batch's CSV to input.csv and remove any other",
                other_csvs.len()
            ),
        );
    }
    let csv_bytes = match crate::batchfs::read_capped(dir, INPUT_CSV, MAX_CSV_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if crate::batchfs::is_exhausted(&e) => return Err(unreadable(e)),
        Err(e) => {
            let (code, message) = unreadable_csv(&e);
            findings.error(None, None, code, message);
            return Ok(Validated { report: Report::new(batch, 0, 0, 0, findings), files: Vec::new(), sha256: BTreeMap::new() });
        }
    };
    let mut csv = check_csv(&csv_bytes);
    let parts = if csv.rows > MAX_DATA_ROWS { split(csv.rows) } else { Vec::new() };
    let ranges: Vec<String> = parts.iter().map(|p| format!("rows {}-{}", p.first, p.last)).collect();
    if !rules.split_over_limit {
        for problem in csv.findings.errors.iter_mut().filter(|p| p.code == "too_many_rows") {
            problem.message.push_str(&format!(" (it would be {} parts: {})", parts.len(), ranges.join(", ")));
        }
    } else if !parts.is_empty() {
        csv.findings.errors.retain(|p| p.code != "too_many_rows");
        findings.warning(
            None,
            None,
            "split_into_parts",
            format!(
                "input.csv has {} data rows, more than Jumio's {MAX_DATA_ROWS} per batch; it is shipped as {} parts, in order, each its own batch at Jumio: {}",
                csv.rows,
                parts.len(),
                ranges.join(", ")
            ),
        );
    }
    findings.extend(csv.findings);
    let mut markers = vec![DONE_FILE];
    markers.extend(marker);
    let images = images::check_images(dir, &csv.images, &markers, rules.digest, &mut findings).map_err(unreadable)?;
    let referenced: HashSet<String> = csv.images.iter().map(|i| i.path.clone()).collect();
    let mut ignore = vec![INPUT_CSV];
    ignore.extend(marker);
    ignore.extend(other_csvs.iter().map(String::as_str));
    let unreferenced = images::unreferenced_files(dir, &referenced, &ignore);
    if !unreferenced.is_empty() {
        let folders = unreferenced.iter().filter(|p| p.contains('/')).count();
        findings.warning(
            None,
            None,
            "unreferenced_file",
            format!(
                "{} file(s) in the batch folder ({} of them in subfolders) are named by no row of input.csv and will not be shipped; compare the folder's files with the rows' image columns, then remove them or reference them",
                unreferenced.len(),
                folders
            ),
        );
    }
    let mut files = vec![BatchFile { path: INPUT_CSV.to_owned(), size: csv_bytes.len() as u64, label: INPUT_CSV.to_owned() }];
    files.extend(images.files);
    let mut sha256 = images.sha256;
    if rules.digest {
        sha256.insert(INPUT_CSV.to_owned(), crate::fingerprint::sha256_hex(&csv_bytes));
    }
    let bytes = files.iter().map(|f| f.size).sum();
    let mut report = Report::new(batch, csv.rows, referenced.len(), bytes, findings);
    let mut references = csv.references;
    let named: HashSet<usize> = report.errors.iter().chain(&report.warnings).filter_map(|p| p.row).collect();
    references.retain(|row, _| named.contains(row));
    report.references = references;
    if rules.split_over_limit {
        report.parts = parts;
    }
    Ok(Validated { report, files, sha256 })
}

/// Why input.csv could not be read, as a code and what to do.
fn unreadable_csv(e: &std::io::Error) -> (&'static str, String) {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => (
            "missing_input_csv",
            "the batch has no input.csv; put the transactions' CSV in the batch folder, named exactly input.csv".into(),
        ),
        _ if crate::batchfs::is_outside(e) => (
            "input_csv_outside_batch",
            "input.csv is a link to a file outside the batch folder; put the real file into the folder instead".into(),
        ),
        InvalidInput => (
            "input_csv_not_a_file",
            "input.csv is not a regular file (a folder, FIFO or device); put the CSV file itself into the batch folder".into(),
        ),
        FileTooLarge => (
            "csv_too_large",
            format!(
                "input.csv is larger than {} MB, far more than {MAX_DATA_ROWS} rows need; split it into several batches",
                MAX_CSV_BYTES / 1_000_000
            ),
        ),
        PermissionDenied => {
            ("input_csv_unreadable", "input.csv cannot be read: permission denied; let this user read it (chmod/chown)".into())
        }
        _ => ("input_csv_unreadable", format!("input.csv cannot be read ({e}); copy it into the folder again")),
    }
}

impl Report {
    fn new(batch: String, rows: usize, files: usize, bytes: u64, findings: Findings) -> Report {
        Report {
            batch,
            valid: findings.errors.is_empty(),
            rows,
            files,
            bytes,
            errors: findings.errors,
            warnings: findings.warnings,
            parts: Vec::new(),
            references: BTreeMap::new(),
        }
    }
}

/// The batch's name as shown in reports and logs: its folder's name, control characters escaped.
pub fn batch_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    crate::folders::folder_name(&dir)
}

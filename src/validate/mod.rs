//! Is a batch folder acceptable to Jumio? Reads the folder (no network, no database) and
//! returns every problem at once, each with its row, column, code and a fix hint.

mod csv_rules;
mod fields;
mod images;
mod problem;
mod report;

pub use csv_rules::{check_csv, CsvCheck, ImageRef, MAX_DATA_ROWS};
pub use images::{BatchFile, MAX_IMAGE_BYTES};
pub use problem::{Findings, Problem};
pub use report::render_text;

use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub const INPUT_CSV: &str = "input.csv";
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
    /// customerInternalReference of the rows that have problems, to name them in the text report.
    #[serde(skip)]
    pub references: BTreeMap<usize, String>,
}

/// A checked batch: the report, and what would be shipped (input.csv first, then the images).
#[derive(Debug, Clone)]
pub struct Validated {
    pub report: Report,
    pub files: Vec<BatchFile>,
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
    for name in &other_csvs {
        findings.error(
            None,
            None,
            "csv_wrong_name",
            format!(
                "found `{name}`; Jumio accepts only a CSV named exactly input.csv: rename it (or remove it if it is not the batch's CSV)"
            ),
        );
    }
    let csv_bytes = match crate::batchfs::read_capped(dir, INPUT_CSV, MAX_CSV_BYTES) {
        Ok(bytes) => bytes,
        Err(e) => {
            let (code, message) = unreadable_csv(&e);
            findings.error(None, None, code, message);
            return Ok(Validated { report: Report::new(batch, 0, 0, 0, findings), files: Vec::new() });
        }
    };
    let csv = check_csv(&csv_bytes);
    findings.extend(csv.findings);
    let mut markers = vec![crate::ship::DONE_FILE];
    markers.extend(marker);
    let images = images::check_images(dir, &csv.images, &markers, &mut findings);
    let referenced: HashSet<String> = csv.images.iter().map(|i| i.path.clone()).collect();
    let mut ignore = vec![INPUT_CSV];
    ignore.extend(marker);
    ignore.extend(other_csvs.iter().map(String::as_str));
    for path in images::unreferenced_files(dir, &referenced, &ignore) {
        findings.warning(
            None,
            None,
            "unreferenced_file",
            format!("`{path}` is not named by any row and will not be shipped; remove it or reference it"),
        );
    }
    let mut files = vec![BatchFile { path: INPUT_CSV.to_owned(), size: csv_bytes.len() as u64, label: INPUT_CSV.to_owned() }];
    files.extend(images);
    let bytes = files.iter().map(|f| f.size).sum();
    let mut report = Report::new(batch, csv.rows, referenced.len(), bytes, findings);
    let mut references = csv.references;
    let named: HashSet<usize> = report.errors.iter().chain(&report.warnings).filter_map(|p| p.row).collect();
    references.retain(|row, _| named.contains(row));
    report.references = references;
    Ok(Validated { report, files })
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
            references: BTreeMap::new(),
        }
    }
}

/// The batch's name as shown in reports and logs: its folder's name, control characters escaped.
pub fn batch_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    crate::folders::folder_name(&dir)
}

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
    let csv_path = dir.join(INPUT_CSV);
    let csv_bytes = match std::fs::read(&csv_path) {
        Ok(bytes) => bytes,
        Err(e) => {
            let message = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "the batch has no input.csv; put the transactions' CSV in the batch folder, named exactly input.csv".to_owned()
                }
                _ => format!("input.csv cannot be read ({e}); check its permissions"),
            };
            findings.error(None, None, "missing_input_csv", message);
            return Ok(Validated { report: Report::new(batch, 0, 0, 0, findings), files: Vec::new() });
        }
    };
    let csv = check_csv(&csv_bytes);
    findings.extend(csv.findings);
    let images = images::check_images(dir, &csv.images, &mut findings);
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
    let mut files = vec![BatchFile { path: INPUT_CSV.to_owned(), size: csv_bytes.len() as u64 }];
    files.extend(images);
    let bytes = files.iter().map(|f| f.size).sum();
    let mut report = Report::new(batch, csv.rows, referenced.len(), bytes, findings);
    let mut references = csv.references;
    references.retain(|row, _| report.errors.iter().chain(&report.warnings).any(|p| p.row == Some(*row)));
    report.references = references;
    Ok(Validated { report, files })
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

pub fn batch_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned())
}

//! The validation report as a person reads it: a summary line, then problems grouped by row.

use super::{Problem, Report};
use std::collections::BTreeMap;
use std::fmt::Write;

/// A row is named by its customerInternalReference too, cut to this length.
const REFERENCE_SHOWN_CHARS: usize = 40;

pub fn render_text(report: &Report) -> String {
    let mut text = String::new();
    let verdict = if report.valid { "valid" } else { "INVALID" };
    let _ = writeln!(
        text,
        "{}: {verdict}: {} rows, {} images, {} bytes; {} error(s), {} warning(s)",
        report.batch,
        report.rows,
        report.files,
        report.bytes,
        report.errors.len(),
        report.warnings.len()
    );
    let mut groups: BTreeMap<Option<usize>, Vec<(&str, &Problem)>> = BTreeMap::new();
    for (kind, problems) in [("error", &report.errors), ("warning", &report.warnings)] {
        for problem in problems {
            groups.entry(problem.row).or_default().push((kind, problem));
        }
    }
    for (row, problems) in groups {
        match row {
            None => text.push_str("batch:\n"),
            Some(row) => match report.references.get(&row) {
                Some(reference) => {
                    let shown: String = reference.chars().take(REFERENCE_SHOWN_CHARS).collect();
                    let more = if reference.chars().count() > REFERENCE_SHOWN_CHARS { "…" } else { "" };
                    let _ = writeln!(text, "row {row} ({shown}{more}):");
                }
                None => {
                    let _ = writeln!(text, "row {row}:");
                }
            },
        }
        for (kind, p) in problems {
            let column = p.column.as_deref().map(|c| format!(" {c}:")).unwrap_or_default();
            let _ = writeln!(text, "  {kind:<7} [{}]{column} {}", p.code, p.message);
        }
    }
    text
}

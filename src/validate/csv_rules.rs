//! The structure of `input.csv`: encoding, separator, header, field counts, quotes and row limit,
//! then every value through `fields`. Pure: bytes in, findings out (the fuzz target calls it).

use super::fields::{self, check_value, Column, REFERENCE, WORKFLOW_KEY};
use super::problem::Findings;
use std::collections::{BTreeMap, HashMap, HashSet};

pub const MAX_DATA_ROWS: usize = 10_000;
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One image named by a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub row: usize,
    pub column: String,
    pub path: String,
    pub allows_pdf: bool,
}

/// What the CSV says, once checked.
#[derive(Debug, Default)]
pub struct CsvCheck {
    pub findings: Findings,
    pub rows: usize,
    pub images: Vec<ImageRef>,
    /// Each row's customerInternalReference (not personal data by Jumio's rules), to name rows.
    pub references: BTreeMap<usize, String>,
}

pub fn check_csv(bytes: &[u8]) -> CsvCheck {
    let mut check = CsvCheck::default();
    let out = &mut check.findings;
    let mut body = bytes;
    if let Some(rest) = body.strip_prefix(BOM) {
        out.error(None, None, "utf8_bom", "input.csv starts with a byte-order mark, which Excel's \"CSV UTF-8\" format adds; save as plain UTF-8 without BOM (e.g. in a text editor) and export again");
        body = rest;
    }
    if body.starts_with(b"\xFF\xFE") || body.starts_with(b"\xFE\xFF") {
        out.error(None, None, "not_utf8", "input.csv is UTF-16 (Excel's \"Unicode Text\"); save it as UTF-8 comma-separated values");
        return check;
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        out.error(None, None, "empty_csv", "input.csv is empty; it needs a header row and at least one data row");
        return check;
    }
    if let Some(rest) = strip_sep_line(body) {
        out.error(
            None,
            None,
            "excel_sep_line",
            "input.csv starts with a `sep=` line, which Excel adds; delete that first line so the header comes first",
        );
        body = rest;
    }
    let first_line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    if !first_line.contains(&b',') && first_line.contains(&b';') {
        out.error(None, None, "semicolon_separated", "input.csv is separated by `;` (Excel does this in many locales); fields must be separated by commas: export as \"CSV (Comma delimited)\" or change the list separator");
        return check;
    }
    check_records(body, &mut check);
    check
}

fn strip_sep_line(body: &[u8]) -> Option<&[u8]> {
    let line_end = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let line = &body[..line_end];
    let is_sep = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"sep=");
    is_sep.then(|| &body[(line_end + 1).min(body.len())..])
}

fn check_records(body: &[u8], check: &mut CsvCheck) {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(body);
    let mut records = reader.byte_records();
    let header = match records.next() {
        Some(Ok(record)) => record,
        _ => {
            check.findings.error(None, None, "empty_csv", "input.csv has no header row");
            return;
        }
    };
    let Some(columns) = check_header(&header, &mut check.findings) else { return };
    let mut references: HashMap<String, usize> = HashMap::new();
    let mut record_starts: Vec<usize> = Vec::new();
    let mut rows = 0;
    for (index, record) in records.enumerate() {
        let row = index + 1;
        rows = row;
        match record {
            Ok(record) => {
                record_starts.push(record.position().map_or(0, |p| p.byte() as usize));
                check_row(row, &record, &columns, &mut references, check);
            }
            Err(_) => check.findings.error(
                Some(row),
                None,
                "unreadable_row",
                "this row could not be read as CSV; check its quotes and separators",
            ),
        }
    }
    check.rows = rows;
    check_quotes(body, &record_starts, check);
    if rows == 0 {
        check.findings.error(None, None, "no_rows", "input.csv has a header but no data rows; add one row per transaction");
    }
    if rows > MAX_DATA_ROWS {
        check.findings.error(
            None,
            None,
            "too_many_rows",
            format!("input.csv has {rows} data rows; Jumio accepts at most {MAX_DATA_ROWS} per batch: split it into several batches, or set [batch] split_over_limit = true to have jumio-batchd ship it as parts"),
        );
    }
}

/// Header names with their roles; `None` when the batch cannot be checked further.
fn check_header(header: &csv::ByteRecord, out: &mut Findings) -> Option<Vec<(String, Column)>> {
    let mut columns = Vec::with_capacity(header.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let names: Vec<String> = header.iter().map(|raw| String::from_utf8_lossy(raw).into_owned()).collect();
    // A header cell that is not shaped like a column name may be a value (the header line
    // missing, so the first line is a data row): it is named by its position, never echoed.
    let no_header = ![WORKFLOW_KEY, REFERENCE].iter().any(|required| names.iter().any(|n| n == required))
        && names.iter().any(|n| !n.is_empty() && !fields::looks_like_column_name(n));
    if no_header {
        out.error(None, None, "missing_header", "the first line of input.csv holds values, not column names: the header line is missing; add Jumio's header line (workflowDefinitionKey,customerInternalReference,...) as the first line");
    }
    for (i, raw) in header.iter().enumerate() {
        let position = format!("#{}", i + 1);
        let name = match std::str::from_utf8(raw) {
            Ok(name) => name.to_owned(),
            Err(_) => {
                out.error(None, Some(&position), "not_utf8", "this header name is not valid UTF-8; save input.csv as UTF-8");
                String::from_utf8_lossy(raw).into_owned()
            }
        };
        let label = if !no_header && fields::looks_like_column_name(&name) { name.clone() } else { position };
        if name.trim().is_empty() {
            out.error(
                None,
                Some(&format!("#{}", i + 1)),
                "empty_column_name",
                format!("column {} has no name; name it or delete the column", i + 1),
            );
        } else if name.trim() != name {
            out.error(None, Some(&label), "column_name_whitespace", "this header name has spaces around it; remove them");
        }
        if let Some(first) = seen.insert(name.clone(), i) {
            out.error(
                None,
                Some(&label),
                "duplicate_column",
                format!("the header names this column twice (columns {} and {}); keep one", first + 1, i + 1),
            );
        }
        let column = Column::of(&name);
        if column == Column::Unknown && !name.trim().is_empty() && name.trim() == name && !no_header {
            let hint = match fields::suggest_column(&name) {
                Some(known) => format!("unknown column, ignored by Jumio; did you mean `{known}`?"),
                None if label == name => "unknown column, ignored by Jumio; remove it or check its spelling".to_owned(),
                None => format!("column {} is not a column Jumio knows (its header cell is not shown: it does not look like a column name); remove it or check the header line", i + 1),
            };
            out.warning(None, Some(&label), "unknown_column", hint);
        }
        columns.push((name, column));
    }
    for required in [WORKFLOW_KEY, REFERENCE] {
        if !columns.iter().any(|(name, _)| name == required) {
            out.error(None, Some(required), "missing_column", format!("required column `{required}` is missing from the header; add it"));
        }
    }
    Some(columns)
}

fn check_row(
    row: usize,
    record: &csv::ByteRecord,
    columns: &[(String, Column)],
    references: &mut HashMap<String, usize>,
    check: &mut CsvCheck,
) {
    let out = &mut check.findings;
    // In a row of the wrong shape a value may sit under any column: none is taken as its reference.
    let shaped = record.len() == columns.len();
    if !shaped {
        out.error(Some(row), None, "wrong_field_count", format!("this row has {} fields but the header has {}; quote values that contain commas (\"a, b\") and check for missing or extra commas", record.len(), columns.len()));
    }
    for ((name, column), raw) in columns.iter().zip(record.iter()) {
        let value = match std::str::from_utf8(raw) {
            Ok(value) => value,
            Err(_) => {
                out.error(
                    Some(row),
                    Some(name),
                    "not_utf8",
                    "this value is not valid UTF-8; save input.csv as UTF-8 (in Excel: \"CSV UTF-8\", then remove the byte-order mark)",
                );
                continue;
            }
        };
        if value.is_empty() {
            if matches!(column, Column::WorkflowKey | Column::Reference) {
                out.error(Some(row), Some(name), "missing_value", format!("`{name}` is required in every row; fill it in"));
            }
            continue;
        }
        check_value(*column, name, value, row, out);
        match column {
            Column::Reference if !shaped => {}
            Column::Reference => {
                if looks_personal(value) {
                    out.warning(Some(row), Some(name), "reference_looks_personal", "this customerInternalReference looks like an e-mail address or a phone number; Jumio asks for references without personal data (it is not shown in reports)");
                } else {
                    check.references.insert(row, value.to_owned());
                }
                if let Some(first) = references.insert(value.to_owned(), row) {
                    references.insert(value.to_owned(), first);
                    out.warning(Some(row), Some(name), "duplicate_reference", format!("same customerInternalReference as row {first}; use a unique reference per transaction so results can be told apart"));
                }
            }
            Column::Image { allows_pdf } => {
                check.images.push(ImageRef { row, column: name.clone(), path: value.to_owned(), allows_pdf: *allows_pdf });
            }
            _ => {}
        }
    }
}

/// An e-mail address, or a phone number (digits, a `+`, spaces and dashes, 7 digits or more).
fn looks_personal(value: &str) -> bool {
    let email = value.split_once('@').is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let phone = digits >= 7 && value.chars().all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
    email || phone
}

/// A record whose raw bytes hold an odd number of `"` opened a quote it never closed.
fn check_quotes(body: &[u8], record_starts: &[usize], check: &mut CsvCheck) {
    let mut unterminated = HashSet::new();
    for (i, &start) in record_starts.iter().enumerate() {
        let end = record_starts.get(i + 1).copied().unwrap_or(body.len()).min(body.len());
        let raw = &body[start.min(end)..end];
        if raw.iter().filter(|&&b| b == b'"').count() % 2 == 1 {
            unterminated.insert(i + 1);
        }
    }
    if unterminated.is_empty() {
        return;
    }
    // One pass over the errors, however many rows are affected (linear time).
    check.findings.errors.retain(|p| !(p.code == "wrong_field_count" && p.row.is_some_and(|r| unterminated.contains(&r))));
    let mut rows: Vec<usize> = unterminated.into_iter().collect();
    rows.sort_unstable();
    for row in rows {
        check.findings.error(Some(row), None, "unterminated_quote", "a quote (\") opened in this row is never closed, so the rest of the file was read as one value; close the quote or double quotes inside values (\"\")");
    }
}

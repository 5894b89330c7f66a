//! Batches made of another batch's rows: a part of a batch over Jumio's row limit, or a
//! resubmission from row N. A new input.csv is cut from the original's bytes (the header, then
//! the rows, byte for byte), and a folder is built with it and exactly the images those rows
//! name, read from the original folder through `batchfs` (never from outside it).

use crate::validate::{check_csv, RowRange, INPUT_CSV};
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Component, Path};

#[derive(Debug, thiserror::Error)]
pub enum DeriveError {
    #[error("input.csv has no header and rows that can be read as CSV; validate the batch to see why")]
    Unreadable,
    #[error("there is no row {row}: input.csv has {rows} data rows (row 1 is the first row after the header, as `validate` counts)")]
    NoSuchRow { row: usize, rows: usize },
    #[error("the corrected CSV's header differs from the original's (first difference in column {column}); keep the original header line and fix only the rows")]
    OtherHeader { column: usize },
}

/// Where each data row of a CSV begins, and where its header ends (both byte offsets).
struct Rows {
    header_end: usize,
    starts: Vec<usize>,
    header: Vec<Vec<u8>>,
}

fn rows(csv: &[u8]) -> Result<Rows, DeriveError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(csv);
    let mut records = reader.byte_records();
    let header = records.next().and_then(Result::ok).ok_or(DeriveError::Unreadable)?;
    let mut starts = Vec::new();
    for record in records {
        let record = record.map_err(|_| DeriveError::Unreadable)?;
        // The csv reader counts the \n of a \r\n (and blank lines) into the next record.
        let mut start = record.position().map_or(0, |p| p.byte() as usize);
        while matches!(csv.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        starts.push(start);
    }
    let header_end = starts.first().copied().unwrap_or(csv.len());
    Ok(Rows { header_end, starts, header: header.iter().map(<[u8]>::to_vec).collect() })
}

/// The number of data rows of a CSV.
pub fn data_rows(csv: &[u8]) -> Result<usize, DeriveError> {
    Ok(rows(csv)?.starts.len())
}

/// The header line, then data rows `range` of `csv`, each byte as it was.
pub fn cut(csv: &[u8], range: RowRange) -> Result<Vec<u8>, DeriveError> {
    let rows = rows(csv)?;
    let count = rows.starts.len();
    if range.first == 0 || range.first > count || range.last > count {
        return Err(DeriveError::NoSuchRow { row: if range.first > count { range.first } else { range.last }, rows: count });
    }
    let from = rows.starts[range.first - 1];
    let to = rows.starts.get(range.last).copied().unwrap_or(csv.len());
    let mut out = csv[..rows.header_end].to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(&csv[from..to]);
    Ok(out)
}

/// Checks that `fixed` has the same header as `original` (a corrected copy of its CSV).
pub fn same_header(original: &[u8], fixed: &[u8]) -> Result<(), DeriveError> {
    let (a, b) = (rows(original)?.header, rows(fixed)?.header);
    match (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        Some(i) => Err(DeriveError::OtherHeader { column: i + 1 }),
        None => Ok(()),
    }
}

/// Builds a batch folder at `to` (created; must not exist): `csv` as its input.csv and every
/// image it names copied from `from`. An image that cannot be read there is left out, for
/// validation to report by row and column; a path that would leave the folder is never followed.
pub fn build(from: &Path, csv: &[u8], to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    write_new(&to.join(INPUT_CSV), csv)?;
    let images: BTreeSet<String> = check_csv(csv).images.into_iter().map(|i| i.path).collect();
    let source_dir = crate::batchfs::BatchDir::open(from);
    for path in images {
        if !Path::new(&path).components().all(|c| matches!(c, Component::Normal(_))) {
            continue;
        }
        let Some(Ok(opened)) = source_dir.as_ref().ok().map(|dir| dir.file(&path)) else { continue };
        let mut source = opened.file;
        let target = to.join(&path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut copy = std::fs::OpenOptions::new().write(true).create_new(true).open(&target)?;
        // copy_file_range underneath: a reflink or an in-kernel copy where the filesystem can.
        std::io::copy(&mut source, &mut copy)?;
        copy.sync_all()?;
    }
    Ok(())
}

/// Rebuilds `to` from scratch: whatever an interrupted build left there is removed first.
pub fn rebuild(from: &Path, csv: &[u8], to: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(to) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    build(from, csv, to)
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &[u8] = b"a,b\r\n1,\"x\ny\"\r\n2,z\r\n3,w";

    #[test]
    fn a_cut_is_the_header_and_the_rows_byte_for_byte_quoted_newlines_included() {
        assert_eq!(data_rows(CSV).unwrap(), 3);
        assert_eq!(cut(CSV, RowRange { first: 1, last: 1 }).unwrap(), b"a,b\r\n1,\"x\ny\"\r\n");
        assert_eq!(cut(CSV, RowRange { first: 2, last: 3 }).unwrap(), b"a,b\r\n2,z\r\n3,w");
        assert_eq!(cut(CSV, RowRange { first: 3, last: 3 }).unwrap(), b"a,b\r\n3,w");
        assert!(matches!(cut(CSV, RowRange { first: 4, last: 4 }), Err(DeriveError::NoSuchRow { row: 4, rows: 3 })));
        assert!(matches!(cut(CSV, RowRange { first: 0, last: 2 }), Err(DeriveError::NoSuchRow { .. })));
    }

    #[test]
    fn a_corrected_csv_must_keep_the_header() {
        assert!(same_header(CSV, b"a,b\n9,9\n").is_ok());
        assert!(matches!(same_header(CSV, b"a,c\n9,9\n"), Err(DeriveError::OtherHeader { column: 2 })));
        assert!(matches!(same_header(CSV, b"a,b,c\n9,9,9\n"), Err(DeriveError::OtherHeader { column: 3 })));
    }

    #[test]
    fn a_built_folder_holds_the_csv_and_only_the_images_its_rows_name_never_one_from_outside() {
        let top = tempfile::tempdir().unwrap();
        let from = top.path().join("orig");
        std::fs::create_dir_all(from.join("img")).unwrap();
        for name in ["1.png", "2.png"] {
            std::fs::write(from.join("img").join(name), name).unwrap();
        }
        std::fs::write(top.path().join("secret.png"), b"outside").unwrap();
        std::os::unix::fs::symlink("../secret.png", from.join("img/3.png")).unwrap();
        let csv =
            b"workflowDefinitionKey,customerInternalReference,frontImage\n10015,r2,img/2.png\n10015,r3,img/3.png\n10015,r4,../secret.png\n";
        let to = top.path().join("built");
        build(&from, csv, &to).unwrap();
        assert_eq!(std::fs::read(to.join("input.csv")).unwrap(), csv);
        assert_eq!(std::fs::read(to.join("img/2.png")).unwrap(), b"2.png");
        assert!(!to.join("img/1.png").exists(), "a row not in the cut brings no image");
        assert!(!to.join("img/3.png").exists(), "a link leading out of the folder is not followed");
        assert_eq!(std::fs::read(top.path().join("secret.png")).unwrap(), b"outside", "nothing written outside");
        rebuild(&from, csv, &to).unwrap();
        assert_eq!(std::fs::read_dir(to.join("img")).unwrap().count(), 1);
    }
}

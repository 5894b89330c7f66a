//! `resubmit`: Jumio stopped a batch at a row; a new batch holds the rows from there down (of
//! the copy kept in done/ or failed/, or of a corrected CSV with the same header) and exactly
//! the images they name. It is built in work/ under its own record, linked to the original,
//! then worked like any batch: its own UUID, DONE last, filed into done/. The same
//! resubmission asked for again resumes (or answers "already submitted"), never ships twice.

use super::{Guard, Lifecycle, LifecycleError, Outcome};
use crate::batch::{Kind, State};
use crate::derive::{self, DeriveError};
use crate::folders::{claimed_name, rename_no_replace};
use crate::store::{BatchRecord, Origin};
use crate::telemetry::blocking;
use crate::validate::{RowRange, INPUT_CSV, MAX_CSV_BYTES};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ResubmitError {
    #[error("batch {name} (id {id}) is {state}; only a submitted batch (or a failed one) can be resubmitted{hint}")]
    NotShipped { name: String, id: i64, state: State, hint: &'static str },
    #[error("the copy of batch {name} (id {id}) that resubmit builds from is gone ({path}); restore that folder, or drop a new batch holding the rows to send")]
    CopyGone { name: String, id: i64, path: String },
    #[error("the copy of batch {name} (id {id}) kept in {path} is not what was shipped: {files} differ{hint}; restore the copy as it was shipped (or give the corrected rows with --csv), or drop the rows as a new batch")]
    Tampered { name: String, id: i64, path: String, files: String, hint: String },
    #[error("cannot read input.csv of batch {name} in {path}: {source}")]
    Unreadable { name: String, path: String, source: std::io::Error },
    #[error("{0}")]
    Rows(#[from] DeriveError),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// A resubmission ready to be worked (in work/, its lock held), or the answer already.
// One value per command run: its size does not matter, boxing would only add noise.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Prepared {
    Ready { record: BatchRecord, dir: PathBuf, lock: Guard },
    Finished(Box<Outcome>),
}

impl Lifecycle {
    /// Builds the resubmission of `original` from data row `from_row` (1-based, as `validate`
    /// counts), of its own input.csv or of `fixed`, into `work`.
    pub async fn resubmission(
        &self,
        original: &BatchRecord,
        from_row: usize,
        fixed: Option<Vec<u8>>,
        work: &Path,
    ) -> Result<Prepared, ResubmitError> {
        let kept = self.rows_of(original).await?;
        let (folder, own_csv) = (kept.folder.clone(), kept.csv.clone());
        let base = match fixed {
            Some(fixed) => {
                derive::same_header(&own_csv, &fixed)?;
                fixed
            }
            None => {
                kept.verify_csv(original)?;
                own_csv
            }
        };
        let rows = derive::data_rows(&base)?;
        let range = RowRange { first: from_row, last: rows };
        let cut = derive::cut(&base, range)?;
        let name = format!("{}.from-row-{from_row}", original.name);
        let host = crate::lifecycle::lock::this_host();
        sweep_builds(work, original.id, &host).await;
        let built = work.join(format!("{}{}.tmp", build_prefix(original.id, &host), std::process::id()));
        let (from, to, bytes) = (folder.clone(), built.clone(), cut);
        blocking(move || derive::rebuild(&from, &bytes, &to)).await.map_err(|source| LifecycleError::Build {
            what: format!("the resubmission from row {from_row}"),
            name: original.name.clone(),
            folder: built.clone(),
            source,
        })?;
        let checked = self.validate(&built).await?;
        if let Err(tampered) = kept.verify_images(original, &checked, from_row) {
            let _ = blocking({
                let built = built.clone();
                move || std::fs::remove_dir_all(built)
            })
            .await;
            return Err(tampered);
        }
        let (key, _) = super::digest(&checked);
        let remove_built = || {
            let built = built.clone();
            blocking(move || std::fs::remove_dir_all(built))
        };
        let earlier = self.store.children(original.id).await?.into_iter().rev().find(|c| {
            c.origin.kind == Some(Kind::Resubmission)
                && c.origin.first_row == Some(from_row as i64)
                && c.content_key == key
                && !key.is_empty()
                && c.state != State::Rejected
        });
        let (record, dir, held) = match earlier {
            Some(record) if record.state == State::Submitted => {
                let _ = remove_built().await;
                let receipt = self.stored_receipt(&record).await?;
                return Ok(Prepared::Finished(Box::new(Outcome::AlreadySubmitted { record, receipt })));
            }
            Some(record) => {
                let dir = work.join(claimed_name(record.id, &record.name));
                (record, dir, None)
            }
            None => {
                let route = self.route(original)?;
                let mut origin = Origin::made_from(original, Kind::Resubmission, from_row, rows, None);
                origin.tenant = origin.tenant.or_else(|| Some(route.tenant()));
                let (record, guard) = self.record_claim(&name, &origin, work).await?;
                // Its content now, before its folder moves into place: asked again after a crash
                // in between, the same resubmission is found by it and resumed, never made twice.
                let _recorded = self.store.record_contents(record.id, &super::contents_of(&key, &checked)).await?;
                crate::failpoint::hit("after_resubmit_record");
                let dir = PathBuf::from(&record.source_path);
                (record, dir, Some(guard))
            }
        };
        let held = match held {
            Some(guard) => Ok(guard),
            None => self.hold(record.id).await?,
        };
        let lock = match held {
            Ok(lock) => lock,
            Err(holder) => {
                let _ = remove_built().await;
                return Ok(Prepared::Finished(Box::new(Outcome::Busy { record, holder })));
            }
        };
        // Under the lock: the folder of an unfinished resubmission is kept as it is (its record
        // knows its content); a new one moves into place.
        let there = {
            let dir = dir.clone();
            blocking(move || dir.is_dir()).await
        };
        if there {
            let _ = remove_built().await;
        } else {
            let (from, to) = (built.clone(), dir.clone());
            blocking(move || rename_no_replace(&from, &to)).await.map_err(|source| LifecycleError::Build {
                what: "the resubmission's folder in work/".into(),
                name: original.name.clone(),
                folder: dir.clone(),
                source,
            })?;
        }
        Ok(Prepared::Ready { record, dir, lock })
    }

    /// The folder a finished batch's rows are read from, and its input.csv (a part's: its rows
    /// of the batch it was cut from), with the digests recorded of what was checked and shipped.
    async fn rows_of(&self, original: &BatchRecord) -> Result<Kept, ResubmitError> {
        if !matches!(original.state, State::Submitted | State::Failed) {
            let hint = match original.state {
                State::Rejected => ": a rejected batch never reached Jumio; fix it and drop it into the inbox again",
                _ => ": wait until it is finished (see `jumio-batchd status`)",
            };
            return Err(ResubmitError::NotShipped { name: original.name.clone(), id: original.id, state: original.state, hint });
        }
        if let (Some(Kind::Part), Some(parent)) = (original.origin.kind, original.origin.parent_id) {
            let batch = self.store.get(parent).await?.ok_or(LifecycleError::NoRecord { id: parent })?;
            let mut kept = Box::pin(self.rows_of(&batch)).await?;
            let range =
                RowRange { first: original.origin.first_row.unwrap_or(1) as usize, last: original.origin.last_row.unwrap_or(1) as usize };
            // The whole batch's input.csv is checked against its record before a part is cut from it.
            kept.verify_csv(&batch)?;
            kept.csv = derive::cut(&kept.csv, range)?;
            kept.csv_verified = true;
            return Ok(kept);
        }
        // The daemon's copy is where it filed it; `send`'s is the folder it was sent from.
        let kept = original.filed_path.clone().unwrap_or_else(|| original.source_path.clone());
        let folder = PathBuf::from(&kept);
        if !blocking({
            let folder = folder.clone();
            move || folder.is_dir()
        })
        .await
        {
            return Err(ResubmitError::CopyGone { name: original.name.clone(), id: original.id, path: kept });
        }
        let at = folder.clone();
        let csv = blocking(move || crate::batchfs::read_capped(&at, INPUT_CSV, MAX_CSV_BYTES))
            .await
            .map_err(|source| ResubmitError::Unreadable { name: original.name.clone(), path: kept.clone(), source })?;
        let digests = self.store.checked_hashes(original.id).await?;
        Ok(Kept { folder, csv, digests, csv_verified: false })
    }
}

/// The copy of a finished batch that a resubmission is built from, and what its record says
/// each file was when it was checked and shipped.
struct Kept {
    folder: PathBuf,
    csv: Vec<u8>,
    digests: std::collections::BTreeMap<String, String>,
    /// `csv` is a part's rows cut from a whole input.csv already compared with its record.
    csv_verified: bool,
}

impl Kept {
    /// The kept input.csv is the one that was checked and shipped.
    fn verify_csv(&self, original: &BatchRecord) -> Result<(), ResubmitError> {
        if self.csv_verified || self.digests.get(INPUT_CSV) == Some(&crate::fingerprint::sha256_hex(&self.csv)) {
            return Ok(());
        }
        Err(self.tampered(original, vec![INPUT_CSV.to_owned()], String::new()))
    }

    /// Every image of the built resubmission is one that was checked and shipped, byte for byte.
    fn verify_images(&self, original: &BatchRecord, built: &crate::validate::Validated, from_row: usize) -> Result<(), ResubmitError> {
        let differ: Vec<String> = built
            .files
            .iter()
            .filter(|f| f.path != INPUT_CSV)
            .filter(|f| built.sha256.get(&f.path).is_none_or(|now| self.digests.get(&f.path) != Some(now)))
            .map(|f| f.label.clone())
            .collect();
        if differ.is_empty() {
            return Ok(());
        }
        let hint = format!(" (rows as the resubmission counts them: its row 1 is row {from_row} of {})", original.name);
        Err(self.tampered(original, differ, hint))
    }

    fn tampered(&self, original: &BatchRecord, files: Vec<String>, hint: String) -> ResubmitError {
        const SHOWN: usize = 5;
        let mut shown = files.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if files.len() > SHOWN {
            shown.push_str(&format!(" and {} more", files.len() - SHOWN));
        }
        ResubmitError::Tampered {
            name: original.name.clone(),
            id: original.id,
            path: self.folder.display().to_string(),
            files: shown,
            hint,
        }
    }
}

/// The start of the name a resubmission of batch `id` is built under in work/ on `host`; the
/// builder's PID follows. Hidden (a dot-name), so no scan takes it for a batch.
fn build_prefix(id: i64, host: &str) -> String {
    format!(".resubmit-{id}-{host}-")
}

/// Removes the builds of resubmissions of batch `id` that a process of this host, now dead,
/// left in work/ (killed between building and moving the folder into place).
async fn sweep_builds(work: &Path, id: i64, host: &str) {
    let (work, prefix) = (work.to_path_buf(), build_prefix(id, host));
    blocking(move || {
        for entry in std::fs::read_dir(&work).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".tmp")).and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|pid| !crate::lifecycle::lock::alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    })
    .await
}

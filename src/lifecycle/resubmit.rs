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
        let (folder, own_csv) = self.rows_of(original).await?;
        let base = match fixed {
            Some(fixed) => {
                derive::same_header(&own_csv, &fixed)?;
                fixed
            }
            None => own_csv,
        };
        let rows = derive::data_rows(&base)?;
        let range = RowRange { first: from_row, last: rows };
        let cut = derive::cut(&base, range)?;
        let name = format!("{}.from-row-{from_row}", original.name);
        let built = work.join(format!(".resubmit-{}-{}.tmp", original.id, std::process::id()));
        let (from, to, bytes) = (folder.clone(), built.clone(), cut);
        blocking(move || derive::rebuild(&from, &bytes, &to)).await.map_err(|source| LifecycleError::Build {
            what: format!("the resubmission from row {from_row}"),
            name: original.name.clone(),
            folder: built.clone(),
            source,
        })?;
        let checked = self.validate(&built).await?;
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
        if dir.is_dir() {
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
    /// of the batch it was cut from).
    async fn rows_of(&self, original: &BatchRecord) -> Result<(PathBuf, Vec<u8>), ResubmitError> {
        if !matches!(original.state, State::Submitted | State::Failed) {
            let hint = match original.state {
                State::Rejected => ": a rejected batch never reached Jumio; fix it and drop it into the inbox again",
                _ => ": wait until it is finished (see `jumio-batchd status`)",
            };
            return Err(ResubmitError::NotShipped { name: original.name.clone(), id: original.id, state: original.state, hint });
        }
        if let (Some(Kind::Part), Some(parent)) = (original.origin.kind, original.origin.parent_id) {
            let batch = self.store.get(parent).await?.ok_or(LifecycleError::NoRecord { id: parent })?;
            let (folder, csv) = Box::pin(self.rows_of(&batch)).await?;
            let range =
                RowRange { first: original.origin.first_row.unwrap_or(1) as usize, last: original.origin.last_row.unwrap_or(1) as usize };
            return Ok((folder, derive::cut(&csv, range)?));
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
        Ok((folder, csv))
    }
}

//! A batch over Jumio's row limit (`[batch] split_over_limit`), shipped as parts: in order, each
//! part its own record, folder (its rows and exactly their images, built from the batch as it was
//! checked), UUID and DONE, each exactly once. After a crash or a failure the parts already
//! submitted are kept and the next one resumes into its own UUID.

use super::{contents_of, Claim, Lifecycle, LifecycleError, Outcome};
use crate::batch::{Kind, State};
use crate::derive;
use crate::fingerprint;
use crate::receipt::Receipt;
use crate::store::{BatchRecord, Change, Origin};
use crate::telemetry::blocking;
use crate::validate::{RowRange, INPUT_CSV, MAX_CSV_BYTES};
use std::path::PathBuf;
use std::time::Instant;

impl Lifecycle {
    /// True when the checked batch is shipped as parts.
    pub(super) fn in_parts(&self, claim: &Claim) -> bool {
        self.split_over_limit && !claim.checked.report.parts.is_empty()
    }

    /// Ships every part not yet submitted, in order; the batch is submitted once all are.
    pub(super) async fn ship_parts(&self, batch: BatchRecord, claim: &Claim) -> Result<Outcome, LifecycleError> {
        let started = Instant::now();
        let ranges = claim.checked.report.parts.clone();
        let root = claim.dir.clone();
        let csv = match blocking(move || crate::batchfs::read_capped(&root, INPUT_CSV, MAX_CSV_BYTES)).await {
            Ok(csv) => csv,
            Err(e) => return self.fail(batch, &format!("cannot read input.csv again to cut it into parts ({e})")).await,
        };
        if claim.digests.get(INPUT_CSV) != Some(&fingerprint::sha256_hex(&csv)) {
            return self.fail(batch, CHANGED).await;
        }
        let staging = self.staging.join(batch.id.to_string());
        for (i, range) in ranges.iter().enumerate() {
            let number = i as i64 + 1;
            let existing = self.store.part(batch.id, number).await?;
            if existing.as_ref().is_some_and(|p| p.state == State::Submitted) {
                continue;
            }
            if self.tasks.is_stopping() {
                return Ok(Outcome::Interrupted { record: batch });
            }
            let name = format!("{}.part-{number}-of-{}", batch.name, ranges.len());
            let folder = staging.join(&name);
            let cut = derive::cut(&csv, *range)?;
            let (from, to) = (claim.dir.clone(), folder.clone());
            blocking(move || derive::rebuild(&from, &cut, &to)).await.map_err(|source| LifecycleError::Build {
                what: format!("part {number}"),
                name: batch.name.clone(),
                folder: folder.clone(),
                source,
            })?;
            let part = Part { number, of: ranges.len(), range: *range, name, folder };
            let outcome = self.ship_part(&batch, existing, &part, claim).await?;
            let why = |record: &BatchRecord| format!("{}: {}", part.describe(), record.last_error.as_deref().unwrap_or("unknown"));
            match outcome {
                Outcome::Submitted { .. } | Outcome::AlreadySubmitted { .. } => {
                    let folder = part.folder.clone();
                    let _ = blocking(move || std::fs::remove_dir_all(folder)).await;
                    crate::failpoint::hit("between_parts");
                }
                Outcome::RetryWait { record } => {
                    let change = Change { last_error: Some(why(&record)), next_attempt_at: record.next_attempt_at, ..Change::default() };
                    let moved = self.store.transition(batch.id, State::Uploading, State::RetryWait, change).await?;
                    return Ok(Outcome::RetryWait { record: moved.unwrap_or(batch) });
                }
                Outcome::Interrupted { .. } => return Ok(Outcome::Interrupted { record: batch }),
                Outcome::Busy { holder, .. } => return Ok(Outcome::Busy { record: batch, holder }),
                Outcome::Failed { record } | Outcome::Rejected { record, .. } | Outcome::Duplicate { record, .. } => {
                    return self.fail(batch, &why(&record)).await;
                }
            }
        }
        let hashes = claim.digests.clone();
        if !self.store.record_shipped(batch.id, &hashes).await? {
            return self.moved_elsewhere(batch).await;
        }
        let change = Change { fingerprint: Some(fingerprint::fingerprint(&claim.checked.files, &hashes)), ..Change::default() };
        let moved = self.store.transition(batch.id, State::Uploading, State::Submitted, change).await?.unwrap_or(batch);
        let _ = blocking(move || std::fs::remove_dir_all(staging)).await;
        let receipt = Receipt::of(&moved, hashes, started.elapsed().as_secs_f64(), false);
        let receipt = self.linked(&moved, receipt).await?;
        Ok(Outcome::Submitted { record: moved, receipt })
    }

    /// One part, from its freshly built folder: recorded (or found), checked against what the
    /// batch's check saw, then one upload attempt into its own UUID.
    async fn ship_part(
        &self,
        batch: &BatchRecord,
        existing: Option<BatchRecord>,
        part: &Part,
        claim: &Claim,
    ) -> Result<Outcome, LifecycleError> {
        let mut checked = self.validate(&part.folder).await?;
        checked.report.batch = part.name.clone();
        let (key, digests) = super::digest(&checked);
        // What a part ships must be what the batch's check saw, file by file.
        let changed = digests.iter().any(|(path, sha)| path != INPUT_CSV && claim.digests.get(path) != Some(sha));
        if !checked.report.valid || changed || existing.as_ref().is_some_and(|p| p.content_key != key) {
            let codes: Vec<&str> = checked.report.errors.iter().map(|e| e.code).collect();
            let reason =
                format!("{} could not be built from the batch as it was checked ({}); {CHANGED}", part.describe(), codes.join(", "));
            let failed = self.fail(batch.clone(), &reason).await?;
            return Ok(failed);
        }
        let record = match existing {
            Some(record) => record,
            None => {
                let origin = Origin::made_from(batch, Kind::Part, part.range.first, part.range.last, Some(part.number));
                let source = part.folder.display().to_string();
                self.store.insert(&part.name, &source, &origin, &contents_of(&key, &checked)).await?
            }
        };
        let guard = match self.hold(record.id).await? {
            Ok(guard) => guard,
            Err(holder) => return Ok(Outcome::Busy { record, holder }),
        };
        let record = match record.state {
            State::Discovered | State::Failed => {
                self.store.transition(record.id, record.state, State::Validated, Change::default()).await?.unwrap_or(record)
            }
            _ => record,
        };
        let mut claim = Claim { record, dir: part.folder.clone(), checked, digests, guard: std::sync::Arc::new(guard) };
        // The batch's duplicate guard covered its parts: one part is never refused for another.
        self.attempt(&mut claim, true).await
    }
}

const CHANGED: &str = "the batch folder changed after it was validated; drop the corrected batch into the inbox as a new batch";

/// One part being shipped.
struct Part {
    number: i64,
    of: usize,
    range: RowRange,
    name: String,
    folder: PathBuf,
}

impl Part {
    fn describe(&self) -> String {
        format!("part {} of {} (rows {}-{})", self.number, self.of, self.range.first, self.range.last)
    }
}

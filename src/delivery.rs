//! What the lifecycle needs from a delivery channel, as one small interface: deliver a
//! validated batch into the remote identity its record committed, resuming whatever an earlier
//! attempt left there, the channel's DONE last, and say how it went. SFTP (`ship/`) is one
//! channel; the lifecycle knows none of their insides.
//! **Invariant:** a channel writes for a batch only while its `Fence` holds, checked right before
//! each write leaves; its DONE comes only after everything else was delivered and verified.

use crate::batchfs::BatchFile;
use crate::store::BatchRecord;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One delivery attempt of a batch: its record (with the remote identity committed before the
/// call), its folder and exactly the files and digests that were checked.
pub struct Job {
    pub record: BatchRecord,
    pub dir: PathBuf,
    pub files: Vec<BatchFile>,
    /// The sha256 of each file as it was checked: what is delivered must be these bytes.
    pub digests: BTreeMap<String, String>,
    /// The remote identity was chosen by this attempt: nothing of it can exist yet.
    pub fresh: bool,
    pub progress: Arc<Progress>,
    /// Ends the delivery at its next safe point, before DONE.
    pub stop: CancellationToken,
    /// What lets this process go on writing for the batch (fleet mode: its lease).
    pub fence: Arc<dyn Fence>,
}

/// What a delivery left at the tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Where it is, as the tenant sees it (SFTP: `remote_dir/UUID` from the tenant's home).
    pub remote_dir: String,
    /// The sha256 of every file delivered (or found delivered by an earlier attempt).
    pub files_sha256: BTreeMap<String, String>,
    /// Files sent by this attempt; the rest were there already.
    pub uploaded: usize,
    /// Its DONE was there already: delivered before (by a run that crashed after it).
    pub already_submitted: bool,
}

/// How a delivery ended short of its DONE.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("stopped before DONE: shutdown requested")]
    Interrupted,
    #[error("stopped before DONE: this host's lease on the batch ran out (a pause, or the database out of reach); another host may finish it into the same folder")]
    LeaseLost,
    /// Anything else, with whether trying again later can help.
    #[error("{reason}")]
    Failed { reason: String, permanent: bool },
    /// This host ran short (descriptors, memory): tried again later, and not counted as an
    /// attempt, since nothing is wrong with the batch or its tenant.
    #[error("this host ran short of descriptors or memory ({0}); trying again later")]
    HostShort(String),
}

/// A delivery under way.
pub type Delivering<'a> = Pin<Box<dyn Future<Output = Result<Delivered, DeliveryError>> + Send + 'a>>;

/// A way to Jumio for one route's tenant.
pub trait Channel: Send + Sync {
    /// Delivers `job` into its remote identity, resuming what an earlier attempt of the same
    /// record left there; DONE only after every file was delivered and verified.
    fn deliver(&self, job: Job) -> Delivering<'_>;
    /// Where a batch recorded under `uuid` lives at this tenant (SFTP: its folder): a record
    /// bound to another place is not resumed here.
    fn remote_dir(&self, uuid: &str) -> String;
}

/// Live counters a caller may read while a delivery runs (a progress bar, the state database,
/// metrics). Files and bytes kept from an earlier attempt count as done.
#[derive(Debug, Default)]
pub struct Progress {
    pub bytes_sent: AtomicU64,
    pub files_done: AtomicU64,
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
}

/// What lets a delivery go on writing: in fleet mode the batch's lease (`lifecycle::Lease`),
/// else nothing (`Unfenced`). Checked right before every write leaves.
pub trait Fence: Send + Sync {
    /// This process may still write for the batch.
    fn holds(&self) -> bool;
    /// Renews the hold now: true when it lasts long enough for DONE to reach the server.
    fn confirm(&self) -> bool;
}

/// A delivery no other process can take over (one host: the batch's kernel lock).
pub struct Unfenced;

impl Fence for Unfenced {
    fn holds(&self) -> bool {
        true
    }
    fn confirm(&self) -> bool {
        true
    }
}

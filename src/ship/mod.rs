//! SFTP, the first delivery channel: sessions to the tenant's server and the upload of one batch
//! into its UUID folder, DONE last (`Sftp`, a `delivery::Channel`).
//! **Invariant:** only this module knows ssh2.

mod channel;
mod crew;
mod error;
mod folder;
mod pipeline;
mod pool;
mod quickack;
mod session;
mod upload;
mod wire;

pub use error::ShipError;
pub use folder::{probe, remote_join};
pub use pool::Pool;
pub use session::{check_private_key, Connection};
pub use upload::{ship, Shipment, Shipping};

use crate::config::SftpConfig;
use crate::delivery::{Channel, Delivered, Delivering, DeliveryError, Fence, Job};
use std::sync::Arc;

/// The SFTP channel of one route: its server, and the connections kept between batches.
pub struct Sftp {
    cfg: SftpConfig,
    pool: Arc<Pool>,
}

impl Sftp {
    pub fn new(cfg: SftpConfig, pool: Arc<Pool>) -> Sftp {
        Sftp { cfg, pool }
    }
}

impl Channel for Sftp {
    fn deliver(&self, job: Job) -> Delivering<'_> {
        let (cfg, pool) = (self.cfg.clone(), self.pool.clone());
        Box::pin(async move {
            let uuid = job.record.remote_uuid.clone().expect("a batch is delivered under the UUID its record committed");
            let shipped = crate::telemetry::blocking(move || {
                let shipping = Shipping {
                    root: &job.dir,
                    files: &job.files,
                    checked: &job.digests,
                    uuid: &uuid,
                    fresh: job.fresh,
                    progress: &job.progress,
                    stop: &job.stop,
                    fence: &*job.fence,
                };
                ship(&cfg, &pool, &shipping)
            })
            .await;
            shipped.map(Delivered::from).map_err(DeliveryError::from)
        })
    }

    fn remote_dir(&self, uuid: &str) -> String {
        remote_join(&self.cfg.remote_dir, uuid)
    }
}

impl From<Shipment> for Delivered {
    fn from(s: Shipment) -> Delivered {
        Delivered { remote_dir: s.remote_dir, files_sha256: s.files_sha256, uploaded: s.uploaded, already_submitted: s.already_submitted }
    }
}

impl From<ShipError> for DeliveryError {
    fn from(e: ShipError) -> DeliveryError {
        match e {
            ShipError::Interrupted => DeliveryError::Interrupted,
            ShipError::LeaseLost => DeliveryError::LeaseLost,
            short if short.is_host_short() => DeliveryError::HostShort(short.to_string()),
            other => DeliveryError::Failed { permanent: other.is_permanent(), reason: other.to_string() },
        }
    }
}

/// The fence as the error that ends a shipment when it does not hold.
fn fenced(fence: &dyn Fence) -> Result<(), ShipError> {
    match fence.holds() {
        true => Ok(()),
        false => Err(ShipError::LeaseLost),
    }
}

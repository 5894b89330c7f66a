//! Shipping: SFTP sessions and the upload of one batch into its UUID folder, DONE last.
//! **Invariant:** only this module knows ssh2.

mod channel;
mod error;
mod pipeline;
mod pool;
mod quickack;
mod session;
mod upload;
mod wire;

pub use error::ShipError;
pub use pool::Pool;
pub use session::{check_private_key, Connection};
pub use upload::{probe, remote_join, ship, Fence, Progress, Shipment, Unfenced, DONE_FILE};

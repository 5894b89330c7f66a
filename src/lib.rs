//! jumio-batchd: validates identity-verification batches and ships them to Jumio over SFTP.
//! See ARCHITECTURE.md for the map.

pub mod batch;
pub mod batchfs;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod derive;
pub mod failpoint;
pub mod fingerprint;
pub mod folders;
pub mod layout;
pub mod lifecycle;
pub mod metrics;
pub mod receipt;
pub mod ship;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod validate;

//! jumio-batchd: validates identity-verification batches and ships them to Jumio over SFTP.
//! See ARCHITECTURE.md for the map.

pub mod cli;
pub mod config;
pub mod receipt;
pub mod ship;
pub mod validate;

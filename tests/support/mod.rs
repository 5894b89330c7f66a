#![allow(dead_code)]
pub mod daemon;
pub mod fixtures;
pub mod sshd;

#![allow(dead_code)]
pub mod daemon;
pub mod fixtures;
pub mod other_server;
pub mod postgres;
pub mod sshd;

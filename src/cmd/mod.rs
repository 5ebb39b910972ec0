//! Subcommands. The binary's edge: errors are `anyhow` here and nowhere else.

pub mod bench;
pub mod certs;
pub mod consume;
pub mod dump;
pub mod event;
pub mod maze_verify;
pub mod restore;
pub mod seq;
pub mod serve;
pub mod status;
pub mod work;

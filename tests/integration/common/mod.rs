//! What the integration tests share: private servers (`servers.rs`), a namespace per test on
//! them and the binary driven as an operator would (`env.rs`), a private CA (`pki.rs`), and a
//! private Redis Cluster (`cluster.rs`). Each test binary compiles this whole folder and uses
//! part of it.

#![allow(dead_code, unused_imports)]

mod cluster;
mod env;
mod monitoring;
mod pgbouncer;
mod pki;
mod sentinel;
mod servers;

pub use cluster::*;
pub use env::*;
pub use monitoring::*;
pub use pgbouncer::*;
pub use pki::*;
pub use sentinel::*;
pub use servers::*;

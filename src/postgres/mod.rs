//! Everything that talks to PostgreSQL. One type, [`Session`] (a connection and the one path
//! every call takes), whose methods are split by concern, a file each; each file adds one
//! `impl Session` block:
//!
//! | file | `impl Session`: … |
//! |---|---|
//! | `session.rs` | connect, the calls (`query`, `execute`, `copy_in`…), `begin`, `transaction` |
//! | `apply.rs` | `write_batch`: one batch's transaction, its ledger row; `retry_quarantine` |
//! | `update.rs` | `update_part`: the bulk UPDATE; `refusal`; `existing`, the dry run's look |
//! | `isolate.rs` | `isolate_all`: a refused batch narrowed down under savepoints |
//! | `stage.rs` | `write_gathered`: a backlog's batches in one transaction, through a temporary table |
//! | `quarantine.rs` | the table where refused codes' hits wait, and the advice for each error |
//! | `ledger.rs` | `applied`, `prune`; the fence token, the database's name |
//! | `history.rs` | `record_run`, `last_runs`, `last_success_age` |
//! | `schema.rs` | `ensure_tables`: our own tables, and their DDL for a DBA |
//! | `lease.rs` | the run lock (a lease in a table) |
//! | `catalog.rs` | what the catalog says about the target and the role; reads only |
//!
//! `applied.rs` holds the types the apply files share (`ApplyTo`, `Applied`), below them all.

mod applied;
mod apply;
mod catalog;
mod history;
mod isolate;
mod lease;
mod ledger;
mod quarantine;
mod schema;
mod session;
mod stage;
mod update;

pub(crate) use applied::BatchRejected;
pub use applied::{Applied, ApplyTo};
pub use catalog::TableFacts;
pub(crate) use history::RunRecord;
pub use history::RunRow;
pub use lease::process_gone;
pub(crate) use lease::{Acquired, Holder, Lease};
pub(crate) use schema::{for_a_dba, grant_sql, own_tables, quote_ident};
pub(crate) use session::connect_client;
pub use session::Session;
pub use update::{statement_rows, update_params, update_sql};

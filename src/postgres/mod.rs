//! Everything that talks to PostgreSQL, split by concern: `session.rs` connects, sets the
//! session up and is the one path every call takes; `apply.rs` applies a batch (the bulk
//! UPDATE and its ledger row, in one transaction); `ledger.rs` keeps the ledger and the run
//! history; `lease.rs` the run lock; `quarantine.rs` the codes Postgres refuses row by row;
//! `catalog.rs` reads what the catalog says about the target and the role; `stage.rs` applies
//! a backlog's batches several to a transaction, through a temporary table.

mod apply;
mod catalog;
mod lease;
mod ledger;
mod quarantine;
mod session;
mod stage;

pub use apply::{
    statement_rows, update_params, update_sql, Applied, ApplyTo, BatchRejected, RETRY_LIMIT,
};
pub use catalog::TableFacts;
pub use lease::{lease_ddl, process_gone, Acquired, Holder, Lease, Taken};
pub use ledger::{ledger_ddl, lock_key, runs_ddl, LedgerRow, RunRecord, RunRow};
pub use quarantine::{quarantine_ddl, Poisoned, RowError};
pub use session::{connect_client, transaction_settings, Param, Session};
pub use stage::MERGED_ROWS;

//! Controller: watches (`run`) → one reconcile path for every key kind (`reconcile`):
//! dereference → desired → locate → sync (observe → plan → execute) → report; cleanup behind
//! a finalizer. Each kind (`aws_key`, `aws_replica_key`) supplies only what differs
//! (`managed_key`).

mod aws_key;
mod aws_replica_key;
mod cleanup;
pub mod connection_status;
mod context;
mod dereference;
mod events;
mod failure;
mod generated_secret;
mod inventory;
mod managed_key;
mod pkcs11;
mod pkcs11_token;
mod reconcile;
mod report;
mod run;
mod scheduled_rotation;
mod status;
mod sync;
mod template_status;
mod template_use;
mod verification;
mod written;

pub use context::{Context, Settings, deep_read_offset, first_check_offset};
pub use failure::{Blocked, Category, Error, Failure};
pub use managed_key::FINALIZER;
pub use run::run;
pub use status::FIELD_MANAGER;

//! The command line: arguments ([`args`]) and the commands that only read, check and print
//! (`validate`, `render-policy`); `keyfleet run` wires the operator in `main.rs`.

pub mod args;
pub mod render_policy;
pub mod validate;

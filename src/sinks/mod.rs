//! Where reports go once a batch is evaluated. One module per sink.
//!
//! - [`results_log`]: the agent's JSON-lines log of every report, repaired
//!   from the state store after a crash.

pub mod results_log;

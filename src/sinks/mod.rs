//! Where reports go once a batch is evaluated. One module per sink.
//!
//! - [`results_log`]: the agent's JSON-lines log of every report, repaired
//!   from the state store after a crash.
//! - [`telemetry`]: OpenTelemetry metrics, traces and logs (OTLP) and the
//!   Prometheus view of the same metrics.

pub mod results_log;
pub mod telemetry;

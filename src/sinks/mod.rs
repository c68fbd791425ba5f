//! Where reports go once a batch is evaluated. One module per sink.
//!
//! - [`results_log`]: the agent's JSON-lines log of every report, repaired
//!   from the state store after a crash.
//! - [`telemetry`]: OpenTelemetry metrics, traces and logs (OTLP) and the
//!   Prometheus view of the same metrics.
//! - [`webhook`]: retraining webhooks — trigger policy, event, presets,
//!   signing (durable delivery is the next step).

pub mod results_log;
pub mod telemetry;
pub mod webhook;

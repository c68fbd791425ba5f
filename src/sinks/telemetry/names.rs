//! Every instrument driftwatch exports: name, kind, unit, attributes and
//! meaning, in one table. Code records through these constants only (never
//! a raw string), `docs/telemetry.md` is tested against [`INSTRUMENTS`], and
//! the Prometheus names are derived from them by one rule
//! ([`Instrument::prometheus_name`]).
//!
//! Attributes are bounded by construction: dataset, check, column and test
//! names come from rule files, `outcome` and `severity` from small enums.
//! File paths and partition values never appear on metrics (they are on spans
//! and logs).

/// What kind of instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic sum (Prometheus `counter`, `_total`).
    Counter,
    /// Distribution (Prometheus `histogram`).
    Histogram,
    /// Last value (Prometheus `gauge`).
    Gauge,
}

impl Kind {
    /// The name used in docs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
            Kind::Gauge => "gauge",
        }
    }
}

/// One instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instrument {
    /// OpenTelemetry name (`driftwatch.` prefix, dot-separated).
    pub name: &'static str,
    /// Kind.
    pub kind: Kind,
    /// UCUM unit (`s`, `1`, `{batch}`…).
    pub unit: &'static str,
    /// Attribute keys it carries.
    pub attributes: &'static [&'static str],
    /// Meaning.
    pub description: &'static str,
}

impl Instrument {
    /// The Prometheus name, by OpenTelemetry's Prometheus compatibility rules
    /// (as `opentelemetry-prometheus` applies them): dots become underscores;
    /// unit `s` adds `_seconds`, `1` adds `_ratio`, `By` adds `_bytes`,
    /// `{annotations}` add nothing; counters then get `_total`.
    pub fn prometheus_name(&self) -> String {
        let mut name = self.name.replace('.', "_");
        match self.unit {
            "s" => name.push_str("_seconds"),
            "1" => name.push_str("_ratio"),
            "By" => name.push_str("_bytes"),
            _ => {}
        }
        if self.kind == Kind::Counter {
            name.push_str("_total");
        }
        name
    }
}

/// Attribute: the rule file's dataset.
pub const DATASET: &str = "dataset";
/// Attribute: a check's name.
pub const CHECK: &str = "check";
/// Attribute: a column's name.
pub const COLUMN: &str = "column";
/// Attribute: a drift test (`ks`, `wasserstein`…).
pub const TEST: &str = "test";
/// Attribute: `error` or `warn`.
pub const SEVERITY: &str = "severity";
/// Attribute: where an environment fault stopped a batch: `evaluate` or `record`.
pub const STAGE: &str = "stage";
/// Attribute: `passed`, `failed` or `error` (batches); per webhook instrument, its own small set.
pub const OUTCOME: &str = "outcome";
/// Attribute: a webhook's name (from the config file).
pub const WEBHOOK: &str = "webhook";
/// Attribute: a delivery's state (`pending`, `dead`).
pub const STATE: &str = "state";
/// Attribute: a stream source's kind (`http`, `kafka`, `ndjson_files`).
pub const SOURCE: &str = "source";

/// Batches evaluated.
pub const BATCHES: Instrument = Instrument {
    name: "driftwatch.batches",
    kind: Kind::Counter,
    unit: "{batch}",
    attributes: &[DATASET, OUTCOME],
    description: "Batches evaluated, by outcome: passed, failed (an error-severity check or dataset drift), error (unreadable), skipped (a Delta table version that added no data: recorded, not evaluated).",
};
/// Rows evaluated.
pub const ROWS: Instrument = Instrument {
    name: "driftwatch.rows",
    kind: Kind::Counter,
    unit: "{row}",
    attributes: &[DATASET],
    description: "Rows in evaluated batches.",
};
/// Evaluation time.
pub const EVALUATION_DURATION: Instrument = Instrument {
    name: "driftwatch.evaluation.duration",
    kind: Kind::Histogram,
    unit: "s",
    attributes: &[DATASET],
    description: "Time to evaluate one batch: the scan, its checks, profiles and drift tests.",
};
/// Files that could not be evaluated.
pub const FILES_ERRORED: Instrument = Instrument {
    name: "driftwatch.files.errored",
    kind: Kind::Counter,
    unit: "{file}",
    attributes: &[DATASET],
    description: "Batches that could not be read or evaluated (corrupt, truncated, unreadable).",
};
/// A check's latest status.
pub const CHECK_STATUS: Instrument = Instrument {
    name: "driftwatch.check.status",
    kind: Kind::Gauge,
    unit: "{status}",
    attributes: &[DATASET, CHECK, SEVERITY],
    description: "The check's status on the dataset's latest batch: 0 pass, 1 fail, 2 error, 3 skipped (an `anomaly` check still learning).",
};
/// Batches whose columns differ from their dataset's previous batch.
pub const SCHEMA_CHANGES: Instrument = Instrument {
    name: "driftwatch.dataset.schema_changes",
    kind: Kind::Counter,
    unit: "{batch}",
    attributes: &[DATASET],
    description: "Batches whose columns differ from the dataset's previous batch (a column added, removed or of another type).",
};
/// Batches whose row count the volume signal found abnormal.
pub const VOLUME_ANOMALIES: Instrument = Instrument {
    name: "driftwatch.dataset.volume_anomalies",
    kind: Kind::Counter,
    unit: "{batch}",
    attributes: &[DATASET],
    description: "Batches whose row count is abnormal for the dataset (the `[health]` volume signal; such a batch is not failed for it).",
};
/// Batches that landed late for their dataset.
pub const LATE_BATCHES: Instrument = Instrument {
    name: "driftwatch.dataset.late_batches",
    kind: Kind::Counter,
    unit: "{batch}",
    attributes: &[DATASET],
    description: "Batches that landed late: the gap since the dataset's previous batch exceeded the learned interval by more than half of it.",
};
/// The learned interval between a dataset's batches.
pub const ARRIVAL_INTERVAL: Instrument = Instrument {
    name: "driftwatch.dataset.arrival_interval",
    kind: Kind::Gauge,
    unit: "s",
    attributes: &[DATASET],
    description: "The usual interval between the dataset's batches: the median gap between the landing times of its last 50 (from 3 batches on).",
};
/// How far a dataset is past its next expected batch.
pub const OVERDUE: Instrument = Instrument {
    name: "driftwatch.dataset.overdue",
    kind: Kind::Gauge,
    unit: "s",
    attributes: &[DATASET],
    description: "Seconds since the dataset's next batch was expected (its last landing time plus the learned interval); 0 while not due.",
};
/// An `anomaly` check's observed value.
pub const ANOMALY_OBSERVED: Instrument = Instrument {
    name: "driftwatch.anomaly.observed",
    kind: Kind::Gauge,
    unit: "{value}",
    attributes: &[DATASET, CHECK],
    description: "The metric an `anomaly` check judges, on the dataset's latest batch.",
};
/// The low edge of an `anomaly` check's expected band.
pub const ANOMALY_EXPECTED_LOW: Instrument = Instrument {
    name: "driftwatch.anomaly.expected_low",
    kind: Kind::Gauge,
    unit: "{value}",
    attributes: &[DATASET, CHECK],
    description: "The lowest normal value of an `anomaly` check's expected band for the latest batch (absent with `direction: up` or while learning).",
};
/// The high edge of an `anomaly` check's expected band.
pub const ANOMALY_EXPECTED_HIGH: Instrument = Instrument {
    name: "driftwatch.anomaly.expected_high",
    kind: Kind::Gauge,
    unit: "{value}",
    attributes: &[DATASET, CHECK],
    description: "The highest normal value of an `anomaly` check's expected band for the latest batch (absent with `direction: down` or while learning).",
};
/// A check's failing rows.
pub const CHECK_FAILING_ROWS: Instrument = Instrument {
    name: "driftwatch.check.failing_rows",
    kind: Kind::Gauge,
    unit: "{row}",
    attributes: &[DATASET, CHECK, SEVERITY],
    description: "Rows violating a row-level check in the dataset's latest batch.",
};
/// A check's failing fraction.
pub const CHECK_FAILING_FRACTION: Instrument = Instrument {
    name: "driftwatch.check.failing_fraction",
    kind: Kind::Gauge,
    unit: "1",
    attributes: &[DATASET, CHECK, SEVERITY],
    description: "Failing rows / rows considered for a row-level check in the dataset's latest batch.",
};
/// A column's drift statistic.
pub const DRIFT_STATISTIC: Instrument = Instrument {
    name: "driftwatch.drift.statistic",
    kind: Kind::Gauge,
    unit: "{statistic}",
    attributes: &[DATASET, COLUMN, TEST],
    description: "The drift test's statistic (the distance, for distance tests) on the latest batch.",
};
/// A column's drift p-value.
pub const DRIFT_P_VALUE: Instrument = Instrument {
    name: "driftwatch.drift.p_value",
    kind: Kind::Gauge,
    unit: "{probability}",
    attributes: &[DATASET, COLUMN, TEST],
    description: "The drift test's p-value on the latest batch (p-value tests only).",
};
/// Whether a column drifted.
pub const DRIFT_DRIFTED: Instrument = Instrument {
    name: "driftwatch.drift.drifted",
    kind: Kind::Gauge,
    unit: "{flag}",
    attributes: &[DATASET, COLUMN, TEST],
    description: "1 when the column drifted on the latest batch, else 0.",
};
/// Share of drifted columns.
pub const DATASET_DRIFT_SHARE: Instrument = Instrument {
    name: "driftwatch.dataset.drift_share",
    kind: Kind::Gauge,
    unit: "1",
    attributes: &[DATASET],
    description: "Drifted columns / tested columns on the latest batch.",
};
/// Dataset drift flag.
pub const DATASET_DRIFTED: Instrument = Instrument {
    name: "driftwatch.dataset.drifted",
    kind: Kind::Gauge,
    unit: "{flag}",
    attributes: &[DATASET],
    description: "1 when the latest batch shows dataset drift (drift share at or over the threshold), else 0.",
};
/// When the dataset's latest batch was evaluated.
pub const LAST_BATCH_TIME: Instrument = Instrument {
    name: "driftwatch.dataset.last_batch.time",
    kind: Kind::Gauge,
    unit: "s",
    attributes: &[DATASET],
    description: "Unix time at which the dataset's latest batch was evaluated (alert on `time() - x` for silent datasets).",
};
/// Batches waiting or running.
pub const QUEUE_DEPTH: Instrument = Instrument {
    name: "driftwatch.queue.depth",
    kind: Kind::Gauge,
    unit: "{batch}",
    attributes: &[],
    description: "Batches queued or being evaluated.",
};
/// Batches put back for another try after an environment fault.
pub const BATCH_RETRIES: Instrument = Instrument {
    name: "driftwatch.batch.retries",
    kind: Kind::Counter,
    unit: "{attempt}",
    attributes: &[DATASET, STAGE],
    description: "Batches put back for another try because of the environment (I/O, descriptors, memory, a full disk), not the data, by stage: evaluate, record, reference (a rolling reference) or history (an anomaly or volume history, or the previous schema). Never recorded as a verdict.",
};
/// Whether the agent cannot make progress.
pub const AGENT_DEGRADED: Instrument = Instrument {
    name: "driftwatch.agent.degraded",
    kind: Kind::Gauge,
    unit: "{flag}",
    attributes: &[],
    description: "1 while environment faults keep batches from being evaluated or recorded (see `/status` `agent.degraded`), else 0.",
};
/// Webhook events written to the outbox.
pub const WEBHOOK_EVENTS: Instrument = Instrument {
    name: "driftwatch.webhook.events",
    kind: Kind::Counter,
    unit: "{event}",
    attributes: &[WEBHOOK, DATASET, OUTCOME],
    description: "Webhook triggers, by outcome: fired (queued for delivery), dry_run (recorded, not sent), cooling_down (held back by the cooldown).",
};
/// Webhook delivery attempts.
pub const WEBHOOK_ATTEMPTS: Instrument = Instrument {
    name: "driftwatch.webhook.attempts",
    kind: Kind::Counter,
    unit: "{attempt}",
    attributes: &[WEBHOOK, OUTCOME],
    description: "HTTP attempts to deliver webhook events, by outcome: delivered, retry (will be tried again), dead (dead-lettered).",
};
/// Webhook attempt time.
pub const WEBHOOK_ATTEMPT_DURATION: Instrument = Instrument {
    name: "driftwatch.webhook.attempt.duration",
    kind: Kind::Histogram,
    unit: "s",
    attributes: &[WEBHOOK],
    description: "Time of one webhook HTTP attempt, connect to last byte of the response.",
};
/// Webhook deliveries waiting or dead.
pub const WEBHOOK_DELIVERIES: Instrument = Instrument {
    name: "driftwatch.webhook.deliveries",
    kind: Kind::Gauge,
    unit: "{event}",
    attributes: &[WEBHOOK, STATE],
    description: "Events in the outbox by state: pending (awaiting an attempt) and dead (dead-lettered; `driftwatch webhooks retry` re-queues).",
};
/// Stream events accepted or rejected.
pub const STREAM_EVENTS: Instrument = Instrument {
    name: "driftwatch.stream.events",
    kind: Kind::Counter,
    unit: "{event}",
    attributes: &[SOURCE, DATASET, OUTCOME],
    description: "Stream events by outcome: accepted (durable, will be evaluated), rejected (written to the dead-letter file).",
};
/// Stream windows closed or recorded.
pub const STREAM_WINDOWS: Instrument = Instrument {
    name: "driftwatch.stream.windows",
    kind: Kind::Counter,
    unit: "{window}",
    attributes: &[SOURCE, DATASET, STATE],
    description: "Stream windows by state: closed (sent for evaluation), evaluated (record durable; WAL segment dropped or Kafka offsets committed).",
};
/// Stream events waiting for evaluation.
pub const STREAM_PENDING_EVENTS: Instrument = Instrument {
    name: "driftwatch.stream.pending_events",
    kind: Kind::Gauge,
    unit: "{event}",
    attributes: &[SOURCE, DATASET],
    description: "Events accepted and not yet recorded (open and closed windows); HTTP posts get 429 beyond `max_pending_events`.",
};
/// Posts refused for a full stream.
pub const STREAM_THROTTLED: Instrument = Instrument {
    name: "driftwatch.stream.throttled",
    kind: Kind::Counter,
    unit: "{request}",
    attributes: &[SOURCE, DATASET],
    description: "Ingest posts answered 429 because `max_pending_events` events were waiting.",
};
/// Kafka consumer lag.
pub const STREAM_LAG: Instrument = Instrument {
    name: "driftwatch.stream.lag",
    kind: Kind::Gauge,
    unit: "{message}",
    attributes: &[SOURCE, DATASET],
    description: "Kafka sources: messages between the consumer's position and the high watermarks of its partitions.",
};

/// Every instrument, in documentation order.
pub const INSTRUMENTS: &[Instrument] = &[
    BATCHES,
    ROWS,
    EVALUATION_DURATION,
    FILES_ERRORED,
    CHECK_STATUS,
    CHECK_FAILING_ROWS,
    CHECK_FAILING_FRACTION,
    SCHEMA_CHANGES,
    VOLUME_ANOMALIES,
    LATE_BATCHES,
    ARRIVAL_INTERVAL,
    OVERDUE,
    ANOMALY_OBSERVED,
    ANOMALY_EXPECTED_LOW,
    ANOMALY_EXPECTED_HIGH,
    DRIFT_STATISTIC,
    DRIFT_P_VALUE,
    DRIFT_DRIFTED,
    DATASET_DRIFT_SHARE,
    DATASET_DRIFTED,
    LAST_BATCH_TIME,
    QUEUE_DEPTH,
    BATCH_RETRIES,
    AGENT_DEGRADED,
    WEBHOOK_EVENTS,
    WEBHOOK_ATTEMPTS,
    WEBHOOK_ATTEMPT_DURATION,
    WEBHOOK_DELIVERIES,
    STREAM_EVENTS,
    STREAM_WINDOWS,
    STREAM_PENDING_EVENTS,
    STREAM_THROTTLED,
    STREAM_LAG,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_names_follow_one_rule() {
        assert_eq!(BATCHES.prometheus_name(), "driftwatch_batches_total");
        assert_eq!(
            EVALUATION_DURATION.prometheus_name(),
            "driftwatch_evaluation_duration_seconds"
        );
        assert_eq!(
            LAST_BATCH_TIME.prometheus_name(),
            "driftwatch_dataset_last_batch_time_seconds"
        );
        assert_eq!(
            DRIFT_STATISTIC.prometheus_name(),
            "driftwatch_drift_statistic"
        );
        assert_eq!(
            DATASET_DRIFT_SHARE.prometheus_name(),
            "driftwatch_dataset_drift_share_ratio"
        );
        let mut names: Vec<&str> = INSTRUMENTS.iter().map(|i| i.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), INSTRUMENTS.len(), "names are unique");
        assert!(
            INSTRUMENTS
                .iter()
                .all(|i| i.name.starts_with("driftwatch."))
        );
    }
}

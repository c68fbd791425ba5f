//! The agent's own health: whether environment faults keep it from making
//! progress.
//!
//! A batch that cannot be read or recorded because of the environment (I/O
//! other than invalid data, descriptors, memory, a full disk, a store that
//! cannot write) is never given a verdict: it waits and is tried again with
//! backoff. While any batch waits like that, the agent is *degraded*:
//! `/status` says why and since when, `/readyz` answers 503, the
//! `driftwatch.agent.degraded` gauge is 1, and one log line marks the start
//! and one the end of each episode (not one per batch). When the agent has
//! been degraded for [`UNHEALTHY_AFTER`] without recording anything,
//! `/healthz` fails too, so an orchestrator can see it is stuck.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::report::BatchVersion;

/// How long the agent may be degraded without recording any batch before
/// `/healthz` fails.
pub const UNHEALTHY_AFTER: Duration = Duration::from_secs(300);

/// Tries of a batch that keeps exhausting the memory pool before that is
/// recorded as its verdict.
pub const MEMORY_TRIES: u32 = 5;

/// The first retry's wait; each further one doubles, up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two tries of a batch.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// The wait before try `attempt` (1-based) of a batch.
pub fn backoff(attempt: u32) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(factor).min(RETRY_MAX)
}

/// `/status`'s `agent.degraded`: why the agent cannot make progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Degraded {
    /// When the episode began (RFC 3339).
    pub since: String,
    /// The latest environment fault.
    pub reason: String,
    /// Batches waiting to be tried again.
    pub retrying: u64,
    /// Tries that failed in this episode.
    pub failed_tries: u64,
    /// Whether the results log is behind the store (a write to it failed).
    pub results_log_behind: bool,
}

#[derive(Default)]
struct State {
    /// Batches waiting for another try, with their failed tries so far.
    waiting: HashMap<(String, BatchVersion), u32>,
    log_behind: bool,
    episode: Option<Episode>,
}

struct Episode {
    since: Instant,
    since_wall: DateTime<Utc>,
    reason: String,
    failed_tries: u64,
}

/// What a caller should log after telling [`Health`] something.
#[derive(Debug, PartialEq)]
pub enum Transition {
    /// Nothing new.
    Same,
    /// An episode began (log it once).
    Degraded,
    /// The episode ended after this long and these failed tries.
    Recovered(Duration, u64),
}

/// The agent's health, shared by the workers and the HTTP handlers.
pub struct Health {
    state: Mutex<State>,
    last_progress: Mutex<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::default()),
            last_progress: Mutex::new(Instant::now()),
        }
    }
}

impl Health {
    /// A batch hit an environment fault; returns its failed tries so far.
    pub fn fault(&self, key: &(String, BatchVersion), reason: &str) -> (u32, Transition) {
        let Ok(mut s) = self.state.lock() else {
            return (1, Transition::Same);
        };
        let tries = {
            let t = s.waiting.entry(key.clone()).or_insert(0);
            *t += 1;
            *t
        };
        (tries, Self::note(&mut s, reason))
    }

    /// The failed tries of a batch waiting to be tried again (0 if none).
    pub fn tries(&self, key: &(String, BatchVersion)) -> u32 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.waiting.get(key).copied())
            .unwrap_or(0)
    }

    /// A write to the results log failed (the store holds the record).
    pub fn log_fault(&self, reason: &str) -> Transition {
        let Ok(mut s) = self.state.lock() else {
            return Transition::Same;
        };
        s.log_behind = true;
        Self::note(&mut s, reason)
    }

    fn note(s: &mut State, reason: &str) -> Transition {
        match &mut s.episode {
            Some(e) => {
                e.failed_tries += 1;
                e.reason = reason.to_string();
                Transition::Same
            }
            None => {
                s.episode = Some(Episode {
                    since: Instant::now(),
                    since_wall: Utc::now(),
                    reason: reason.to_string(),
                    failed_tries: 1,
                });
                Transition::Degraded
            }
        }
    }

    /// A batch was recorded (or needs no more tries: its file is gone, its
    /// rule file went away). `log_caught_up` says whether the results log
    /// now holds everything the store does.
    pub fn progress(&self, key: &(String, BatchVersion), log_caught_up: bool) -> Transition {
        if let Ok(mut t) = self.last_progress.lock() {
            *t = Instant::now();
        }
        let Ok(mut s) = self.state.lock() else {
            return Transition::Same;
        };
        s.waiting.remove(key);
        if log_caught_up {
            s.log_behind = false;
        }
        Self::settle(&mut s)
    }

    /// The results log caught up with the store (without a new batch).
    pub fn log_caught_up(&self) -> Transition {
        let Ok(mut s) = self.state.lock() else {
            return Transition::Same;
        };
        s.log_behind = false;
        Self::settle(&mut s)
    }

    /// A batch stops waiting without being recorded (the agent forgot it).
    pub fn dropped(&self, key: &(String, BatchVersion)) -> Transition {
        let Ok(mut s) = self.state.lock() else {
            return Transition::Same;
        };
        s.waiting.remove(key);
        Self::settle(&mut s)
    }

    fn settle(s: &mut State) -> Transition {
        if s.waiting.is_empty()
            && !s.log_behind
            && let Some(e) = s.episode.take()
        {
            return Transition::Recovered(e.since.elapsed(), e.failed_tries);
        }
        Transition::Same
    }

    /// The current episode, if the agent is degraded.
    pub fn degraded(&self) -> Option<Degraded> {
        let s = self.state.lock().ok()?;
        let e = s.episode.as_ref()?;
        Some(Degraded {
            since: e.since_wall.to_rfc3339(),
            reason: e.reason.clone(),
            retrying: s.waiting.len() as u64,
            failed_tries: e.failed_tries,
            results_log_behind: s.log_behind,
        })
    }

    /// Whether the agent has been degraded for [`UNHEALTHY_AFTER`] without
    /// recording anything meanwhile.
    pub fn stuck(&self) -> bool {
        let since = match self.state.lock() {
            Ok(s) => match &s.episode {
                Some(e) => e.since,
                None => return false,
            },
            Err(_) => return true,
        };
        let progress = self
            .last_progress
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now());
        since.elapsed() >= UNHEALTHY_AFTER && progress.elapsed() >= UNHEALTHY_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> (String, BatchVersion) {
        (
            "d".to_string(),
            BatchVersion {
                kind: "file".to_string(),
                path: path.to_string(),
                size: 1,
                modified_ns: 0,
                parts: 1,
                table: None,
                etag: None,
            },
        )
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn an_episode_starts_once_and_ends_when_every_waiting_batch_is_done() {
        let h = Health::default();
        assert_eq!(h.degraded(), None);
        assert_eq!(h.fault(&key("a"), "EMFILE"), (1, Transition::Degraded));
        assert_eq!(h.fault(&key("b"), "EMFILE"), (1, Transition::Same));
        assert_eq!(h.fault(&key("a"), "ENOSPC"), (2, Transition::Same));
        let d = h.degraded().unwrap();
        assert_eq!(
            (d.retrying, d.failed_tries, d.reason.as_str()),
            (2, 3, "ENOSPC")
        );
        assert_eq!(h.progress(&key("a"), true), Transition::Same);
        assert!(!h.stuck());
        match h.dropped(&key("b")) {
            Transition::Recovered(_, tries) => assert_eq!(tries, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(h.degraded(), None);
        // A results log behind the store keeps the episode open until it catches up.
        assert_eq!(h.log_fault("ENOSPC"), Transition::Degraded);
        assert_eq!(h.progress(&key("c"), false), Transition::Same);
        assert!(h.degraded().unwrap().results_log_behind);
        assert!(matches!(
            h.progress(&key("c"), true),
            Transition::Recovered(..)
        ));
    }
}

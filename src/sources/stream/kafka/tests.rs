//! Unit tests of the Kafka source's windows and commit bookkeeping, driven
//! without a broker (the broker-backed tests are in `tests/it/kafka.rs`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::client::{Commits, Committed, RevokeCommit};
use super::windows::{Stage, Written, write_window, written};
use super::*;
use crate::rules::LogicalType;
use crate::sources::stream::{WindowSpec, write_parquet};

fn state(dir: &Path, rows: u64, schema: Option<EventSchema>) -> State {
    state_done(dir, rows, schema, false)
}

/// A state whose store holds every window (`done`) or none.
fn state_done(dir: &Path, rows: u64, schema: Option<EventSchema>, done: bool) -> State {
    let source = SourceConfig {
        name: "kafka:t".to_string(),
        dataset: "t".to_string(),
        window: WindowSpec {
            rows: Some(rows),
            duration: None,
        },
        max_columns: crate::sources::stream::config::DEFAULT_MAX_COLUMNS,
        settings: SourceSettings::Kafka {
            brokers: "localhost:1".to_string(),
            topics: vec!["t".to_string()],
            group: "g".to_string(),
            options: BTreeMap::new(),
            max_pending_events: rows.saturating_mul(10).max(1_000_000),
        },
    };
    std::fs::create_dir_all(dir.join("windows")).unwrap();
    let done: DoneFn = Arc::new(move |_: &str, _: &BatchVersion| done);
    State::new(source, dir, Arc::new(StreamStats::default()), done, schema)
}

fn ids() -> EventSchema {
    EventSchema::from_rule(&[("id".to_string(), LogicalType::Int64)]).unwrap()
}

fn msg(offset: i64, payload: &str) -> Msg {
    Msg {
        topic: "t".to_string(),
        partition: 0,
        offset,
        payload: Some(payload.as_bytes().to_vec()),
    }
}

fn closed(s: &State) -> Vec<(i64, i64, u64)> {
    s.parts[&("t".to_string(), 0)]
        .closed
        .iter()
        .map(|c| (c.first, c.end, c.events))
        .collect()
}

fn path(s: &State, first: i64) -> BatchVersion {
    s.parts[&("t".to_string(), 0)]
        .closed
        .iter()
        .find(|c| c.first == first)
        .unwrap()
        .version
        .clone()
}

#[test]
fn acks_commit_only_the_longest_recorded_prefix_and_a_revocation_forgets_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 2, Some(ids()));
    s.assigned(vec![("t".to_string(), 0)]);
    for o in 0..7 {
        s.message(msg(o, &format!("{{\"id\": {o}}}")));
    }
    assert_eq!(closed(&s), [(0, 2, 2), (2, 4, 2), (4, 6, 2)]);
    assert_eq!(path(&s, 2).path, "kafka/t/t/0/2");
    assert_eq!((path(&s, 2).size, path(&s, 2).parts), (0, 2));
    assert_eq!(s.stats.open_events.load(Ordering::Relaxed), 1);
    assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 7);
    for part in s.parts.values_mut() {
        for c in part.closed.iter_mut() {
            c.stage = Stage::Sent;
        }
    }
    assert!(s.acknowledged(&path(&s, 2), true));
    assert_eq!(s.committable(), None, "window 0 is not recorded yet");
    assert!(s.acknowledged(&path(&s, 0), true));
    assert_eq!(s.committable(), Some(vec![("t".to_string(), 0, 4)]));
    assert!(!s.acknowledged(&path(&s, 4), false));
    assert!(matches!(
        s.parts[&("t".to_string(), 0)].closed[2].stage,
        Stage::RetryAt(_)
    ));
    assert!(s.committed(Committed {
        offsets: vec![("t".to_string(), 0, 4)],
        result: Ok(()),
    }));
    assert_eq!(closed(&s), [(4, 6, 2)]);
    assert_eq!(s.stats.windows_evaluated.load(Ordering::Relaxed), 2);
    assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 3);
    s.forget(&("t".to_string(), 0));
    assert!(s.parts.is_empty());
    assert_eq!(s.stats.pending_events.load(Ordering::Relaxed), 0);
    assert_eq!(s.stats.open_events.load(Ordering::Relaxed), 0);
}

#[test]
fn without_a_rule_schema_one_is_inferred_held_in_the_state_folder_and_misfits_are_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 3, None);
    s.message(msg(0, r#"{"a": 1, "b": "x"}"#));
    s.message(msg(1, r#"{"a": 2.5}"#));
    s.message(msg(2, "nope"));
    assert_eq!(s.unschematized.len(), 3);
    s.infer();
    let saved = std::fs::read_to_string(dir.path().join("schema.json")).unwrap();
    let held = EventSchema::from_json(&serde_json::from_str(&saved).unwrap()).unwrap();
    assert_eq!(Some(&held), s.schema.as_ref());
    assert_eq!(
        held.arrow().field(0).data_type(),
        &arrow::datatypes::DataType::Float64
    );
    s.message(msg(3, r#"{"a": "str"}"#));
    s.message(Msg {
        payload: None,
        ..msg(4, "")
    });
    s.message(msg(5, r#"{"b": "y"}"#));
    assert_eq!(closed(&s), [(0, 6, 3)]);
    let letters: Vec<(String, String)> = s
        .letters
        .iter()
        .map(|l| (l.location.clone(), l.reason.clone()))
        .collect();
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[0].0, "t/0@2");
    assert!(letters[0].1.starts_with("not JSON: "), "{letters:?}");
    assert_eq!(
        letters[1],
        (
            "t/0@3".to_string(),
            "field `a`: expected a number, got the string \"str\"".to_string()
        )
    );
    assert_eq!(
        letters[2],
        (
            "t/0@4".to_string(),
            "the message has no payload".to_string()
        )
    );
    assert_eq!(s.stats.rejected.load(Ordering::Relaxed), 3);
    assert_eq!(s.stats.accepted.load(Ordering::Relaxed), 3);
}

#[test]
fn a_window_left_on_disk_by_a_crash_is_rebuilt_with_the_events_it_held() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 100, Some(ids()));
    // Closed by time with 2 events, written, maybe recorded; then a crash.
    let mut b = ids().builder();
    b.push_json(br#"{"id": 0}"#).unwrap();
    b.push_json(br#"{"id": 1}"#).unwrap();
    let rows = b.finish().unwrap();
    write_parquet(
        &s.window_file("t", 0, 10),
        &rows.schema(),
        std::iter::once(Ok(rows.clone())),
    )
    .unwrap();
    // An older window of the partition, committed before the crash.
    std::fs::write(s.window_file("t", 0, 0), b"old").unwrap();
    // Reading resumes at the committed offset, 10.
    for o in 10..13 {
        s.message(msg(o, &format!("{{\"id\": {o}}}")));
    }
    assert_eq!(closed(&s), [(10, 12, 2)]);
    assert!(!s.window_file("t", 0, 0).exists());
    assert!(s.window_file("t", 0, 10).exists());
}

fn tp(p: i32) -> Tp {
    ("t".to_string(), p)
}

fn msg_p(partition: i32, offset: i64) -> Msg {
    Msg {
        partition,
        ..msg(offset, &format!("{{\"id\": {offset}}}"))
    }
}

/// Sets the stage of every closed window of a partition starting at `first`.
fn set_stage(s: &mut State, p: i32, first: i64, stage: Stage) {
    let c = s
        .parts
        .get_mut(&tp(p))
        .and_then(|part| part.closed.iter_mut().find(|c| c.first == first))
        .unwrap();
    c.stage = stage;
}

fn file(s: &State, p: i32, first: i64) -> PathBuf {
    s.window_file("t", p, first)
}

/// Writes the window's file as `send_closed` would (ending at `first + rows`).
fn write_file(s: &State, p: i32, first: i64, rows: i64) {
    let mut b = ids().builder();
    for i in 0..rows {
        b.push_json(format!("{{\"id\": {i}}}").as_bytes()).unwrap();
    }
    let batch = b.finish().unwrap();
    write_window(&file(s, p, first), &batch, first + rows).unwrap();
}

struct Sink {
    queue: mpsc::Sender<Batch>,
    batches: mpsc::Receiver<Batch>,
    in_flight: InFlight,
    ack: Ack,
    _acks: mpsc::UnboundedReceiver<(BatchVersion, bool)>,
}

fn sink() -> Sink {
    sink_of(16)
}

/// A sink whose queue holds `capacity` batches.
fn sink_of(capacity: usize) -> Sink {
    let (queue, batches) = mpsc::channel(capacity);
    let (ack_tx, acks) = mpsc::unbounded_channel();
    Sink {
        queue,
        batches,
        in_flight: Arc::default(),
        ack: Ack(ack_tx),
        _acks: acks,
    }
}

async fn send(s: &mut State, k: &mut Sink) {
    assert!(s.send_closed(&k.queue, &k.in_flight, &k.ack).await);
}

#[tokio::test]
async fn a_window_file_stays_until_committed_so_a_window_closed_by_time_is_rebuilt_the_same_after_every_crash()
 {
    let dir = tempfile::tempdir().unwrap();
    // Run 1: a window closes by time at 5 events [10..15), is written,
    // sent and recorded; the agent dies before the commit.
    let mut s = state(dir.path(), 100, Some(ids()));
    let mut k = sink();
    for o in 10..15 {
        s.message(msg(o, &format!("{{\"id\": {o}}}")));
    }
    s.close(&tp(0));
    send(&mut s, &mut k).await;
    let batch = k.batches.try_recv().unwrap();
    assert_eq!(batch.version.path, "kafka/t/t/0/10");
    assert!(s.acknowledged(&batch.version, true));
    drop(s);
    assert_eq!(
        written(&file(&state(dir.path(), 1, None), 0, 10)),
        Some(Written {
            end: Some(15),
            events: Some(5)
        })
    );

    // Runs 2 and 3: the store holds the window; each rebuild is capped at
    // 5 events by the file, which no step before the commit deletes.
    for run in 2..=3 {
        let mut s = state_done(dir.path(), 100, Some(ids()), true);
        let mut k = sink();
        for o in 10..20 {
            s.message(msg(o, &format!("{{\"id\": {o}}}")));
        }
        assert_eq!(closed(&s), [(10, 15, 5)], "run {run}");
        send(&mut s, &mut k).await;
        assert!(k.batches.try_recv().is_err(), "recorded before: not sent");
        assert!(matches!(s.parts[&tp(0)].closed[0].stage, Stage::Recorded));
        assert!(file(&s, 0, 10).exists(), "run {run}: kept until committed");
        if run == 2 {
            // Dies again before the commit (or loses the partition).
            s.forget(&tp(0));
            assert!(file(&s, 0, 10).exists());
            continue;
        }
        let offsets = s.committable().unwrap();
        assert_eq!(offsets, [("t".to_string(), 0, 15)]);
        assert!(s.committed(Committed {
            offsets,
            result: Ok(()),
        }));
        assert!(!file(&s, 0, 10).exists(), "deleted once committed");
        assert_eq!(s.stats.windows_evaluated.load(Ordering::Relaxed), 1);
    }
}

fn offsets(v: &[(i32, i64)]) -> Vec<(String, i32, i64)> {
    v.iter().map(|(p, o)| ("t".to_string(), *p, *o)).collect()
}

#[test]
fn a_revocation_commits_the_recorded_prefix_once_before_the_partitions_go_and_never_beside_a_commit_that_may_still_land()
 {
    let mut c = Commits::default();
    c.assign(&[tp(0), tp(1), tp(2)]);
    c.ready = HashMap::from([(tp(0), 4), (tp(1), 2)]);
    // The main loop's commit covers only partitions still owned.
    assert_eq!(
        c.start(offsets(&[(0, 4), (3, 9)])),
        Some(offsets(&[(0, 4)]))
    );
    assert!(c.busy);
    assert_eq!(c.start(offsets(&[(0, 4)])), None, "one at a time");
    // Revoked while it runs: no second commit beside it.
    assert_eq!(c.revoke(&[tp(1)]), RevokeCommit::Busy(vec![tp(1)]));
    assert!(!c.owned.contains(&tp(1)) && !c.ready.contains_key(&tp(1)));
    c.finish(&Committed {
        offsets: offsets(&[(0, 4)]),
        result: Ok(()),
    });
    assert!(!c.busy);
    assert_eq!(c.start(offsets(&[(1, 2)])), Some(vec![]), "revoked: never");
    assert!(!c.busy, "nothing started");
    // What is committed already is not committed again; what is beyond is.
    assert_eq!(c.revoke(&[tp(0)]), RevokeCommit::Nothing);
    c.ready.insert(tp(2), 6);
    assert_eq!(c.revoke(&[tp(2)]), RevokeCommit::Commit(offsets(&[(2, 6)])));
    assert_eq!(c.done.get(&tp(2)), Some(&6));
    // Assigned again, the partition starts afresh; a failed commit does
    // not count as done.
    c.assign(&[tp(2)]);
    assert!(c.owned.contains(&tp(2)) && !c.done.contains_key(&tp(2)));
    assert_eq!(c.start(offsets(&[(2, 8)])), Some(offsets(&[(2, 8)])));
    c.finish(&Committed {
        offsets: offsets(&[(2, 8)]),
        result: Err("coordinator away".to_string()),
    });
    assert!(!c.busy && !c.done.contains_key(&tp(2)));
}

#[test]
fn what_the_revocation_callback_may_commit_is_the_recorded_prefix_of_owned_partitions_with_its_dead_letters_written()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 2, Some(ids()));
    let commits = Mutex::new(Commits::default());
    commits.lock().unwrap().assign(&[tp(0), tp(1)]);
    s.assigned(vec![tp(0), tp(1)]);
    for o in 0..5 {
        s.message(msg_p(0, o));
        s.message(msg_p(1, o));
    }
    set_stage(&mut s, 0, 0, Stage::Recorded);
    set_stage(&mut s, 0, 2, Stage::Sent);
    set_stage(&mut s, 1, 0, Stage::Recorded);
    set_stage(&mut s, 1, 2, Stage::Recorded);
    s.share(&commits);
    assert_eq!(
        commits.lock().unwrap().ready,
        HashMap::from([(tp(0), 2), (tp(1), 4)])
    );
    // A dead letter not written yet: what was shared before stays.
    s.message(msg(5, "nope"));
    set_stage(&mut s, 0, 2, Stage::Recorded);
    s.share(&commits);
    assert_eq!(commits.lock().unwrap().ready.get(&tp(0)), Some(&2));
    s.letters.clear();
    s.share(&commits);
    assert_eq!(commits.lock().unwrap().ready.get(&tp(0)), Some(&4));
    // Revoked (by the callback): not shared any more.
    assert_eq!(
        commits.lock().unwrap().revoke(&[tp(1)]),
        RevokeCommit::Commit(offsets(&[(1, 4)]))
    );
    s.share(&commits);
    assert!(!commits.lock().unwrap().ready.contains_key(&tp(1)));
    // The main loop then forgets the partition; its files stay.
    write_file(&s, 1, 0, 2);
    s.revoked(vec![tp(1)]);
    assert!(!s.parts.contains_key(&tp(1)));
    assert!(file(&s, 1, 0).exists());
}

#[tokio::test]
async fn a_window_still_in_the_agents_queue_keeps_its_file_when_its_partition_comes_back_past_it_until_its_ack()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 2, Some(ids()));
    let mut k = sink();
    s.assigned(vec![tp(0)]);
    for o in 0..4 {
        s.message(msg_p(0, o));
    }
    send(&mut s, &mut k).await;
    let first = k.batches.try_recv().unwrap();
    let second = k.batches.try_recv().unwrap();
    assert!(s.acknowledged(&first.version, true));
    // Revoked with [2, 4) in the agent's queue; another member commits
    // it, and the partition comes back at 4: the file stays.
    s.revoked(vec![tp(0)]);
    s.assigned(vec![tp(0)]);
    let next = msg_p(0, 4);
    s.resume_at(&next).await;
    s.message(next);
    assert!(second.path.exists(), "not acknowledged yet: kept");
    assert!(!file(&s, 0, 0).exists(), "acknowledged and passed: deleted");
    assert_eq!(s.parts[&tp(0)].files, Some(HashMap::new()));
    // Its ack: passed, so deleted now.
    assert!(!s.acknowledged(&second.version, true));
    assert!(!second.path.exists());
    assert!(s.unacked.is_empty());

    // Not passed (the partition comes back at 4, where the window
    // starts): the file stays after the ack and ends the rebuilt window.
    s.message(msg_p(0, 5));
    send(&mut s, &mut k).await;
    let third = k.batches.try_recv().unwrap();
    s.revoked(vec![tp(0)]);
    assert!(!s.acknowledged(&third.version, true));
    assert!(third.path.exists());
    s.assigned(vec![tp(0)]);
    let again = msg_p(0, 4);
    s.resume_at(&again).await;
    assert_eq!(
        s.parts[&tp(0)].files,
        Some(HashMap::from([(
            4,
            Written {
                end: Some(6),
                events: Some(2)
            }
        )]))
    );
}

/// A state whose windows close after `seconds` (0: at every tick) and,
/// with `rows`, at that many events.
fn timed(dir: &Path, rows: Option<u64>, done: bool) -> State {
    let mut s = state_done(dir, 1, Some(ids()), done);
    s.source.window = WindowSpec {
        rows,
        duration: Some(Duration::ZERO),
    };
    s
}

#[tokio::test]
async fn a_window_closed_by_time_on_dead_letters_is_rebuilt_to_the_same_end_offset_never_closed_before_it_by_time_or_count()
 {
    let dir = tempfile::tempdir().unwrap();
    // Run 1: accepted 100..105, dead letters 105..110, closed by time →
    // end 110; written and recorded, then a crash before the commit.
    let mut s = timed(dir.path(), Some(100), false);
    let mut k = sink();
    for o in 100..105 {
        s.message(msg_p(0, o));
    }
    for o in 105..110 {
        s.message(msg(o, "nope"));
    }
    s.tick();
    assert_eq!(closed(&s), [(100, 110, 5)]);
    send(&mut s, &mut k).await;
    assert!(s.acknowledged(&k.batches.try_recv().unwrap().version, true));
    drop(s);

    // Run 2 (fewer rows per window now): the rebuild takes the same
    // messages, is not closed by time or count before its end, and the
    // next window is keyed at 110 as before.
    let mut s = timed(dir.path(), Some(3), true);
    let first = msg_p(0, 100);
    s.resume_at(&first).await;
    s.message(first);
    for o in 101..105 {
        s.message(msg_p(0, o));
        s.tick();
    }
    for o in 105..109 {
        s.message(msg(o, "nope"));
        s.tick();
    }
    assert!(closed(&s).is_empty(), "open until its end offset");
    s.message(msg(109, "nope"));
    s.message(msg_p(0, 110));
    assert_eq!(closed(&s), [(100, 110, 5)]);
    assert_eq!(s.parts[&tp(0)].open.as_ref().map(|o| o.first), Some(110));
    send(&mut s, &mut k).await;
    assert!(k.batches.try_recv().is_err(), "recorded before: not again");
    let offsets = s.committable().unwrap();
    assert_eq!(offsets, [("t".to_string(), 0, 110)]);

    // A rebuild whose end never comes (the messages before it went):
    // closed where it got to, before the message past its end.
    write_file(&s, 1, 0, 4);
    s.assigned(vec![tp(1)]);
    s.message(msg_p(1, 0));
    s.message(msg_p(1, 5));
    assert_eq!(
        s.parts[&tp(1)]
            .closed
            .iter()
            .map(|c| (c.first, c.end))
            .collect::<Vec<_>>(),
        [(0, 1)]
    );
}

#[test]
fn windows_closed_by_time_only_still_close_at_max_pending_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = timed(dir.path(), None, false);
    s.source.window.duration = Some(Duration::from_secs(3600));
    s.max_pending = 3;
    for o in 0..7 {
        s.message(msg_p(0, o));
    }
    assert_eq!(closed(&s), [(0, 3, 3), (3, 6, 3)]);
    assert_eq!(s.open_events, 1);
}

#[test]
fn consumption_pauses_while_closed_windows_not_committed_exceed_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(state(dir.path(), 2, None).max_pending, 1_000_000);
    assert_eq!(state(dir.path(), 300_000, None).max_pending, 3_000_000);
    let mut s = state(dir.path(), 2, Some(ids()));
    s.max_pending = 6;
    s.assigned(vec![tp(0)]);
    for o in 0..6 {
        s.message(msg_p(0, o));
    }
    assert_eq!(s.backlog(), 6);
    assert_eq!(s.pause_cause(false), None, "at the bound, not beyond");
    s.message(msg_p(0, 6));
    assert_eq!(s.backlog(), 6, "open events do not count");
    s.message(msg_p(0, 7));
    assert_eq!(s.backlog(), 8);
    assert_eq!(s.pause_cause(false), Some(Pause::Backlog));
    let commit = |s: &mut State, first: i64| {
        set_stage(s, 0, first, Stage::Recorded);
        let offsets = s.committable().unwrap();
        assert!(s.committed(Committed {
            offsets,
            result: Ok(()),
        }));
    };
    commit(&mut s, 0);
    assert_eq!(s.backlog(), 6);
    assert_eq!(
        s.pause_cause(true),
        Some(Pause::Backlog),
        "paused until at most 3/4 of the bound"
    );
    commit(&mut s, 2);
    assert_eq!(s.backlog(), 4);
    assert_eq!(s.pause_cause(true), None);
    assert_eq!(s.assignment(), [tp(0)]);
}

#[tokio::test]
async fn dead_letters_that_cannot_be_written_pause_consumption_and_hold_the_commit_and_none_is_dropped()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 2, Some(ids()));
    let commits = Mutex::new(Commits::default());
    commits.lock().unwrap().assign(&[tp(0)]);
    // The dead-letter file cannot be written.
    std::fs::create_dir(dir.path().join("dead-letters.ndjson")).unwrap();
    s.assigned(vec![tp(0)]);
    let bad = |o: i64| msg(o, "nope");
    // A window [0, 2) first, then only bad messages.
    s.message(msg_p(0, 0));
    s.message(msg_p(0, 1));
    let mut o = 2;
    while s.letters.len() < LETTERS_SOFT {
        s.message(bad(o));
        o += 1;
    }
    assert!(s.letters_full());
    assert!(!s.flush_letters().await);
    assert_eq!(s.letters.len(), LETTERS_SOFT, "kept to write later");
    assert_eq!(s.pause_cause(false), Some(Pause::Letters));
    // Messages fetched before the pause still come: every letter is kept.
    for _ in 0..2 * LETTERS_SOFT {
        s.message(bad(o));
        o += 1;
    }
    s.message(msg_p(0, o));
    s.message(msg_p(0, o + 1));
    assert_eq!(s.letters.len(), 3 * LETTERS_SOFT, "none dropped");
    for p in s.parts.values_mut() {
        for c in p.closed.iter_mut() {
            c.stage = Stage::Recorded;
        }
    }
    assert_eq!(closed(&s), [(0, 2, 2), (2, o + 2, 2)]);
    // Recorded, but nothing is shared for a commit while letters wait.
    s.share(&commits);
    assert!(commits.lock().unwrap().ready.is_empty());
    // Writable again: written, resumed, and committed past them (the
    // partition does not stall).
    std::fs::remove_dir(dir.path().join("dead-letters.ndjson")).unwrap();
    assert!(s.flush_letters().await);
    assert!(s.letters.is_empty());
    assert_eq!(s.pause_cause(true), None);
    assert_eq!(s.committable().unwrap(), [("t".to_string(), 0, o + 2)]);
    s.share(&commits);
    assert_eq!(commits.lock().unwrap().ready.get(&tp(0)), Some(&(o + 2)));
}

#[tokio::test]
async fn a_full_queue_never_blocks_sending_windows_wait_in_order_and_too_many_waiting_pause_consumption()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 2, Some(ids()));
    // A quarter of the bound: 3 events.
    s.max_pending = 12;
    let mut k = sink_of(1);
    s.assigned(vec![tp(0), tp(1)]);
    // Partition 0: windows [0, 2), [2, 4), [4, 6); partition 1: [0, 2).
    for o in 0..6 {
        s.message(msg_p(0, o));
    }
    s.message(msg_p(1, 0));
    s.message(msg_p(1, 1));
    let files = |s: &State| std::fs::read_dir(s.dir.join("windows")).unwrap().count();
    let in_flight = |k: &Sink| k.in_flight.lock().unwrap().len();

    // The queue takes one window; the others wait, written, and sending
    // returns at once rather than waiting for room.
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        s.send_closed(&k.queue, &k.in_flight, &k.ack),
    )
    .await;
    assert_eq!(sent, Ok(true), "never waits for room in the queue");
    assert_eq!((s.outbox.len(), s.outbox_events), (3, 6));
    assert!(s.waiting());
    assert_eq!(files(&s), 4, "waiting windows are written, not held");
    for part in s.parts.values() {
        assert!(part.closed.iter().all(|c| matches!(c.stage, Stage::Sent)));
    }
    assert_eq!(in_flight(&k), 1, "only what is in the queue is in flight");
    assert_eq!(s.pause_cause(false), Some(Pause::Queue), "6 > 12 / 4");
    // Trying again while the queue is full changes nothing.
    send(&mut s, &mut k).await;
    assert_eq!((s.outbox.len(), in_flight(&k)), (3, 1));

    // As the queue takes them, one at a time, every window goes, each
    // partition's in offset order; paused until none waits.
    let mut got = Vec::new();
    while let Ok(batch) = k.batches.try_recv() {
        assert!(batch.path.exists(), "{}", batch.path.display());
        got.push(batch.version.path.clone());
        if s.waiting() {
            assert_eq!(s.pause_cause(true), Some(Pause::Queue), "{got:?}");
        }
        send(&mut s, &mut k).await;
    }
    let p0: Vec<&str> = got
        .iter()
        .map(String::as_str)
        .filter(|p| p.starts_with("kafka/t/t/0/"))
        .collect();
    assert_eq!(p0, ["kafka/t/t/0/0", "kafka/t/t/0/2", "kafka/t/t/0/4"]);
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().any(|p| p == "kafka/t/t/1/0"), "{got:?}");
    assert!(!s.waiting());
    assert_eq!(s.outbox_events, 0);
    assert_eq!(s.pause_cause(true), None, "resumed once none waits");
    assert_eq!(in_flight(&k), 4);

    // Up to a quarter of the bound waiting: consumption goes on.
    s.message(msg_p(0, 6));
    s.message(msg_p(0, 7));
    s.message(msg_p(1, 2));
    s.message(msg_p(1, 3));
    send(&mut s, &mut k).await;
    assert_eq!((s.outbox.len(), s.outbox_events), (1, 2));
    assert_eq!(s.pause_cause(false), None, "2 is not beyond 12 / 4");

    // A window waiting when its partition is revoked is dropped, never
    // queued; the other partition's goes.
    let dropped = s.outbox[0].tp.clone();
    s.forget(&dropped);
    assert!(!s.waiting(), "dropped with its partition");
    assert_eq!(s.outbox_events, 0);
    let first = k.batches.try_recv().unwrap();
    assert!(
        !first
            .version
            .path
            .starts_with(&format!("kafka/t/t/{}/", dropped.1))
    );
    send(&mut s, &mut k).await;
    assert!(
        k.batches.try_recv().is_err(),
        "the dropped window never went"
    );

    // A closed queue: the source stops.
    let kept = if dropped == tp(0) { tp(1) } else { tp(0) };
    let next = s.parts[&kept].next.unwrap();
    s.message(msg_p(kept.1, next));
    s.message(msg_p(kept.1, next + 1));
    drop(k.batches);
    assert!(!s.send_closed(&k.queue, &k.in_flight, &k.ack).await);
}

#[test]
fn issue_15_an_inferred_schema_wider_than_max_columns_is_not_held_and_its_messages_are_dead_letters()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut s = state(dir.path(), 10, None);
    s.source.max_columns = 2;
    s.message(msg(0, r#"{"a": 1, "b": 2, "c": 3}"#));
    s.message(msg(1, r#"{"a": 4}"#));
    s.infer();
    assert!(s.schema.is_none());
    assert!(!dir.path().join("schema.json").exists());
    let letters: Vec<(String, String)> = s
        .letters
        .iter()
        .map(|l| (l.location.clone(), l.reason.clone()))
        .collect();
    let reason = "the events would fix an inferred schema of 3 columns, more than max_columns = 2; declare the schema in the rule file's `schema` check or raise `max_columns`".to_string();
    assert_eq!(
        letters,
        [
            ("t/0@0".to_string(), reason.clone()),
            ("t/0@1".to_string(), reason)
        ]
    );
    // Narrow messages after it fix a schema of their own.
    s.message(msg(2, r#"{"a": 5}"#));
    s.infer();
    assert_eq!(s.schema.as_ref().map(|h| h.arrow().fields().len()), Some(1));
}

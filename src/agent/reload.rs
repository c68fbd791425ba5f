//! Reloading rules and configuration while the agent runs: on a change to
//! the rules folder or config file (filesystem events), and on SIGHUP.
//!
//! A reload is all or nothing: if any rule file is invalid, the old rules keep
//! running and the error (`file:line:col: reason`) is logged and shown on
//! `/status` until a valid set is saved. Config changes that cannot apply to a
//! running agent (watched folders' state folder, listen address, concurrency,
//! memory) are logged as needing a restart; the rest (lake filters, settle and
//! rescan times, quarantine, the rules folder) apply at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::{Shared, lake_options};
use crate::config::{Overrides, Settings};
use crate::rules::RuleFile;
use crate::sources::lake::LakeOptions;

/// Changes are applied once the files have been quiet this long (editors
/// write in several steps).
const DEBOUNCE: Duration = Duration::from_millis(300);

pub(crate) async fn run(
    shared: Arc<Shared>,
    overrides: Overrides,
    rules_tx: watch::Sender<Arc<Vec<RuleFile>>>,
    options_tx: watch::Sender<Arc<LakeOptions>>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let mut watched = watched_paths(&shared);
    let mut watcher = start(&watched, &tx);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hangup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        let changed = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            Some(()) = rx.recv() => true,
            _ = sighup => false,
        };
        if changed {
            // Debounce: wait until the burst of events is over.
            loop {
                tokio::select! {
                    Some(()) = rx.recv() => continue,
                    _ = tokio::time::sleep(DEBOUNCE) => break,
                }
            }
        } else {
            tracing::info!("SIGHUP: reloading rules and configuration");
        }
        reload(&shared, &overrides, &rules_tx, &options_tx);
        let now_watched = watched_paths(&shared);
        if now_watched != watched {
            watched = now_watched;
            watcher = start(&watched, &tx);
        }
        let _ = &watcher;
    }
}

fn watched_paths(shared: &Shared) -> Vec<PathBuf> {
    shared
        .settings
        .lock()
        .map(|s| {
            let mut paths = vec![s.rules.clone()];
            paths.extend(s.config_file.clone());
            paths
        })
        .unwrap_or_default()
}

/// Whether a changed path is one that a reload reads: a rule file (`*.yaml`,
/// `*.yml`) directly in a watched rules folder, or a watched file itself.
/// Everything else in those folders (the agent's own log, editor swap files)
/// is ignored — otherwise a log file beside the config would reload forever.
fn relevant(path: &Path, watched: &[PathBuf]) -> bool {
    watched.iter().any(|w| {
        if w.is_dir() {
            path.parent() == Some(w.as_path())
                && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml")
                })
                && !path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        } else {
            path.file_name() == w.file_name()
                && path.parent().map(absolute) == w.parent().map(absolute)
        }
    })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn start(paths: &[PathBuf], tx: &mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let tx = tx.clone();
    let watched: Vec<PathBuf> = paths.iter().map(|p| absolute(p)).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
            && event.paths.iter().any(|p| relevant(p, &watched))
        {
            let _ = tx.try_send(());
        }
    })
    .ok()?;
    for path in paths {
        // Watch a file's folder: editors replace files by rename, which a
        // watch on the file itself would lose.
        let target = if path.is_dir() {
            path.clone()
        } else {
            path.parent()
                .map(|p| {
                    if p.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        p.to_path_buf()
                    }
                })
                .unwrap_or_else(|| PathBuf::from("."))
        };
        if let Err(e) = watcher.watch(&target, RecursiveMode::NonRecursive) {
            tracing::warn!(path = %target.display(), error = %e, "cannot watch for rule changes; SIGHUP still reloads");
        }
    }
    Some(watcher)
}

fn reload(
    shared: &Shared,
    overrides: &Overrides,
    rules_tx: &watch::Sender<Arc<Vec<RuleFile>>>,
    options_tx: &watch::Sender<Arc<LakeOptions>>,
) {
    let Ok(current) = shared.settings.lock().map(|s| s.clone()) else {
        return;
    };
    let settings = match &current.config_file {
        Some(path) => match Settings::resolve(Some(path), overrides) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; keeping the running configuration");
                set_error(shared, Some(e.to_string()));
                return;
            }
        },
        None => current.clone(),
    };
    let rules = match crate::rules::load_rules(&settings.rules)
        .and_then(|r| super::webhooks::check_names(&r, &settings.webhooks).map(|()| r))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "rules reload rejected; the previous rules keep running");
            set_error(shared, Some(e.to_string()));
            return;
        }
    };
    let options = match lake_options(&settings) {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected; keeping the running configuration");
            set_error(shared, Some(e.to_string()));
            return;
        }
    };
    let restart = [
        (
            "watch",
            current.watch != settings.watch || current.watch_objects != settings.watch_objects,
        ),
        ("state", current.state != settings.state),
        ("http.listen", current.listen != settings.listen),
        ("http", current.http != settings.http),
        (
            "evaluation.concurrency",
            current.concurrency != settings.concurrency,
        ),
        (
            "evaluation.memory_limit",
            current.memory_limit != settings.memory_limit,
        ),
        ("evaluation.queue", current.queue != settings.queue),
        ("sources", current.sources != settings.sources),
        (
            "log",
            current.log_format != settings.log_format || current.log_level != settings.log_level,
        ),
    ];
    for (key, changed) in restart {
        if changed {
            tracing::warn!(
                key,
                "changed in the config file; takes effect at the next restart"
            );
        }
    }
    set_error(shared, None);
    tracing::info!(
        rule_files = rules.len(),
        rules = %settings.rules.display(),
        "rules reloaded"
    );
    let _ = rules_tx.send(Arc::new(rules));
    let lake_changed = {
        let old = options_tx.borrow();
        old.settle != options.settle
            || old.rescan != options.rescan
            || old.skip != options.skip
            || old.poll_interval != options.poll_interval
            || old.object_rescan != options.object_rescan
            || old.object_store != options.object_store
            || current.include != settings.include
            || current.exclude != settings.exclude
    };
    if lake_changed {
        let _ = options_tx.send(Arc::new(options));
    }
    if let Ok(mut s) = shared.settings.lock() {
        let mut applied = settings;
        // Keep what only a restart changes, so /status tells the truth.
        applied.watch = current.watch;
        applied.watch_objects = current.watch_objects;
        applied.state = current.state;
        applied.listen = current.listen;
        applied.http = current.http;
        applied.concurrency = current.concurrency;
        applied.memory_limit = current.memory_limit;
        applied.queue = current.queue;
        applied.sources = current.sources;
        *s = applied;
    }
    // Changed webhooks (a fixed URL, a new CA) apply to pending deliveries now.
    shared.webhook_wake.notify_one();
}

fn set_error(shared: &Shared, error: Option<String>) {
    if let Ok(mut slot) = shared.rules_error.lock() {
        *slot = error;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_rule_files_and_the_config_file_trigger_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        let config = dir.path().join("driftwatch.toml");
        let watched = vec![absolute(&rules), absolute(&config)];
        assert!(relevant(&rules.join("orders.yaml"), &watched));
        assert!(relevant(&rules.join("orders.YML"), &watched));
        assert!(relevant(&config, &watched));
        assert!(!relevant(&rules.join(".orders.yaml.swp"), &watched));
        assert!(!relevant(&rules.join(".orders.yaml"), &watched));
        assert!(!relevant(&rules.join("notes.txt"), &watched));
        assert!(!relevant(&dir.path().join("agent.log"), &watched));
        assert!(!relevant(&rules.join("sub/x.yaml"), &watched));
    }
}

//! What packaging and CI need from the command line (issue 20): the version
//! with its git commit, shell completions and man pages generated from the
//! clap definition (so they never drift from it), the container
//! `HEALTHCHECK` probe (a distroless-style image has no curl), and
//! `check --format junit|github`.
//!
//! Kept apart from `mod.rs` so that the CLI definition there only gains the
//! subcommand and format variants.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use driftwatch::report::Report;
use driftwatch::report::ci::{RuleLocations, github_rule_error, render_github, render_junit};
use driftwatch::rules::{RuleError, RuleFile};

use super::{CheckFormat, EXIT_USAGE};

/// `driftwatch --version`: the package version and the git commit it was
/// built from (`src/build.rs`: the checkout's HEAD, the commit `git archive`
/// wrote into `src/git-commit.txt`, `DRIFTWATCH_GIT_COMMIT`, or `unknown`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("DRIFTWATCH_GIT_COMMIT"),
    ")"
);

#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Write `driftwatch.1` and one page per subcommand (`driftwatch-check.1`, …)
    /// into this folder instead of printing the main page.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct HealthcheckArgs {
    /// The agent's address (`http.listen` or `http.metrics_listen`).
    #[arg(long, default_value = driftwatch::config::DEFAULT_LISTEN)]
    listen: std::net::SocketAddr,
    /// Ask `/readyz` instead of `/healthz`.
    #[arg(long)]
    ready: bool,
    /// How long to wait for the answer, e.g. `3s`.
    #[arg(long, default_value = "3s", value_parser = super::parse_interval)]
    timeout: Duration,
}

/// `driftwatch completions SHELL`.
pub fn completions(args: CompletionsArgs, command: &mut clap::Command) -> Result<i32> {
    let mut out = std::io::stdout().lock();
    match args.shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, command, "driftwatch", &mut out)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, command, "driftwatch", &mut out)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, command, "driftwatch", &mut out)
        }
    }
    Ok(0)
}

/// `driftwatch man [--dir DIR]`.
pub fn man(args: ManArgs, command: clap::Command) -> Result<i32> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("cannot write man pages to {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("cannot write the man page")?;
        }
    }
    Ok(0)
}

/// `driftwatch healthcheck`: 0 when the probe answers 200, 1 otherwise
/// (what `HEALTHCHECK CMD` and exec probes read).
pub async fn healthcheck(args: HealthcheckArgs) -> Result<i32> {
    let path = if args.ready { "/readyz" } else { "/healthz" };
    match driftwatch::agent::http_get(args.listen, path, args.timeout).await {
        Ok((200, body)) => {
            println!("{path}: 200 {}", body.trim());
            Ok(0)
        }
        Ok((status, body)) => {
            eprintln!("{path}: {status} {}", body.trim());
            Ok(1)
        }
        Err(e) => {
            eprintln!("{path}: {}: {e}", args.listen);
            Ok(1)
        }
    }
}

/// `check`'s JUnit and GitHub renderings; `None` for the other formats.
pub fn render_ci(
    report: &Report,
    format: CheckFormat,
    rule_files: &[RuleFile],
    started: DateTime<Utc>,
) -> Option<String> {
    match format {
        CheckFormat::Junit => Some(render_junit(
            report,
            "driftwatch check",
            &started.format("%Y-%m-%dT%H:%M:%S").to_string(),
        )),
        CheckFormat::Github => Some(render_github(report, &RuleLocations::of(rule_files))),
        CheckFormat::Table | CheckFormat::Json | CheckFormat::Html => None,
    }
}

/// A `check` that could not start (rules, inputs): with `--format github`,
/// a rule-file error becomes an annotation on its line as well as the
/// usual message; the exit code stays 2.
pub fn check_setup_error(error: anyhow::Error, github: bool) -> Result<i32> {
    if github && let Some(rule_error) = error.downcast_ref::<RuleError>() {
        print!("{}", github_rule_error(rule_error));
    }
    eprintln!("error: {error:#}");
    Ok(EXIT_USAGE)
}

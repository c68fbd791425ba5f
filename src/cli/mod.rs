//! Command-line interface: argument parsing, output, exit codes.
//!
//! Exit codes are part of the interface (CI relies on them): 0 when no
//! error-severity check fails, 1 when one does, 2 for usage, rule or input
//! errors or when nothing was checked. This is the only module that uses
//! `anyhow`; the library reports typed errors.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand, ValueEnum};

use driftwatch::check::run_check;
use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use driftwatch::profile::DatasetProfile;
use driftwatch::report::{Report, render_table};
use driftwatch::{demo, inputs, rules};

/// Exit code for usage, rule and input errors.
const EXIT_USAGE: i32 = 2;

#[derive(Parser)]
#[command(
    name = "driftwatch",
    version,
    about = "Data-quality rules and drift checks for Parquet batches, in one scan."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check Parquet files against rules and print a verdict per rule.
    Check(CheckArgs),
    /// Validate rule files or print their JSON Schema.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Generate demo batches and rules, check them, and show the report.
    Demo(DemoArgs),
    /// Build a reference profile (baseline) of every supported column from Parquet files.
    Baseline(BaselineArgs),
}

#[derive(clap::Args)]
struct BaselineArgs {
    /// Parquet files or folders (searched recursively for *.parquet).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// A rule file, or a folder of rule files matched by their `match` globs.
    #[arg(long)]
    rules: PathBuf,
    /// The profile file to write; a folder (one `<dataset>.profile` each) when several datasets match.
    #[arg(long)]
    output: PathBuf,
    /// Memory available to evaluation, e.g. `512MiB` or `2GiB` (default 1GiB).
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<usize>,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Validate rule files without data (exit 2 on the first error).
    Check {
        /// A rule file or a folder of them.
        path: PathBuf,
    },
    /// Print the JSON Schema of the rule-file format.
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Parquet files or folders (searched recursively for *.parquet).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// A rule file, or a folder of rule files matched by their `match` globs.
    #[arg(long)]
    rules: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Write the output to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The current time for `freshness` (RFC 3339), for reproducible runs.
    #[arg(long, value_parser = parse_now)]
    now: Option<DateTime<Utc>>,
    /// Memory available to evaluation, e.g. `512MiB` or `2GiB` (default 1GiB).
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<usize>,
    /// Print the physical plan of each evaluation (one scan, one aggregate) instead of running it.
    #[arg(long)]
    explain: bool,
    /// A reference profile (from `driftwatch baseline`) to test drift against;
    /// overrides the rule files' `drift.reference`.
    #[arg(long)]
    reference: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where to write the demo files (default: a new folder under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

fn parse_now(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2024-05-01T12:00:00Z: {e}"))
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: usize = number
        .parse()
        .map_err(|_| format!("`{text}`: expected e.g. 512MiB"))?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}` (use B, KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}`: too large"))
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_USAGE
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Check(args) => runtime()?.block_on(check(args)),
        Command::Rules {
            command: RulesCommand::Check { path },
        } => {
            let files = rules::load_rules(&path)?;
            for file in &files {
                println!(
                    "ok: {} — dataset {}, {} check(s), match {}",
                    file.path.display(),
                    file.dataset,
                    file.checks.len(),
                    file.match_glob
                );
            }
            Ok(0)
        }
        Command::Rules {
            command: RulesCommand::Schema,
        } => {
            let schema = schemars::schema_for!(rules::spec::RuleFileSpec);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(0)
        }
        Command::Demo(args) => runtime()?.block_on(run_demo(args)),
        Command::Baseline(args) => runtime()?.block_on(baseline(args)),
    }
}

/// What `check` and `baseline` share: rule files, whether a single rules
/// file was named (then it applies to every input), the inputs, the engine.
struct Setup {
    rule_files: Vec<rules::RuleFile>,
    single: bool,
    inputs: Vec<inputs::Input>,
    engine: Engine,
}

fn setup(rules_path: &Path, paths: &[PathBuf], memory_limit: Option<usize>) -> Result<Setup> {
    let rule_files = rules::load_rules(rules_path)?;
    let single = std::fs::metadata(rules_path)
        .with_context(|| format!("{}", rules_path.display()))?
        .is_file();
    let inputs = inputs::expand(paths)?;
    let engine = Engine::new(&EngineOptions {
        memory_limit,
        ..EngineOptions::default()
    })?;
    Ok(Setup {
        rule_files,
        single,
        inputs,
        engine,
    })
}

async fn baseline(args: BaselineArgs) -> Result<i32> {
    let Setup {
        rule_files,
        single,
        inputs,
        engine,
    } = setup(&args.rules, &args.paths, args.memory_limit)?;
    let (pairs, unmatched) = inputs::assign(&inputs, &rule_files, single);
    for input in &unmatched {
        eprintln!(
            "unmatched (no rule file's `match` applies): {}",
            input.display()
        );
    }
    if pairs.is_empty() {
        eprintln!("error: nothing was profiled (no input matched a rule file)");
        return Ok(2);
    }
    // Merge per dataset in input order, so the same inputs give the same file.
    let mut profiles: std::collections::BTreeMap<String, DatasetProfile> = Default::default();
    let mut failed = false;
    for (input, i) in pairs {
        let evaluation = engine
            .evaluate_with_profiles(
                &input.path,
                &input.display(),
                &rule_files[i],
                Utc::now(),
                &ProfileRequest::AllSupported,
            )
            .await;
        if let Some(error) = &evaluation.report.error {
            eprintln!("error: {error}");
            failed = true;
            continue;
        }
        let Some(profile) = evaluation.profile else {
            eprintln!(
                "warning: {}: no column of a supported type to profile",
                input.display()
            );
            continue;
        };
        match profiles.get_mut(&rule_files[i].dataset) {
            Some(existing) => existing.merge(&profile)?,
            None => {
                profiles.insert(rule_files[i].dataset.clone(), profile);
            }
        }
    }
    if failed {
        eprintln!("error: some inputs could not be read; no profile written");
        return Ok(2);
    }
    let into_folder = profiles.len() > 1 || args.output.is_dir();
    if into_folder {
        std::fs::create_dir_all(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
    }
    for (dataset, profile) in &profiles {
        let path = if into_folder {
            args.output.join(format!("{dataset}.profile"))
        } else {
            args.output.clone()
        };
        profile.write(&path)?;
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        println!(
            "wrote {}: dataset {}, {} rows from {} batch(es), {} column(s), {} bytes",
            path.display(),
            dataset,
            profile.rows,
            profile.sources.len(),
            profile.columns.len(),
            size
        );
    }
    Ok(0)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn check(args: CheckArgs) -> Result<i32> {
    let Setup {
        rule_files,
        single,
        inputs,
        engine,
    } = setup(&args.rules, &args.paths, args.memory_limit)?;
    if args.explain {
        let (pairs, _) = inputs::assign(&inputs, &rule_files, single);
        for (input, i) in pairs {
            let plan = engine
                .explain(&input.path, &rule_files[i], &ProfileRequest::None)
                .await?;
            println!(
                "{} × {}:\n{plan}",
                input.display(),
                rule_files[i].path.display()
            );
        }
        return Ok(0);
    }
    let now = args.now.unwrap_or_else(Utc::now);
    let report = run_check(
        &engine,
        &inputs,
        &rule_files,
        single,
        now,
        args.reference.as_deref(),
    )
    .await;
    emit(&report, args.format, args.output.as_deref())?;
    if report.reports.is_empty() {
        eprintln!("error: nothing was checked (no input matched a rule file)");
    }
    Ok(report.exit_code())
}

fn emit(report: &Report, format: Format, output: Option<&Path>) -> Result<()> {
    let color = output.is_none() && std::io::stdout().is_terminal();
    let text = match format {
        Format::Table => render_table(report, color),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(report)?;
            s.push('\n');
            s
        }
    };
    match output {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

async fn run_demo(args: DemoArgs) -> Result<i32> {
    let root = match args.dir {
        Some(dir) => dir,
        None => {
            let stamp = Utc::now().format("%Y%m%dT%H%M%S");
            std::env::temp_dir().join(format!("driftwatch-demo-{stamp}-{}", std::process::id()))
        }
    };
    let now = Utc::now();
    let files = demo::prepare(&root, now)?;
    let rule_files = rules::load_rules(&files.rules)?;
    let inputs = inputs::expand(std::slice::from_ref(&files.data))?;
    let engine = Engine::new(&EngineOptions::default())?;
    let report = run_check(&engine, &inputs, &rule_files, false, now, None).await;
    emit(&report, args.format, None)?;
    if matches!(args.format, Format::Table) {
        println!();
        println!("Demo files are in {}", files.root.display());
        println!(
            "The last batch has planted failures; that is the point of the demo. Try:\n  \
             driftwatch check {} --rules {} --format json",
            files.data.display(),
            files.rules.display()
        );
    }
    // The planted failures are the demo's content, not an error; only a
    // broken evaluation (exit 2) makes the demo itself fail.
    Ok(if report.exit_code() == 2 { 2 } else { 0 })
}

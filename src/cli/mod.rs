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

use driftwatch::check::run_check_with_profiles;
use driftwatch::engine::{Engine, EngineOptions, ProfileRequest};
use driftwatch::profile::DatasetProfile;
use driftwatch::report::{Report, html, render_table};
use driftwatch::{demo, inputs, rules};

mod agent_cmd;
mod deploy_cmd;
mod webhooks_cmd;

/// Exit code for usage, rule and input errors.
pub(crate) const EXIT_USAGE: i32 = 2;

#[derive(Parser)]
#[command(
    name = "driftwatch",
    version = deploy_cmd::VERSION,
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
    /// Run the agent live on a temporary lake for about a minute: batches land,
    /// drift and rule failures appear midway, the agent catches them.
    Demo(DemoArgs),
    /// Build a reference profile (baseline) of every supported column from Parquet files.
    Baseline(BaselineArgs),
    /// Run the agent: watch folders and evaluate every new batch exactly once.
    Run(RunArgs),
    /// Print the latest result per dataset, from the running agent or its store.
    Status(StatusArgs),
    /// List pending and dead-lettered webhook events, or re-queue a dead letter.
    Webhooks(WebhooksArgs),
    /// Write a dataset's HTML report (latest batch, charts, history) from an agent's state.
    Report(ReportArgs),
    /// The agent's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completions(deploy_cmd::CompletionsArgs),
    /// Print the man page (roff) to standard output, or write one per command to a folder.
    Man(deploy_cmd::ManArgs),
    /// Ask a running agent's `/healthz` (or `/readyz`): exit 0 when it answers 200,
    /// 1 otherwise. For container HEALTHCHECKs, where there is no curl.
    Healthcheck(deploy_cmd::HealthcheckArgs),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the JSON Schema of `driftwatch.toml`.
    Schema,
    /// Validate a config file and print the settings it resolves to.
    Check {
        /// The config file.
        path: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The config file (TOML; see `driftwatch config schema`). Flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// A folder to watch (repeatable).
    #[arg(long)]
    watch: Vec<PathBuf>,
    /// The rules folder (or one rule file).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// The state folder (default: `.driftwatch/` in the first watched folder).
    #[arg(long)]
    state: Option<PathBuf>,
    /// HTTP listen address (default 127.0.0.1:9464; port 0 picks one, written to `agent.json`).
    #[arg(long)]
    listen: Option<String>,
    /// How long a file must stay unchanged before it is read, e.g. `2s`, `500ms`.
    #[arg(long)]
    settle: Option<String>,
    /// List the folders periodically instead of using filesystem events (network mounts).
    #[arg(long)]
    poll: bool,
    /// Batches evaluated at the same time (default: the number of cores).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Memory DataFusion may use across evaluations, e.g. `512MiB` (default 1GiB).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// Ask the agent listening here (default 127.0.0.1:9464).
    #[arg(long)]
    listen: Option<String>,
    /// The agent's state folder: ask the agent that runs on it, or read its store when none does.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The agent's state folder (its running agent is asked over HTTP; a stopped one's store is read).
    #[arg(long)]
    state: PathBuf,
    /// The dataset (a rule file's `dataset`).
    #[arg(long)]
    dataset: String,
    /// The HTML file to write.
    #[arg(long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct WebhooksArgs {
    #[command(subcommand)]
    command: Option<WebhooksCommand>,
    /// Ask the agent listening here (default 127.0.0.1:9464).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// The agent's state folder: ask the agent that runs on it, or use its store when none does.
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Environment variable holding the agent's API token (`http.api_token_env`);
    /// with `--state`, the one named in the agent's `agent.json` is used.
    #[arg(long, global = true)]
    token_env: Option<String>,
    /// Also list delivered events and dry runs.
    #[arg(long)]
    all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Re-queue a dead-lettered event: it is sent again at once, same event id.
    Retry {
        /// The event id (from `driftwatch webhooks`).
        event_id: String,
    },
}

#[derive(clap::Args)]
struct BaselineArgs {
    /// Parquet files or folders (searched recursively for *.parquet), or
    /// Delta or Iceberg table folders (read as of `--table-version`), or object-store
    /// URLs: an object or a prefix (`s3://bucket/flights/`). Default: the
    /// tables the rule files name (`table:`).
    paths: Vec<PathBuf>,
    /// Profile tables as of this version (every file live then; default:
    /// the latest). Delta: the commit number; Iceberg: the snapshot's
    /// sequence number.
    #[arg(long)]
    table_version: Option<u64>,
    /// A rule file, or a folder of rule files matched by their `match` globs.
    #[arg(long)]
    rules: PathBuf,
    /// The profile file to write; a folder (one `<dataset>.profile` each) when several datasets match.
    #[arg(long)]
    output: PathBuf,
    /// Memory available to evaluation, e.g. `512MiB` or `2GiB` (default 1GiB).
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<usize>,
    /// Longest one batch's evaluation may take, e.g. `15m` (default) or
    /// `500ms`; a longer one is stopped and reported as an error.
    #[arg(long, value_parser = parse_interval)]
    evaluation_timeout: Option<std::time::Duration>,
    /// A config file whose `[lake.object_store]` section says how to reach
    /// `s3://`/`az://` inputs (endpoint, region, path style); credentials
    /// come from the environment (`AWS_ACCESS_KEY_ID`, …).
    #[arg(long)]
    config: Option<PathBuf>,
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
    /// Profile Parquet files and write a commented starter rule file whose
    /// every check passes on them, each with its evidence.
    Suggest {
        /// Parquet files or folders (searched recursively for *.parquet).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// The dataset name (default: the first path's file or folder name).
        #[arg(long)]
        dataset: Option<String>,
        /// Write the rule file here (and its drift baseline next to it, as
        /// `<name>.profile`); default: standard output, without a drift section.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// `check`'s output formats.
#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum CheckFormat {
    Table,
    Json,
    /// A self-contained HTML file: summary, checks, drift and a chart per column.
    Html,
    /// JUnit XML for CI test reporters: a test case per check per batch.
    Junit,
    /// GitHub Actions annotations (`::error file=…::`) for failing checks and rule errors.
    Github,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Parquet files or folders (searched recursively for *.parquet), or
    /// Delta or Iceberg table folders (the files one version added), or object-store
    /// URLs: an object or a prefix (`s3://bucket/flights/`). Default: the
    /// tables the rule files name (`table:`).
    paths: Vec<PathBuf>,
    /// Check this version of tables (the files it added; default: the
    /// latest version). Delta: the commit number; Iceberg: the snapshot's
    /// sequence number.
    #[arg(long)]
    table_version: Option<u64>,
    /// A rule file, or a folder of rule files matched by their `match` globs.
    #[arg(long)]
    rules: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: CheckFormat,
    /// Write the output to this file instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The current time for `freshness` (RFC 3339), for reproducible runs.
    #[arg(long, value_parser = parse_now)]
    now: Option<DateTime<Utc>>,
    /// Memory available to evaluation, e.g. `512MiB` or `2GiB` (default 1GiB).
    #[arg(long, value_parser = parse_bytes)]
    memory_limit: Option<usize>,
    /// Longest one batch's evaluation may take, e.g. `15m` (default) or
    /// `500ms`; a longer one is stopped and reported as an error.
    #[arg(long, value_parser = parse_interval)]
    evaluation_timeout: Option<std::time::Duration>,
    /// Print the physical plan of each evaluation (one scan, one aggregate) instead of running it.
    #[arg(long)]
    explain: bool,
    /// A reference profile (from `driftwatch baseline`) to test drift against;
    /// overrides the rule files' `drift.reference`.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// A history file for `anomaly` checks: read before the run (missing:
    /// an empty history) and written back with this run's batches added, so
    /// CI runs learn what normal looks like.
    #[arg(long)]
    history: Option<PathBuf>,
    /// A config file whose `[lake.object_store]` section says how to reach
    /// `s3://`/`az://` inputs (endpoint, region, path style); credentials
    /// come from the environment (`AWS_ACCESS_KEY_ID`, …).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DemoArgs {
    /// Where to make the demo lake (default: a new folder under the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Batches to land.
    #[arg(long, default_value_t = 12)]
    batches: usize,
    /// Time between batches, e.g. `5s` or `500ms`.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    interval: std::time::Duration,
    /// Rows per batch.
    #[arg(long, default_value_t = 20_000)]
    rows: u64,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    driftwatch::config::parse_interval(text)
}

fn parse_now(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2024-05-01T12:00:00Z: {e}"))
}

fn parse_bytes(text: &str) -> Result<usize, String> {
    driftwatch::config::parse_bytes(text)
}

/// Runs the CLI and returns the process exit code.
pub fn main() -> i32 {
    driftwatch::tls::ensure_crypto_provider();
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
            command:
                RulesCommand::Suggest {
                    paths,
                    dataset,
                    output,
                },
        } => runtime()?.block_on(suggest_rules(paths, dataset, output)),
        Command::Rules {
            command: RulesCommand::Schema,
        } => {
            let schema = schemars::schema_for!(rules::spec::RuleFileSpec);
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(0)
        }
        Command::Demo(args) => runtime()?.block_on(run_demo(args)),
        Command::Baseline(args) => runtime()?.block_on(baseline(args)),
        Command::Run(args) => agent_cmd::run(args),
        Command::Status(args) => runtime()?.block_on(agent_cmd::status(args)),
        Command::Webhooks(args) => runtime()?.block_on(webhooks_cmd::webhooks(args)),
        Command::Report(args) => runtime()?.block_on(webhooks_cmd::report(args)),
        Command::Config {
            command: ConfigCommand::Schema,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&driftwatch::config::json_schema())?
            );
            Ok(0)
        }
        Command::Completions(args) => {
            deploy_cmd::completions(args, &mut <Cli as clap::CommandFactory>::command())
        }
        Command::Man(args) => deploy_cmd::man(args, <Cli as clap::CommandFactory>::command()),
        Command::Healthcheck(args) => runtime()?.block_on(deploy_cmd::healthcheck(args)),
        Command::Config {
            command: ConfigCommand::Check { path },
        } => {
            let settings = driftwatch::config::Settings::resolve(
                Some(&path),
                &driftwatch::config::Overrides::default(),
            )?;
            println!("ok: {}\n{settings:#?}", path.display());
            Ok(0)
        }
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

async fn setup(
    rules_path: &Path,
    paths: &[PathBuf],
    table_version: Option<u64>,
    memory_limit: Option<usize>,
    evaluation_timeout: Option<std::time::Duration>,
    config: Option<&Path>,
) -> Result<Setup> {
    let rule_files = rules::load_rules(rules_path)?;
    let single = std::fs::metadata(rules_path)
        .with_context(|| format!("{}", rules_path.display()))?
        .is_file();
    // Only `[lake.object_store]` of a config file matters here.
    let object_store = match config {
        Some(path) => driftwatch::config::object_store_options(path)?,
        None => Default::default(),
    };
    let mut inputs = if paths.is_empty() {
        let tables = inputs::tables_of(&rule_files, None);
        if tables.is_empty() {
            anyhow::bail!(
                "no input: give Parquet files, folders or Delta or Iceberg tables, or rule files with `table:`"
            );
        }
        tables
    } else {
        inputs::expand_all(paths, &object_store).await?
    };
    if let Some(version) = table_version {
        let mut any = false;
        for table in inputs.iter_mut().filter_map(|i| i.table.as_mut()) {
            table.version = Some(version);
            any = true;
        }
        if !any {
            anyhow::bail!("`--table-version` needs a Delta or Iceberg table among the inputs");
        }
    }
    let engine = Engine::new(&EngineOptions {
        memory_limit,
        evaluation_timeout,
        object_store,
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
    } = setup(
        &args.rules,
        &args.paths,
        args.table_version,
        args.memory_limit,
        args.evaluation_timeout,
        args.config.as_deref(),
    )
    .await?;
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
        // A table: every file live at the version, as one batch.
        let table = match &input.table {
            Some(t) => {
                match driftwatch::sources::table::read_version(
                    t.format,
                    &t.location,
                    t.catalog.as_ref(),
                    t.version,
                    true,
                    engine.object_store(),
                )
                .await
                {
                    Ok(version) => Some(version),
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed = true;
                        continue;
                    }
                }
            }
            None => None,
        };
        if let Some(reason) = table
            .as_ref()
            .and_then(|t| t.unreadable.as_ref().or(t.table.skipped.as_ref()))
        {
            eprintln!("error: {}: {reason}", input.display());
            failed = true;
            continue;
        }
        let source = table
            .as_ref()
            .map(|t| t.source())
            .unwrap_or_else(|| input.display());
        let batch = driftwatch::engine::BatchInput {
            path: &input.path,
            source: &source,
            partitions: table
                .as_ref()
                .map(|t| &t.partitions)
                .unwrap_or(&input.partitions),
            files: table.as_ref().map(|t| t.files.as_slice()).unwrap_or(&[]),
        };
        let evaluation = engine
            .evaluate_batch(
                &batch,
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
            eprintln!("warning: {source}: no column of a supported type to profile");
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

/// `rules suggest`: one profiling scan per input, the suggestions, then one
/// verification scan per input of the suggested file (checks that fail on
/// their own data are left out, with why).
async fn suggest_rules(
    paths: Vec<PathBuf>,
    dataset: Option<String>,
    output: Option<PathBuf>,
) -> Result<i32> {
    use driftwatch::suggest;
    let inputs = inputs::expand_all(&paths, &Default::default()).await?;
    if let Some(input) = inputs.iter().find(|i| {
        i.table.is_some() || driftwatch::location::ObjectUrl::from_path(&i.path).is_some()
    }) {
        anyhow::bail!(
            "{}: `rules suggest` reads local Parquet files only",
            input.display()
        );
    }
    let Some(first) = inputs.first() else {
        anyhow::bail!("no Parquet file found in the given paths");
    };
    let dataset = match dataset {
        Some(d) => d,
        None => paths
            .first()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "data".to_string()),
    };
    let quoted = serde_json::to_string(&dataset)?;
    let profile_rules = rules::parse_rule_file(
        Path::new("suggest.yaml"),
        &format!(
            "dataset: {quoted}
"
        ),
    )?;
    let engine = Engine::new(&EngineOptions::default())?;
    let mut merged: Option<DatasetProfile> = None;
    let mut batch_rows = Vec::new();
    for input in &inputs {
        let source = input.display();
        let batch = driftwatch::engine::BatchInput {
            path: &input.path,
            source: &source,
            partitions: &input.partitions,
            files: &[],
        };
        let evaluation = engine
            .evaluate_batch(
                &batch,
                &profile_rules,
                Utc::now(),
                &ProfileRequest::AllSupported,
            )
            .await;
        if let Some(error) = evaluation.report.error {
            anyhow::bail!("{error}");
        }
        batch_rows.push(evaluation.report.rows.unwrap_or(0));
        if let Some(profile) = evaluation.profile {
            match &mut merged {
                Some(m) => m.merge(&profile)?,
                None => merged = Some(profile),
            }
        }
    }
    let profile = merged.unwrap_or_else(|| DatasetProfile::new(dataset.clone()));
    let file =
        std::fs::File::open(&first.path).with_context(|| format!("{}", first.path.display()))?;
    let arrow_schema = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{}", first.path.display()))?
        .schema()
        .clone();
    let schema: Vec<suggest::SchemaColumn> = arrow_schema
        .fields()
        .iter()
        .map(|f| suggest::SchemaColumn {
            name: f.name().clone(),
            logical: suggest::logical_name(f.data_type()),
            integer: f.data_type().is_integer(),
        })
        .collect();
    let baseline = match &output {
        Some(path) => {
            let baseline = path.with_extension("profile");
            profile.write(&baseline)?;
            Some(
                baseline
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        }
        None => None,
    };
    let mut suggestions = suggest::suggest(
        &dataset,
        &suggest::Evidence {
            schema: &schema,
            profile: &profile,
            batch_rows: &batch_rows,
            baseline: baseline.as_deref(),
        },
    );
    suggestions.header = vec![
        format!(
            "Suggested by `driftwatch rules suggest` from {} input(s), {} rows; every check passed on them.",
            inputs.len(),
            driftwatch::anomaly::format_value(profile.rows as f64)
        ),
        "Review it: the evidence above each check is what it was learned from.".to_string(),
    ];
    let rule_path = output
        .clone()
        .unwrap_or_else(|| PathBuf::from("suggested.yaml"));
    // Verify: every suggested check must pass on the data it came from. One
    // scan is enough: a check's verdict does not depend on the other checks
    // of its file (and no suggested check refers to another), so dropping
    // the ones that failed leaves the others' verdicts as they were, and a
    // drifting input only turns the drift section to a warning. (A second
    // verification scan cost a third of the run on the 10 M-row file.)
    let mut text = suggestions.render();
    {
        let candidate = rules::parse_rule_file(&rule_path, &text)
            .with_context(|| "internal error: the suggested rule file does not parse")?;
        let report = driftwatch::check::run_check(
            &engine,
            &inputs,
            std::slice::from_ref(&candidate),
            true,
            Utc::now(),
            None,
        )
        .await;
        let mut failures = std::collections::BTreeMap::new();
        let mut drifted = None;
        for r in &report.reports {
            for c in r.checks.iter().filter(|c| c.status.is_problem()) {
                failures.entry(c.name.clone()).or_insert_with(|| {
                    format!("{}: {}", r.source, c.message.clone().unwrap_or_default())
                });
            }
            if r.drift.as_ref().is_some_and(|d| d.dataset_drift) && drifted.is_none() {
                drifted = Some(format!(
                    "{} drifts from the merged profile of all inputs",
                    r.source
                ));
            }
        }
        if !failures.is_empty() || drifted.is_some() {
            suggestions.drop_failing(&failures);
            if drifted.is_some() {
                suggestions.drift_warn = drifted;
            }
            text = suggestions.render();
        }
    }
    match &output {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("{}", path.display()))?;
            eprintln!(
                "wrote {} ({} checks{}){}",
                path.display(),
                suggestions.checks.len(),
                if suggestions.dropped.is_empty() {
                    String::new()
                } else {
                    format!(", {} left out", suggestions.dropped.len())
                },
                baseline
                    .map(|b| format!(" and its drift baseline {b}"))
                    .unwrap_or_default()
            );
        }
        None => print!("{text}"),
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
    let started = Utc::now();
    let setup = setup(
        &args.rules,
        &args.paths,
        args.table_version,
        args.memory_limit,
        args.evaluation_timeout,
        args.config.as_deref(),
    )
    .await;
    let Setup {
        rule_files,
        single,
        inputs,
        engine,
    } = match setup {
        Ok(setup) => setup,
        Err(e) => return deploy_cmd::check_setup_error(e, args.format == CheckFormat::Github),
    };
    if args.explain {
        let (pairs, _) = inputs::assign(&inputs, &rule_files, single);
        for (input, i) in pairs {
            if input.table.is_some() {
                anyhow::bail!(
                    "{}: `--explain` does not read tables yet; give one of its Parquet files",
                    input.display()
                );
            }
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
    let mut histories = match &args.history {
        Some(path) => {
            let datasets: Vec<&str> = rule_files.iter().map(|r| r.dataset.as_str()).collect();
            driftwatch::anomaly::history::Histories::read(path, &datasets)?
        }
        None => Default::default(),
    };
    // A progress bar on a terminal, for more than one file; nothing otherwise.
    let bar = (inputs.len() > 1 && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} evaluations, {elapsed} elapsed, ~{eta} left",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let run = run_check_with_profiles(
        &engine,
        &inputs,
        &rule_files,
        single,
        now,
        args.reference.as_deref(),
        &mut histories,
        &|done, total| {
            if let Some(bar) = &bar {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
        },
    )
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(path) = &args.history {
        histories.write(path)?;
    }
    let report = run.report;
    if args.format == CheckFormat::Html {
        let charts: Vec<Option<html::Profiles<'_>>> = run
            .profiles
            .iter()
            .map(|p| {
                p.as_ref()
                    .map(|(reference, current)| html::Profiles { reference, current })
            })
            .collect();
        let text = html::render_html(&report, &charts, "driftwatch check");
        write_output(&text, args.output.as_deref())?;
    } else if let Some(text) = deploy_cmd::render_ci(&report, args.format, &rule_files, started) {
        write_output(&text, args.output.as_deref())?;
    } else {
        emit(&report, args.format, args.output.as_deref())?;
    }
    if report.reports.is_empty() {
        eprintln!("error: nothing was checked (no input matched a rule file)");
    }
    Ok(report.exit_code())
}

fn emit(report: &Report, format: CheckFormat, output: Option<&Path>) -> Result<()> {
    let color = output.is_none() && std::io::stdout().is_terminal();
    let text = match format {
        CheckFormat::Table => render_table(report, color),
        CheckFormat::Json | CheckFormat::Html | CheckFormat::Junit | CheckFormat::Github => {
            let mut s = serde_json::to_string_pretty(report)?;
            s.push('\n');
            s
        }
    };
    write_output(&text, output)
}

fn write_output(text: &str, output: Option<&Path>) -> Result<()> {
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
    // The demo tells its story on stdout; the agent logs only errors.
    agent_cmd::init_logging(driftwatch::config::LogFormat::Text, "error");
    let options = demo::live::LiveOptions {
        root,
        batches: args.batches.max(2),
        interval: args.interval,
        rows: args.rows.max(1000),
    };
    let mut out = std::io::stdout();
    let summary = demo::live::run_live(&options, &mut out).await?;
    // The planted failures are the demo's content, not an error; only a
    // demo in which nothing was evaluated fails.
    Ok(if summary.evaluated == 0 { 2 } else { 0 })
}

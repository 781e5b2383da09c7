//! `btlog-monitor`: audits tlog-tiles logs, watches packages and catches forks (PROTOCOL.md §7).
//!
//! Exit codes of `--once` (and of `verify-evidence`): 0 all is well, 1 a problem was found
//! (any alert but `watch`; for `verify-evidence`: the evidence does not prove a split view),
//! 2 the audit could not be completed (bad arguments, unreachable log, state error).

#[path = "../allocator.rs"]
mod allocator;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use btlog_monitor::alert::{Sink, WEBHOOK_TIMEOUT};
use btlog_monitor::config::{load_vkey, parse_duration, FileConfig};
use btlog_monitor::evidence::Evidence;
use btlog_monitor::watch::{WatchRule, Watcher};
use btlog_monitor::{EntryFormat, LogMonitor, LogSpec};
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};

/// Audit transparency logs through their tlog-tiles API: verify every checkpoint by
/// recomputing it from the entries, check the binary transparency claims of every entry,
/// alert on watched packages, and write evidence of forks.
#[derive(Parser)]
#[command(
    name = "btlog-monitor",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Check an evidence file on its own: exit 0 when it proves the log signed two
    /// inconsistent trees, 1 when it does not.
    VerifyEvidence {
        /// The evidence JSON file written by the monitor.
        file: PathBuf,
        /// A witness's cosignature vkey (repeatable): also say whether it cosigned both
        /// checkpoints, which a witness checking consistency never does.
        #[arg(long = "witness", value_name = "VKEY")]
        witnesses: Vec<String>,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Base URL of the log's tlog-tiles API (repeat for mirrors of the same log).
    #[arg(long = "log", value_name = "URL")]
    logs: Vec<String>,
    /// The log's verifier key: a vkey file or the vkey text.
    #[arg(long)]
    vkey: Option<String>,
    /// State directory (one subdirectory per log origin).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Alert on every entry of packages matching this purl pattern (repeatable; `*` wildcard).
    #[arg(long = "watch", value_name = "PATTERN")]
    watch: Vec<String>,
    /// Audit up to the current checkpoints, then exit (0 all well, 1 problem, 2 error).
    #[arg(long)]
    once: bool,
    /// Time between rounds when running as a daemon [default: 60s].
    #[arg(long)]
    interval: Option<String>,
    /// TOML file with logs, watch rules (with expected publishers) and settings.
    #[arg(long)]
    config: Option<PathBuf>,
    /// POST every alert (JSON) to this URL as well.
    #[arg(long)]
    webhook: Option<String>,
    /// Serve Prometheus `/metrics` on this address (daemon mode).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// What the `--log` entries are: `opaque` audits another kind of tlog-tiles log (tree and
    /// checkpoints only; no claims, no watch rules).
    #[arg(long, value_enum, default_value_t = EntryFormat::Btlog)]
    entries: EntryFormat,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
    /// A C2SP tlog-policy file: alert `witness` when a served checkpoint of a log it names
    /// lacks its witness quorum.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// With --policy: alert when the quorum's cosignatures are older than this (e.g. 24h).
    #[arg(long, value_name = "DURATION")]
    max_age: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = match cli.command {
        Some(Command::VerifyEvidence { file, witnesses }) => verify_evidence(&file, &witnesses),
        None => tokio::runtime::Runtime::new()
            .context("starting the runtime")
            .and_then(|rt| rt.block_on(run(cli.run))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("btlog-monitor: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn verify_evidence(file: &PathBuf, witnesses: &[String]) -> anyhow::Result<ExitCode> {
    let json = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let keys = witnesses
        .iter()
        .map(|w| load_vkey(w))
        .collect::<Result<Vec<_>, _>>()?;
    match Evidence::verify(&json) {
        Ok(what) => {
            println!("PROVEN: {what}");
            let evidence: Evidence = serde_json::from_slice(&json)?;
            let refs: Vec<&btlog_core::note::Verifier> = keys.iter().collect();
            for w in evidence.cosigned_by_both(&refs) {
                println!("PROVEN: witness {} cosigned both checkpoints", w.vkey());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("NOT PROVEN: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let mut logs = file.logs()?;
    match (&args.vkey, args.logs.is_empty()) {
        (Some(vkey), false) => logs.push(LogSpec {
            urls: args.logs.clone(),
            vkey: load_vkey(vkey)?,
            entries: args.entries,
            witness: None,
        }),
        (None, false) => bail!("--log needs --vkey"),
        (Some(_), true) => bail!("--vkey needs --log"),
        (None, true) => {}
    }
    if let Some(path) = args.policy.as_ref().or(file.policy.as_ref()) {
        let text = std::fs::read(path).with_context(|| format!("--policy {}", path.display()))?;
        let policy = btlog_core::policy::Policy::parse(&text)
            .with_context(|| format!("--policy {}", path.display()))?;
        let max_age = match args.max_age.as_ref().or(file.max_age.as_ref()) {
            Some(s) => Some(parse_duration(s)?.as_secs().max(1)),
            None => None,
        };
        let rule = Arc::new(btlog_monitor::WitnessRule { policy, max_age });
        let mut named = 0;
        for spec in &mut logs {
            if rule
                .policy
                .logs()
                .iter()
                .any(|l| l.public_key() == spec.vkey.public_key())
            {
                spec.witness = Some(rule.clone());
                named += 1;
            }
        }
        if named == 0 {
            bail!("the --policy names none of the monitored logs");
        }
    } else if args.max_age.is_some() || file.max_age.is_some() {
        bail!("--max-age needs --policy");
    }
    if logs.is_empty() {
        bail!(
            "nothing to monitor: give --log URL --vkey VKEY, or --config FILE with [[log]] tables"
        );
    }
    let state = args
        .state
        .clone()
        .or(file.state.clone())
        .context("--state DIR is required (or `state` in the config file)")?;
    let interval = match args.interval.as_ref().or(file.interval.as_ref()) {
        Some(s) => parse_duration(s)?,
        None => Duration::from_secs(60),
    };
    let mut rules = file.watch.clone();
    rules.extend(args.watch.iter().map(|p| WatchRule {
        pattern: p.clone(),
        publishers: vec![],
    }));
    let watcher = Arc::new(Watcher::new(rules));
    let sink = Arc::new(Sink::new(args.webhook.clone().or(file.webhook.clone())));
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let mut monitors = Vec::new();
    for spec in &logs {
        let m = LogMonitor::open(spec, &state, watcher.clone(), sink.clone(), progress)
            .with_context(|| format!("opening the state of {}", spec.vkey.name()))?;
        monitors.push(m);
    }
    if args.once {
        let mut failed = false;
        for m in &mut monitors {
            if let Err(e) = m.poll().await {
                eprintln!("btlog-monitor: {}: {e}", m.origin());
                failed = true;
            }
        }
        sink.finish(WEBHOOK_TIMEOUT).await;
        return Ok(match (sink.found_problem(), failed) {
            (true, _) => ExitCode::from(1),
            (false, true) => ExitCode::from(2),
            (false, false) => ExitCode::SUCCESS,
        });
    }
    if let Some(addr) = args.listen.or(file.listen) {
        serve_metrics(addr, sink.clone()).await?;
    }
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    loop {
        for m in &mut monitors {
            match m.poll().await {
                Ok(()) => tracing::info!(
                    log = m.origin(),
                    size = m.verified().checkpoint.size,
                    "verified"
                ),
                Err(e) => tracing::warn!(log = m.origin(), error = %e, "round incomplete"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
    }
    sink.finish(WEBHOOK_TIMEOUT).await;
    Ok(ExitCode::SUCCESS)
}

async fn serve_metrics(addr: SocketAddr, sink: Arc<Sink>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(%addr, "serving /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let sink = sink.clone();
            async move { sink.metrics() }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok(())
}

//! `btlog`: run a log server, manage its credentials and keys (PROTOCOL.md §7).

mod allocator;
mod cli;

use btlog_core::keys;
use btlog_server::api::Server;
use btlog_server::config::{self, Config};
use btlog_server::log::auth;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};

/// A binary transparency log for software package registries.
#[derive(Parser)]
#[command(name = "btlog", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the log server (HTTP tlog-tiles + /v1 JSON API, and gRPC).
    Serve(ServeArgs),
    /// Add a submitter credential for a registry; prints the token alone on stdout.
    Token {
        /// Data directory of the log.
        #[arg(long, default_value = "btlog-data")]
        data: PathBuf,
        /// Registry name stamped into every entry submitted with this token.
        #[arg(long)]
        registry: String,
        /// Purl prefix the token may write, whole segments (`pkg:npm/%40acme`); repeatable;
        /// `*` for any package.
        #[arg(long = "allow", value_name = "PURL-PREFIX", required = true)]
        allow: Vec<String>,
    },
    /// Create a log signing key file (mode 0600), or with --witness a witness's cosignature
    /// key; prints the vkey.
    Keygen {
        /// Log origin (or, with --witness, the witness name), which is also the key name.
        #[arg(long)]
        origin: String,
        /// Private key file to create (never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Make a cosignature/v1 witness key (C2SP tlog-cosignature) instead of a log key.
        #[arg(long)]
        witness: bool,
    },
    /// Run a C2SP tlog-witness: cosign checkpoints of the configured logs that extend what it
    /// cosigned before (POST <prefix>/add-checkpoint). Prints the witness's vkey.
    Witness {
        /// TOML file: key, state, listen, prefix, logs (vkeys), timeout_secs, max_connections.
        #[arg(long)]
        config: PathBuf,
    },
    /// Log artifacts (one, or a JSON Lines batch) and keep their .tlog-proof files.
    Submit(Box<cli::submit::SubmitArgs>),
    /// Backfill a registry's history from its own metadata files (crates.io index files).
    Import(cli::import::ImportArgs),
    /// Audit a lockfile (Cargo.lock): is every locked artifact logged as pinned, not withdrawn?
    Audit(cli::audit::AuditArgs),
    /// Print the entry at an index.
    Get(cli::fetch::GetArgs),
    /// Print a .tlog-proof of the entry at an index for the latest checkpoint.
    Prove(cli::fetch::ProveArgs),
    /// Verify an artifact is logged under its identity, online (--log) or offline (--proof).
    Verify(cli::verify::VerifyArgs),
    /// Rebuild a log's data directory from the bucket it published to.
    Restore(cli::restore::RestoreArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory [default: ./btlog-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// HTTP listen address [default: 127.0.0.1:8080].
    #[arg(long)]
    http: Option<SocketAddr>,
    /// gRPC listen address [default: 127.0.0.1:50051].
    #[arg(long)]
    grpc: Option<SocketAddr>,
    /// Log origin for a key created in the data directory [default: localhost/btlog].
    #[arg(long)]
    origin: Option<String>,
    /// Private key file from `btlog keygen`; the origin is then the key's name.
    #[arg(long)]
    key: Option<PathBuf>,
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Publish the log's tiles to this S3 bucket (s3://bucket[/prefix]); the endpoint, region
    /// and credentials come from `[publish]` in the config or the AWS_* environment.
    #[arg(long, value_name = "URL")]
    publish: Option<String>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        c.data = self.data.unwrap_or(c.data);
        c.http = self.http.unwrap_or(c.http);
        c.grpc = self.grpc.unwrap_or(c.grpc);
        c.origin = self.origin.unwrap_or(c.origin);
        c.key = self.key.or(c.key);
        if let Some(url) = self.publish {
            match &mut c.publish {
                Some(p) => p.bucket.url = url,
                None => c.publish = Some(config::Publish::to(&url)),
            }
        }
        c.validate()?;
        Ok(c)
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token {
            data,
            registry,
            allow,
        } => token(data, &registry, &allow),
        Command::Keygen {
            origin,
            out,
            witness,
        } => keygen(&origin, &out, witness),
        Command::Witness { config } => witness(&config),
        Command::Submit(args) => cli::exit(cli::submit::run(*args)),
        Command::Import(args) => cli::exit(cli::import::run(args)),
        Command::Audit(args) => cli::exit(cli::audit::run(args)),
        Command::Get(args) => cli::exit(cli::fetch::get(args)),
        Command::Prove(args) => cli::exit(cli::fetch::prove(args)),
        Command::Verify(args) => cli::exit(cli::verify::run(args)),
        Command::Restore(args) => cli::exit(cli::restore::run(args)),
    };
    if let Err(e) = result {
        // Library errors already carry their causes in their one-line message.
        eprintln!("btlog: {e}");
        std::process::exit(1);
    }
}

fn token(data: PathBuf, registry: &str, allow: &[String]) -> anyhow::Result<()> {
    let token = auth::add_token(&config::tokens_path(&data), registry, allow)?;
    println!("{token}");
    Ok(())
}

fn keygen(origin: &str, out: &std::path::Path, witness: bool) -> anyhow::Result<()> {
    let signer = if witness {
        keys::generate_cosigner(origin)?
    } else {
        keys::generate(origin)?
    };
    btlog_client::keyfile::write_private_key(out, &signer)?;
    println!("{}", signer.verifier().vkey());
    Ok(())
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

fn witness(path: &std::path::Path) -> anyhow::Result<()> {
    let config: btlog_server::witness::WitnessConfig = btlog_client::file::read_toml(path)?;
    init_logging();
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let witness = btlog_server::witness::Witness::open(&config)?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        println!("{}", witness.verifier().vkey());
        tracing::info!(vkey = %witness.verifier().vkey(), %addr, "btlog witness serving");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let serving = tokio::spawn({
            let config = config.clone();
            async move { btlog_server::witness::serve(witness, &config, listener, stopped).await }
        });
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        let _ = stop.send(true);
        serving.await?;
        Ok(())
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    init_logging();
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let server = Server::start(&config).await?;
    println!("{}", server.log().verifier().vkey());
    tracing::info!(
        vkey = %server.log().verifier().vkey(),
        vkey_file = %config.vkey_path().display(),
        http = %server.http_addr(),
        grpc = %server.grpc_addr(),
        "btlog serving"
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match server.log().reload_tokens() {
                Ok(n) => tracing::info!(tokens = n, "reloaded tokens"),
                Err(e) => tracing::error!(error = %e, "token reload failed; keeping the old tokens"),
            },
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await?;
    Ok(())
}

//! `kiro-gateway [--host H] [--port P] [--config FILE] [--demo]`: argument parsing, logging,
//! then the library's server. `kiro-gateway codex-catalog` prints the Codex CLI's model
//! catalogue for the models the configured accounts list. No logic of its own.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiro_gateway::config::{Config, ValidConfig};
use kiro_gateway::mock::{MockConfig, MockKiro};
use kiro_gateway::server::{serve, Gateway};
use tokio_util::sync::CancellationToken;

/// OpenAI- and Anthropic-compatible gateway to the Claude models of a Kiro subscription.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on (SERVER_HOST; default 127.0.0.1).
    #[arg(long, short = 'H')]
    host: Option<String>,
    /// Port to listen on (SERVER_PORT; default 8000).
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// config.toml to read (default: ./config.toml when present).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Run on the bundled offline mock upstream instead of Kiro (no credentials needed).
    #[arg(long, global = true)]
    demo: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print a Codex CLI model catalogue (for `model_catalog_json` in ~/.codex/config.toml)
    /// for the models the configured accounts list now.
    CodexCatalog,
}

/// glibc's tunable that fixes the size from which a block gets a mapping of its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_TUNABLE: &str = "glibc.malloc.mmap_threshold";

/// Give memory back after a burst of large bodies. glibc raises its mmap threshold each time a
/// large mapped block is freed (up to 32 MiB), so after the first large request body the next
/// ones are carved from its heaps, which it keeps: 48 refused 31 MB bodies left the gateway at
/// 572 MiB resident when idle. With the threshold fixed, every block of 256 KiB or more is a
/// mapping of its own, returned on free: idle is back at 10 MiB (tests/memory.rs).
///
/// glibc reads its tunables only when a process starts, and setting them from inside
/// (`mallopt`) takes unsafe code this crate forbids, so the binary re-executes itself once
/// with `GLIBC_TUNABLES` extended. A `GLIBC_TUNABLES` that already sets the threshold is left
/// as it is (that is also how to choose another value). If the re-execution fails, the
/// gateway runs on with glibc's defaults.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_malloc_mmap_threshold() {
    use std::os::unix::process::CommandExt;
    let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if current.contains(MMAP_THRESHOLD_TUNABLE) {
        return;
    }
    let ours = format!("{MMAP_THRESHOLD_TUNABLE}={}", 256 * 1024);
    let tunables = if current.is_empty() {
        ours
    } else {
        format!("{current}:{ours}")
    };
    let mut argv = std::env::args_os();
    let mut cmd = std::process::Command::new("/proc/self/exe");
    if let Some(arg0) = argv.next() {
        cmd.arg0(arg0);
    }
    // only returns on failure
    let _ = cmd.args(argv).env("GLIBC_TUNABLES", tunables).exec();
}

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fix_malloc_mmap_threshold();
    let args = Args::parse();
    let mut cfg = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kiro-gateway: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(h) = args.host.clone() {
        cfg.host = h;
    }
    if let Some(p) = args.port {
        cfg.port = p;
    }
    // one worker: a current-thread runtime, which never wakes another thread for a task
    let mut builder = if cfg.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if cfg.worker_threads > 1 {
        builder.worker_threads(cfg.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiro-gateway: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Some(Command::CodexCatalog) => runtime.block_on(codex_catalog(args.demo, cfg)),
        None => runtime.block_on(run(args, cfg)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiro-gateway: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logs(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{filter},hyper=warn,hyper_util=warn,rustls=warn,h2=warn,tower_http=info"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// What the server and `codex-catalog` both start from: with `--demo` an in-process mock
/// upstream on loopback with its own credentials (the caller keeps it alive), then the checked
/// configuration, logging, and the gateway built from it.
async fn prepare(
    demo: bool,
    mut cfg: Config,
) -> Result<(Option<MockKiro>, ValidConfig, Gateway), Box<dyn std::error::Error>> {
    let mut mock = None;
    if demo {
        // the demo's refresh token lives in memory only; a mock that rotated it would make the
        // gateway warn that the new one is lost on restart, which means nothing here
        let m = MockKiro::start(MockConfig {
            rotate_refresh_tokens: false,
            ..MockConfig::default()
        })
        .await?;
        cfg.use_mock(&m);
        mock = Some(m);
    }
    let valid = cfg.validate()?;
    init_logs(valid.log_filter, valid.json_logs);
    if !valid.has_credentials() {
        return Err(kiro_gateway::auth::source::HOW_TO_PROVIDE.into());
    }
    let gateway = Gateway::from_config(&valid)?;
    Ok((mock, valid, gateway))
}

async fn run(args: Args, cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let (_mock, valid, gateway) = prepare(args.demo, cfg).await?;
    let loaded = match tokio::time::timeout(
        std::time::Duration::from_secs(30),
        gateway.refresh_models(),
    )
    .await
    {
        Ok(Ok(n)) => {
            tracing::info!(models = n, "model catalogue loaded");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not load the model catalogue; using the built-in list");
            false
        }
        Err(_) => {
            tracing::warn!("loading the model catalogue timed out; using the built-in list");
            false
        }
    };
    check_aliases(&gateway, loaded)?;
    let listener = tokio::net::TcpListener::bind(valid.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", valid.addr))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // catalogue refresh, the other accounts' token check, metrics upkeep, the dashboard's
    // samples: until shutdown, awaited below
    let background = gateway.start_background(&shutdown);
    let signal = shutdown.clone();
    // registered here, before the gateway says it is ready: a SIGTERM right after that must
    // find the handler in place (a signal before it would kill the process outright)
    let signals = Signals::register();
    // turns Ctrl-C / SIGTERM into the shutdown token; ends with the process
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutting down: finishing in-flight requests");
        signal.cancel();
    });
    tracing::info!(%addr, auth = gateway.parts.tokens.auth_kind().as_str(), "kiro-gateway listening");
    if args.demo {
        let key_header = if valid.proxy_api_key.is_empty() {
            String::new()
        } else {
            // the demo's own key, printed so the example command works as pasted
            format!(
                " -H 'Authorization: Bearer {}'",
                valid.proxy_api_key.expose()
            )
        };
        println!(
            "kiro-gateway demo (offline mock upstream, not a real model) on http://{addr}\n\ntry:\n  curl -s http://{addr}/v1/chat/completions -H 'Content-Type: application/json'{key_header} -d '{{\"model\":\"claude-sonnet-4-5\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'\n"
        );
    } else {
        println!("kiro-gateway listening on http://{addr}");
    }
    let opts = kiro_gateway::server::ServeOptions {
        grace: valid.shutdown_grace,
        header_read_timeout: valid.header_read_timeout,
        max_connections: valid.max_connections,
        metrics: Some(gateway.metrics.clone()),
        ..Default::default()
    };
    serve(
        listener,
        gateway.router(),
        shutdown.clone(),
        gateway.parts.translate.close_streams.clone(),
        opts,
    )
    .await?;
    shutdown.cancel();
    background.join().await;
    Ok(())
}

/// Every configured alias must name a model of the catalogue. Checked against the upstream
/// list; when only the built-in list is there (the upstream could not be asked), an alias the
/// built-in list lacks is only warned about, since the upstream may well have it.
fn check_aliases(gateway: &Gateway, upstream_loaded: bool) -> Result<(), String> {
    let unknown = gateway.parts.catalog.unknown_alias_targets();
    if unknown.is_empty() {
        return Ok(());
    }
    let list = unknown
        .iter()
        .map(|(alias, target)| format!("{alias:?} -> {target:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let models = gateway.parts.catalog.listed_ids().join(", ");
    if !upstream_loaded {
        tracing::warn!("MODEL_ALIASES: not in the built-in model list, unchecked while the upstream list cannot be loaded: {list}");
        return Ok(());
    }
    Err(format!(
        "MODEL_ALIASES: the alias target is not in the model catalogue: {list} (the catalogue: {models})"
    ))
}

/// `codex-catalog`: the model list of the configured accounts, fetched as the server does at
/// startup, printed as a Codex model catalogue on stdout.
async fn codex_catalog(demo: bool, cfg: Config) -> Result<(), Box<dyn std::error::Error>> {
    let (_mock, _, gateway) = prepare(demo, cfg).await?;
    match tokio::time::timeout(std::time::Duration::from_secs(30), gateway.refresh_models()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("could not list the models: {e}").into()),
        Err(_) => return Err("listing the models timed out after 30 s".into()),
    }
    let catalog = kiro_gateway::codex_catalog::codex_catalog(&gateway.parts.catalog);
    println!("{}", serde_json::to_string_pretty(&catalog)?);
    Ok(())
}

/// Ctrl-C and SIGTERM, listened for from the moment of [`Signals::register`].
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(self) {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            if self.term.is_none() && self.int.is_none() {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
            tokio::select! {
                _ = recv(self.int) => {}
                _ = recv(self.term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

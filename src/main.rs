//! The `dvrgate` command: `serve` (default), `demo`, `check-config`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use dvrgate::config::Config;
use dvrgate::node::{self, Listeners};

/// mimalloc instead of the system allocator: a cached answer's request and response make a few
/// dozen small allocations, and glibc malloc/free (with its consolidation) was about 11 % of
/// the CPU of a cached 16 KiB answer under wrk (perf, `bench/edge_hit.sh 64 10 16384`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dvrgate",
    version,
    about = "DVR streaming gateway: RTMP ingest, time-shifted HLS, caching relays"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node (the default).
    Serve {
        /// TOML config; without it, the embedded defaults (config/dvrgate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run a whole chain in one process, fed by a built-in looping test source.
    Demo {
        /// First HTTP port (origin); the relays take the next ones.
        #[arg(long, default_value_t = 8080)]
        base_port: u16,
        /// RTMP port of the origin.
        #[arg(long, default_value_t = 1935)]
        rtmp_port: u16,
        /// Address to bind.
        #[arg(long, default_value = "0.0.0.0")]
        bind: std::net::IpAddr,
    },
    /// Validate a config and print the effective one.
    CheckConfig { file: PathBuf },
}

/// Segments are 0.1–2 MB buffers allocated and freed at a high rate. glibc raises its mmap
/// threshold after the first such free, and from then on keeps them on its heap: an edge with
/// a 32 MiB cache then sat above 120 MiB RSS under 1,000 connections. A fixed threshold
/// (which also stops the raising) returns them to the OS on free: 90 MiB in the same run, at
/// the same request rate (bench/edge_rss.sh; mimalloc measured worse, 145 MiB).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            // object_store logs every retry at info: only its warnings by default.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,object_store=warn".into()),
        )
        .init();
    let command = cli.command.unwrap_or(Command::Serve { config: None });
    if let Command::CheckConfig { file } = &command {
        return match Config::load(file) {
            Ok(c) => {
                print!("{}", c.to_toml());
                match check_tls(&c).and_then(|()| check_storage(&c)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("dvrgate: {}: {e:#}", file.display());
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("dvrgate: {}: {e}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dvrgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dvrgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone()));
    match command {
        Command::Serve { config } => {
            let config = match config {
                Some(path) => {
                    Config::load(&path).with_context(|| format!("config {}", path.display()))?
                }
                None => Config::default(),
            };
            let listeners = Listeners::bind(&config).await?;
            node::start(config, listeners, shutdown).await?.join().await
        }
        Command::Demo {
            base_port,
            rtmp_port,
            bind,
        } => {
            anyhow::ensure!(
                base_port <= u16::MAX - 2,
                "--base-port must leave room for three ports"
            );
            dvrgate::demo::run(
                dvrgate::demo::DemoOptions {
                    base_port,
                    rtmp_port,
                    bind,
                },
                shutdown,
            )
            .await
        }
        Command::CheckConfig { .. } => Ok(()),
    }
}

/// Loads the certificate pair and `relay.ca_file` as a start would, so a bad file is found
/// before a restart rather than by it.
fn check_tls(config: &Config) -> anyhow::Result<()> {
    if let Some((cert, key)) = config.http.tls_files() {
        dvrgate::tls::load_pair(cert, key).context("http.tls_cert / http.tls_key")?;
        eprintln!(
            "dvrgate: {}: certificate and key load and match",
            cert.display()
        );
    }
    if let Some(path) = &config.relay.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read relay.ca_file {}", path.display()))?;
        dvrgate::relay::upstream::Client::with_options(&dvrgate::relay::upstream::ClientOptions {
            token: None,
            ca_pem: Some(pem),
        })
        .map_err(anyhow::Error::msg)?;
    }
    Ok(())
}

/// With `[storage]`, proves the object store reachable and safe (the start-up probe).
fn check_storage(config: &Config) -> anyhow::Result<()> {
    let Some(storage) = &config.storage else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime
        .block_on(async {
            let bucket = dvrgate::archive::connect(storage)?;
            dvrgate::archive::probe(&bucket, &config.node.name).await
        })
        .with_context(|| format!("[storage] {}", storage.url))?;
    eprintln!(
        "dvrgate: [storage] {}: reachable, conditional writes honoured",
        storage.url
    );
    Ok(())
}

/// Cancels `token` on SIGINT or SIGTERM.
async fn signals(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

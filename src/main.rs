//! The `margo-proxy` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use margo_proxy::config::Config;

/// glibc's allocator showed up as a tenth of a cache hit's CPU, with lock contention
/// between worker threads; mimalloc's per-thread heaps avoid both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "margo-proxy",
    version,
    about = "A Margo Application Registry in front of any OCI registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// YAML config file.
        #[arg(long, conflicts_with_all = ["upstream", "listen"])]
        config: Option<PathBuf>,
        /// Upstream registry URL, for a run without a config file.
        #[arg(long, requires = "listen")]
        upstream: Option<String>,
        /// Listen address, for a run without a config file.
        #[arg(long, requires = "upstream")]
        listen: Option<String>,
        /// Admin listener (health, metrics), for a run without a config file.
        #[arg(long)]
        admin: Option<String>,
    },
    /// Pack a package directory (`margo.yaml` + the resources it names) and push it
    /// as a Margo Application Package: `margo-proxy push examples/packages/line-monitor
    /// 127.0.0.1:8080/apps/northwind/line-monitor:1.4.0`. Exit 1 when refused.
    Push {
        dir: PathBuf,
        reference: String,
        /// Use http:// (default for 127.0.0.1 and localhost).
        #[arg(long)]
        plain_http: bool,
        /// Bearer token (else the MARGO_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
    },
    /// Check a config file and exit non-zero with a line-precise message on errors.
    CheckConfig { file: PathBuf },
    /// Develop Rego admission policies offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check Margo content offline, as a push would be checked: a `margo.yaml`, a package
    /// directory, a Compose archive or an OCI image layout. Exit 0 valid, 1 violations,
    /// 2 unusable input.
    Validate {
        path: PathBuf,
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the Rego unit tests (`test_*` rules) in DIR, like `opa test`.
    Test {
        #[arg(default_value = "policies")]
        dirs: Vec<PathBuf>,
    },
    /// Evaluate an input document (see policies/examples) and print the decision.
    Eval {
        #[arg(long)]
        input: PathBuf,
        /// Policy directories (default: policies).
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            upstream,
            listen,
            admin,
        } => {
            let loaded = match (config, upstream, listen) {
                (Some(path), _, _) => Config::load(&path),
                (None, Some(u), Some(l)) => Config::simple(&u, &l, admin.as_deref()),
                _ => {
                    eprintln!(
                        "margo-proxy serve: give --config FILE, or --upstream URL --listen ADDR"
                    );
                    return ExitCode::from(2);
                }
            };
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            margo_proxy::logging::init(&config.log);
            match margo_proxy::server::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Policy { command } => {
            use margo_proxy::policy::{cli, PolicyConfig};
            let mut out = std::io::stdout();
            let code = match command {
                PolicyCommand::Test { dirs } => cli::cmd_test(&dirs, &mut out),
                PolicyCommand::Eval { input, dirs } => {
                    let mut config = PolicyConfig::default();
                    if !dirs.is_empty() {
                        config.directories = dirs;
                    }
                    config.reload.watch = false;
                    cli::cmd_eval(&input, &config, &mut out)
                }
            };
            ExitCode::from(u8::try_from(code).unwrap_or(2))
        }
        Command::Validate { path, format } => {
            use margo_proxy::margo::offline::{
                render, validate_path, OfflineOptions, OutputFormat,
            };
            let outcome = validate_path(&path, &OfflineOptions::default());
            let format = match format {
                Format::Human => OutputFormat::Human,
                Format::Json => OutputFormat::Json,
            };
            print!("{}", render(&outcome, format));
            ExitCode::from(u8::try_from(outcome.exit_code()).unwrap_or(2))
        }
        Command::Push {
            dir,
            reference,
            plain_http,
            token,
        } => {
            let local = reference.starts_with("127.0.0.1") || reference.starts_with("localhost");
            let token = token.or_else(|| std::env::var("MARGO_TOKEN").ok());
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let pushed = rt.block_on(margo_proxy::catalog::push::push(
                &dir,
                &reference,
                plain_http || local,
                token.as_deref(),
            ));
            match pushed {
                Ok(digest) => {
                    println!("pushed {reference} ({digest})");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("push refused: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

//! The `margo-proxy` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use margo_proxy::config::Config;

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
    /// Check a config file and exit non-zero with a line-precise message on errors.
    CheckConfig { file: PathBuf },
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

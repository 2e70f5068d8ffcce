//! The `margo-proxy` command line.
//!
//! Exit codes, the same for every subcommand (also in `margo-proxy --help` and the man
//! page): 0 success; 1 the input was read and is invalid (config errors, Margo
//! violations, a policy denial or failing policy test); 2 usage error or input that
//! could not be read (missing file, unreadable directory, policies that do not load);
//! 3 `serve` could not listen on an address (in use, permission denied).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use margo_proxy::config::{Config, ConfigError, Loaded};

/// glibc's allocator showed up as a tenth of a cache hit's CPU, with lock contention
/// between worker threads; mimalloc's per-thread heaps avoid both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "\
Exit codes (every subcommand):
  0  success
  1  invalid input: config errors (file:line:column), Margo violations, policy denial
  2  usage error, or input that could not be read (missing file, unloadable policies)
  3  serve: an address could not be listened on (in use, permission denied)

Logs go to standard error; results (check-config's `ok`, validate and policy reports,
completions, the man page) to standard output. A PATH of `-` reads standard input.";

#[derive(Parser)]
#[command(
    name = "margo-proxy",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("MARGO_PROXY_GIT_SHA"), ")"),
    propagate_version = true,
    about = "A Margo Application Registry in front of any OCI registry",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (SIGTERM/SIGINT: graceful stop; SIGHUP: reload policies).
    Serve {
        /// YAML config file (`-`: standard input).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["upstream", "listen"])]
        config: Option<PathBuf>,
        /// Upstream registry URL, for a run without a config file.
        #[arg(long, value_name = "URL", requires = "listen")]
        upstream: Option<String>,
        /// Listen address (IP:port), for a run without a config file.
        #[arg(long, value_name = "ADDR", requires = "upstream")]
        listen: Option<String>,
        /// Admin listener (health, metrics; IP:port), for a run without a config file.
        #[arg(long, value_name = "ADDR", requires = "upstream")]
        admin: Option<String>,
    },
    /// Pack a package directory (`margo.yaml` + the resources it names) and push it
    /// as a Margo Application Package: `margo-proxy push examples/packages/line-monitor
    /// 127.0.0.1:8080/apps/northwind/line-monitor:1.4.0`. Exit 1 when refused.
    Push {
        /// The package directory: `margo.yaml` and the resource files it names.
        dir: PathBuf,
        /// Where to push: `HOST[:PORT]/REPOSITORY:TAG`.
        reference: String,
        /// Use http:// (default for 127.0.0.1 and localhost).
        #[arg(long)]
        plain_http: bool,
        /// Bearer token (else the MARGO_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
    },
    /// Check a config file as `serve` would, print every error as file:line:column.
    CheckConfig {
        /// YAML config file (`-`: standard input).
        file: PathBuf,
    },
    /// Develop Rego admission policies offline.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check Margo content offline, as a push would be checked: a `margo.yaml` (`-`:
    /// standard input), a package directory, a Compose archive or an OCI image layout.
    Validate {
        /// What to check.
        path: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
        /// Known deviations of the reference tooling (margot): warn (`tolerant`, a route's
        /// default) or count them as violations (`strict`), as a route's `deviations`.
        #[arg(long, value_enum, default_value = "tolerant")]
        deviations: DeviationsArg,
        /// Take the admission limits from the proxy's config file, so the check is the
        /// push's with those limits.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script, e.g. `margo-proxy completions bash >
    /// /etc/bash_completion.d/margo-proxy`.
    Completions {
        /// Shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `margo-proxy man | man -l -`.
    Man,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviationsArg {
    Tolerant,
    Strict,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run the Rego unit tests (`test_*` rules) in DIR, like `opa test`.
    Test {
        /// Policy directories.
        #[arg(default_value = "policies", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
    /// Evaluate an input document (see policies/examples) and print the decision.
    Eval {
        /// Input document, JSON (`-`: standard input).
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// Policy directories (default: policies).
        #[arg(long = "dir", value_name = "DIR")]
        dirs: Vec<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Text for people.
    Human,
    /// One JSON document.
    Json,
}

/// Exit code 3 (see the module doc).
const EXIT_BIND: u8 = 3;

fn config_failed(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(e.exit_code())
}

fn print_warnings(loaded: &Loaded) {
    for line in loaded.warnings.to_string().lines() {
        eprintln!("warning: {line}");
    }
}

fn serve(
    config: Option<PathBuf>,
    upstream: Option<String>,
    listen: Option<String>,
    admin: Option<String>,
) -> ExitCode {
    let loaded = match (config, upstream, listen) {
        (Some(path), _, _) => Config::load_checked(&path),
        (None, Some(u), Some(l)) => Config::simple_checked(&u, &l, admin.as_deref()),
        _ => {
            let _ = Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "serve needs --config FILE, or --upstream URL --listen ADDR",
                )
                .print();
            return ExitCode::from(2);
        }
    };
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => return config_failed(&e),
    };
    margo_proxy::logging::init(&loaded.config.log);
    for line in loaded.warnings.to_string().lines() {
        tracing::warn!("{line}");
    }
    if let Err(e) = margo_proxy::startup::check_bind(&loaded.config) {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_BIND);
    }
    match margo_proxy::server::run(&loaded.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => config_failed(&margo_proxy::startup::setup_error(&loaded, &e.to_string())),
    }
}

fn check_config(file: PathBuf) -> ExitCode {
    let loaded = match Config::load_checked(&file) {
        Ok(l) => l,
        Err(e) => return config_failed(&e),
    };
    if let Err(e) = margo_proxy::startup::check_state(&loaded) {
        return config_failed(&e);
    }
    print_warnings(&loaded);
    let name = if file.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    println!("{name}: ok");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            upstream,
            listen,
            admin,
        } => serve(config, upstream, listen, admin),
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
        Command::Validate {
            path,
            format,
            deviations,
            config,
        } => {
            use margo_proxy::margo::admission::{AdmissionLimits, Deviations};
            use margo_proxy::margo::offline::{
                render, validate_path, OfflineOptions, OutputFormat,
            };
            let limits = match config.map(|c| Config::load(&c)) {
                None => AdmissionLimits::default(),
                Some(Ok(c)) => AdmissionLimits::from(&c.limits),
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = OfflineOptions {
                limits,
                deviations: match deviations {
                    DeviationsArg::Tolerant => Deviations::Tolerant,
                    DeviationsArg::Strict => Deviations::Strict,
                },
            };
            let outcome = validate_path(&path, &opts);
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
        Command::CheckConfig { file } => check_config(file),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "margo-proxy",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            match man.render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write the man page: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` is the documentation: an argument without help text is undocumented.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        let mut cmd = Cli::command();
        cmd.build();
        walk(&cmd, "", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }

    #[test]
    fn the_parser_is_consistent() {
        Cli::command().debug_assert();
    }
}

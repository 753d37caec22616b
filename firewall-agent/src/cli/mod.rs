//! The `firewall-agent` command line (docs/design.md#agent-cli): one module per command, over
//! the library's pipeline. Errors become exit status 1 and `firewall-agent: <error>` on stderr.
mod check;
mod cleanup;
mod crds;
mod inputs;
mod run;
mod status;
mod structure;
mod validate;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "firewall-agent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("BULKHEAD_COMMIT"), ")"),
    about = "Bulkhead: namespace segmentation for Kubernetes with eBPF"
)]
struct Cli {
    /// Diagnostics format on stderr (the violation log on stdout is always JSON).
    #[arg(long, global = true, env = "BULKHEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent (the DaemonSet's command).
    Run(run::RunArgs),
    /// Print the CRD YAML (generated from the Rust types).
    Crds,
    /// Judge one connection as the agents would: per side the deciding rule, step and mode; exit
    /// 0 allowed, 2 a violation (logged or dropped), 1 an error.
    Check(check::CheckArgs),
    /// Check policy objects in YAML files with the agent's own validation (before applying them).
    Validate(validate::ValidateArgs),
    /// Uninstall from this node: remove pinned programs, links and maps.
    Cleanup(cleanup::CleanupArgs),
    /// What is enforced on this node: the pinned maps and the running agent's view.
    Status(status::StatusArgs),
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_tracing(cli.log_format);
    // `run` reports through its log (JSON when asked); the other commands talk to a terminal.
    let logs_errors = matches!(cli.command, Command::Run(_));
    let result = match cli.command {
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(run::run(args))),
        Command::Crds => crds::run(),
        // `check` says with its status whether a flow is a violation (2); its errors are 1.
        Command::Check(args) => return finish(check::run(args), logs_errors),
        Command::Validate(args) => validate::run(args),
        Command::Cleanup(args) => cleanup::run(args),
        Command::Status(args) => status::run(args),
    };
    finish(result.map(|()| ExitCode::SUCCESS), logs_errors)
}

/// A bad command line: status 2 from the argument parser, except for `check`, whose 2 means a
/// violation (there every error is 1).
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || Cli::command()
            .ignore_errors(true)
            .try_get_matches()
            .ok()
            .and_then(|m| m.subcommand_name().map(|n| n != "check"))
            .unwrap_or(true)
    {
        e.exit();
    }
    let _ = e.print();
    ExitCode::FAILURE
}

fn finish(result: anyhow::Result<ExitCode>, logs_errors: bool) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            if logs_errors {
                tracing::error!("{e:#}");
            } else {
                eprintln!("firewall-agent: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

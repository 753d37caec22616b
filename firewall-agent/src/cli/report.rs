//! `firewall-agent report LOG...`: who talks to whom, as a namespace matrix on stdout and, with
//! `--html FILE`, a self-contained page with the graph (docs/design.md#agent-cli).
use std::path::PathBuf;

use anyhow::Context as _;

use super::suggest::read_flows;
use crate::observed::report::{Matrix, html};

#[derive(clap::Args)]
pub struct ReportArgs {
    /// Log files (plain or gzip) or `-` for standard input; lines of many nodes in any order.
    #[arg(required = true)]
    logs: Vec<PathBuf>,
    /// Also write the graph and the table as a self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Skip lines that are not JSON or not well-formed records (counted on stderr).
    #[arg(long)]
    lenient: bool,
}

/// Runs `report`.
pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    let (flows, stats) = read_flows(&args.logs, args.lenient)?;
    let m = Matrix::new(&flows);
    print!("{}", m.text());
    if let Some(path) = &args.html {
        let title = format!(
            "Bulkhead: cross-namespace connections ({} record(s))",
            stats.records
        );
        std::fs::write(path, html(&m, &title))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

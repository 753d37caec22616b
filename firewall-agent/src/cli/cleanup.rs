//! `firewall-agent cleanup`: uninstalls from this node what a pinned agent left behind.
use std::path::PathBuf;

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct CleanupArgs {
    /// Pin directory (the one `run` pins under unless told otherwise).
    #[arg(long, default_value = crate::datapath::pin::DEFAULT_DIR)]
    pub(super) bpffs: PathBuf,
}

/// Removes pinned programs, links and maps, naming each.
pub fn run(args: CleanupArgs) -> anyhow::Result<()> {
    let bpffs = args.bpffs;
    let removed = crate::datapath::pin::cleanup(&bpffs)
        .with_context(|| format!("cleaning up {}", bpffs.display()))?;
    if removed.is_empty() {
        println!("nothing pinned at {}; nothing to clean up", bpffs.display());
    }
    for p in removed {
        println!("removed {}", p.display());
    }
    Ok(())
}

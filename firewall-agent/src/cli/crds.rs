//! `firewall-agent crds`: the CRD YAML, generated from the Rust types (what deploy/ applies).

pub fn run() -> anyhow::Result<()> {
    print!("{}", crate::crd::crds_yaml());
    Ok(())
}

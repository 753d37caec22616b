//! One read of the cluster for `check` and `suggest --source/--against`: a file with the checks of a poll,
//! or one snapshot of the API server (paged lists, no watch, no status written).
use std::path::Path;

use anyhow::Context as _;

use crate::{
    model::ClusterModel,
    source::{SourceSpec, file, kube},
};

/// Reads `spec` once.
pub fn read(spec: &SourceSpec, kubeconfig: Option<&Path>) -> anyhow::Result<ClusterModel> {
    let SourceSpec::File(path) = spec else {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        return rt.block_on(async {
            let client = kube::client(kubeconfig).await?;
            Ok(kube::snapshot(&client).await?)
        });
    };
    Ok(file::read_model(path)?)
}

//! State sources (docs/design.md#sources): where the cluster model comes from. Each yields
//! complete models (the kube source only once every kind is listed, one per burst of events), so
//! the agent's loop treats them alike.
pub mod file;
pub mod kube;

use std::{path::PathBuf, time::Duration};

use crate::{
    compiler::InvalidModeLabel,
    model::{ClusterModel, Rejection},
    policy::PolicyApis,
};
use file::{FileError, FileSource};
use kube::{KubeConfig, KubeError, KubeSource};

/// A `--source` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The Kubernetes API (in-cluster config or kubeconfig).
    Kube,
    /// A YAML stream or `kind: List` file, re-read when it changes.
    File(PathBuf),
}

/// A `--source` value that is neither `kube` nor `file:PATH`.
#[derive(Debug, thiserror::Error)]
#[error("invalid --source {0:?}: expected `kube` or `file:PATH`")]
pub struct BadSource(String);

impl std::str::FromStr for SourceSpec {
    type Err = BadSource;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("file:") {
            _ if s == "kube" => Ok(Self::Kube),
            Some(p) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
            _ => Err(BadSource(s.to_owned())),
        }
    }
}

/// A model the source could not produce; the last good policy stays in force.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    File(#[from] FileError),
}

/// How far the source is, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every kind listed (kube), or a policy applied from the file.
    pub synced: bool,
    /// Watch errors so far.
    pub errors: u64,
    /// Unix time (ms) of the last change seen; 0: none or not tracked.
    pub last_change_ms: u64,
}

pub enum Source {
    File(FileSource),
    Kube(Box<KubeSource>),
}

impl Source {
    /// Opens `spec`, reading the policy kinds `apis` names: `poll` is how often a file is
    /// checked; `kube` and `node` (the status Lease's holder) configure the kube source.
    pub async fn open(
        spec: &SourceSpec,
        poll: Duration,
        apis: PolicyApis,
        kube: &KubeConfig,
        node: &str,
    ) -> Result<Self, KubeError> {
        Ok(match spec {
            SourceSpec::File(path) => Self::File(FileSource::new(path, poll, apis)),
            SourceSpec::Kube => {
                let client = kube::client(kube.kubeconfig.as_deref()).await?;
                Self::Kube(Box::new(KubeSource::start(client, kube, apis, node)))
            }
        })
    }

    /// The next complete model to apply. Cancel-safe.
    pub async fn next_model(&mut self) -> Result<ClusterModel, SourceError> {
        match self {
            Self::File(f) => Ok(f.next_model().await?),
            Self::Kube(k) => Ok(k.next_model().await),
        }
    }

    /// Tells the source what became of the model it last yielded: `changed` when it differed from
    /// the one before, and the objects the compiler rejected (the kube source reports them in the
    /// objects' status).
    pub fn applied(&mut self, changed: bool, rejected: &[Rejection], labels: &[InvalidModeLabel]) {
        match self {
            Self::File(_) => {}
            Self::Kube(k) => k.applied(changed, rejected, labels),
        }
    }

    /// `policy_applied`: whether the agent has applied a policy (all a file source can say).
    pub fn progress(&self, policy_applied: bool) -> Progress {
        match self {
            Self::File(f) => Progress {
                synced: policy_applied,
                errors: 0,
                last_change_ms: f.last_change_ms,
            },
            Self::Kube(k) => k.progress(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_source_specs() {
        assert_eq!("kube".parse::<SourceSpec>().unwrap(), SourceSpec::Kube);
        assert_eq!(
            "file:/a/b.yaml".parse::<SourceSpec>().unwrap(),
            SourceSpec::File("/a/b.yaml".into())
        );
        assert!("file:".parse::<SourceSpec>().is_err());
        assert!("http://x".parse::<SourceSpec>().is_err());
    }
}

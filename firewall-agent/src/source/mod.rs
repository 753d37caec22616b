//! State sources (DESIGN §7): where the cluster model comes from.
pub mod file;
pub mod kube;

use std::path::PathBuf;

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

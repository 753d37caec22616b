//! The inputs of the offline commands: files, directories (their `*.yaml`, `*.yml` and `*.json`
//! files, recursively, in name order) and `-` for standard input.
use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// One input's text and the name errors are reported under.
pub struct Input {
    pub name: String,
    pub text: String,
}

/// Reads every input in order; a directory expands to its manifest files.
pub fn read(paths: &[PathBuf]) -> anyhow::Result<Vec<Input>> {
    let mut out = Vec::new();
    for p in paths {
        if p == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading standard input")?;
            out.push(Input {
                name: "<stdin>".to_owned(),
                text,
            });
        } else if p.is_dir() {
            for f in manifests_in(p)? {
                out.push(read_file(&f)?);
            }
        } else {
            out.push(read_file(p)?);
        }
    }
    Ok(out)
}

fn read_file(p: &Path) -> anyhow::Result<Input> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Input {
        name: p.display().to_string(),
        text,
    })
}

fn manifests_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))?;
        for e in entries {
            let p = e
                .with_context(|| format!("reading {}", d.display()))?
                .path();
            let manifest = p
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json");
            if p.is_dir() {
                todo.push(p);
            } else if manifest {
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found)
}

//! Build script: gives `driftwatch --version` the git commit it was built
//! from, as `DRIFTWATCH_GIT_COMMIT` (12 hex digits, or `unknown`).
//!
//! Where the commit comes from, first found wins:
//! 1. `DRIFTWATCH_GIT_COMMIT` in the build's environment (a packager that
//!    knows better, e.g. a container build from a context without `.git`);
//! 2. the git checkout this crate is the top level of (`git rev-parse HEAD`;
//!    a crate unpacked inside some other repository does not take its commit);
//! 3. `src/git-commit.txt`, which `git archive` fills in (`export-subst` in
//!    `src/.gitattributes`), so a release tarball without `.git` still knows;
//! 4. `unknown`. Never an error: a build must not fail for want of git.
//!
//! Lives in `src/` (Cargo.toml `build = …`) so the top level stays as the
//! design card has it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DRIFTWATCH_GIT_COMMIT");
    println!("cargo:rerun-if-changed=src/build.rs");
    println!("cargo:rerun-if-changed=src/git-commit.txt");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = from_env()
        .or_else(|| from_git(&manifest_dir))
        .or_else(|| from_archive(&manifest_dir))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=DRIFTWATCH_GIT_COMMIT={commit}");
}

fn from_env() -> Option<String> {
    let value = std::env::var("DRIFTWATCH_GIT_COMMIT").ok()?;
    short_hex(value.trim())
}

/// The commit of the checkout whose top level is `dir`, and the files that
/// change when HEAD moves (so the build script reruns on a new commit).
fn from_git(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    // HEAD, the branch it points at and packed-refs: a commit or checkout
    // changes one of them. Only existing paths (cargo reruns every build for
    // a missing one).
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])?];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch])?);
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"])?);
    for path in watched {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    short_hex(&git(&["rev-parse", "HEAD"])?)
}

/// `src/git-commit.txt` as `git archive` leaves it (`$Format:%H$` replaced).
fn from_archive(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("src/git-commit.txt")).ok()?;
    short_hex(text.trim())
}

/// The first 12 characters of a hex commit id; `None` for anything else
/// (such as the unsubstituted `$Format:%H$`).
fn short_hex(text: &str) -> Option<String> {
    (text.len() >= 7 && text.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| text.chars().take(12).collect())
}

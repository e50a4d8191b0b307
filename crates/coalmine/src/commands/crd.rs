//! `coalmine crd`: prints the CustomResourceDefinition of `Canary` as YAML.
//!
//! The CRD is generated from the Rust types (see `coalmine_core::crd`), so
//! `coalmine crd > deploy/crd.yaml` is how the committed copy is refreshed,
//! and `coalmine crd | kubectl apply -f -` installs the one that matches
//! this binary.

use std::io::Write;
use std::process::ExitCode;

/// Arguments of `coalmine crd` (none yet).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Writes the CRD to stdout.
pub fn run(_: &Args) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(coalmine_core::crd::yaml().as_bytes())
        .and_then(|()| out.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coalmine crd: cannot write the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}

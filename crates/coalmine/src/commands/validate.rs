//! `coalmine validate FILE...`: every problem of each file, or a summary of
//! its plan.

use std::path::PathBuf;
use std::process::ExitCode;

use coalmine_core::validate::load;

/// Arguments of `coalmine validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Canary files (YAML or JSON).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Treat warnings as errors.
    #[arg(long)]
    strict: bool,
}

/// Checks each file: problems go to stderr, summaries to stdout.
pub fn run(args: &Args) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        let name = path.display();
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("{name}: cannot read the file: {e}");
                failed = true;
                continue;
            }
        };
        match load(&text) {
            Ok((_, plan, warnings)) => {
                for w in &warnings {
                    eprintln!("{name}: {w}");
                }
                if args.strict && !warnings.is_empty() {
                    eprintln!(
                        "{name}: invalid: {} warning(s) and --strict",
                        warnings.len()
                    );
                    failed = true;
                } else {
                    println!("{name}: valid: {}", plan.summary());
                }
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{name}: {p}");
                }
                let errors = problems.iter().filter(|p| p.is_error()).count();
                let s = if errors == 1 { "" } else { "s" };
                eprintln!("{name}: invalid: {errors} error{s}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

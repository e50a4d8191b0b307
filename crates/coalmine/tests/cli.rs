//! The command line as a newcomer meets it: every command's help ends
//! with an example, and a mistyped command or flag gets the nearest one.

use std::process::{Command, Output};

fn coalmine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .args(args)
        .output()
        .expect("coalmine runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The subcommands `coalmine --help` lists (so a new one is checked too).
fn subcommands() -> Vec<String> {
    let help = text(&coalmine(&["--help"]).stdout);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_help_has_an_example_line() {
    let top = coalmine(&["--help"]);
    assert!(top.status.success());
    assert!(
        text(&top.stdout).contains("Examples:\n  coalmine demo"),
        "{}",
        text(&top.stdout)
    );
    let commands = subcommands();
    assert!(commands.len() >= 14, "{commands:?}");
    for command in &commands {
        for flag in ["--help", "-h"] {
            let out = coalmine(&[command, flag]);
            assert!(out.status.success(), "{command} {flag}");
            let help = text(&out.stdout);
            let example = help
                .lines()
                .skip_while(|l| !l.starts_with("Example"))
                .nth(1)
                .unwrap_or_default();
            assert!(
                example.starts_with(&format!("  coalmine {command}")),
                "`coalmine {command} {flag}` has no example line:\n{help}"
            );
        }
    }
}

#[test]
fn a_mistyped_command_or_flag_gets_the_nearest_one() {
    for (args, tip) in [
        (
            &["valdate", "x.yaml"][..],
            "a similar subcommand exists: 'validate'",
        ),
        (&["demp"], "a similar subcommand exists: 'demo'"),
        (
            &["validate", "--strcit", "x.yaml"],
            "a similar argument exists: '--strict'",
        ),
        (
            &["demo", "--scenaro", "faulty"],
            "a similar argument exists: '--scenario'",
        ),
        (
            &["run", "--stat", "x"],
            "a similar argument exists: '--state'",
        ),
    ] {
        let out = coalmine(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(tip), "{args:?}: {err}");
    }
}

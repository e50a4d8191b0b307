//! `coalmine demo` end to end, one process per scenario: the real binary
//! with its sample apps, proxy, load generator and rollout on loopback,
//! sped up with `--speed`, each bounded in time.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the demo; its exit code and the JSON summary.
fn demo(scenario: &str, speed: &str, limit: Duration) -> (Option<i32>, serde_json::Value, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .args(["demo", "--scenario", scenario, "--speed", speed, "--json"])
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("coalmine demo starts");
    let end = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("coalmine demo --scenario {scenario} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let summary = serde_json::from_str(&out).unwrap_or_else(|e| {
        panic!("the summary is not JSON ({e}): {out}\nstderr:\n{err}");
    });
    (code, summary, err)
}

#[test]
fn the_healthy_canary_is_promoted() {
    let (code, s, err) = demo("healthy", "4", Duration::from_secs(60));
    assert_eq!(code, Some(0), "{s}\n{err}");
    assert_eq!(s["outcome"], "promoted");
    assert_eq!(s["asExpected"], true);
    // Both versions served real traffic through the proxy, nothing was lost.
    assert!(
        s["requests"]["canary"]["requests"].as_u64() > Some(100),
        "{s}"
    );
    assert!(
        s["requests"]["stable"]["requests"].as_u64() > Some(1000),
        "{s}"
    );
    assert_eq!(s["requests"]["errors"], 0, "{s}");
    assert!(err.contains("Promoted"), "{err}");
}

#[test]
fn the_faulty_canary_is_rolled_back_by_its_errors() {
    let (code, s, err) = demo("faulty", "2", Duration::from_secs(60));
    assert_eq!(code, Some(2), "{s}\n{err}");
    assert_eq!(s["outcome"], "rolled back");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("metric errors failed")),
        "{s}"
    );
    // The blast radius: rolled back within 30 s and fewer than 100 failed
    // canary requests, with steps starting at 5%.
    assert!(s["secondsToRollback"].as_f64() <= Some(30.0), "{s}");
    assert!(
        s["requests"]["canary"]["failed"].as_u64() < Some(100),
        "{s}"
    );
    // Only requests already in flight at the rollback may still reach it.
    assert!(s["lastCanaryAfterRollbackMs"].as_i64() < Some(1000), "{s}");
}

#[test]
fn the_slow_canary_is_rolled_back_by_its_latency() {
    let (code, s, err) = demo("slow", "2", Duration::from_secs(60));
    assert_eq!(code, Some(2), "{s}\n{err}");
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|r| r.contains("metric slow failed")),
        "{s}"
    );
    assert_eq!(s["requests"]["errors"], 0, "{s}");
}

#[test]
fn bad_arguments_exit_1() {
    let out = Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .args(["demo", "--speed", "0"])
        .output()
        .expect("coalmine runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("outside 0.1 to 10"));
    // A busy address is named, with the flag that changes it.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .args(["demo", "--listen", &addr, "--admin", "127.0.0.1:0"])
        .output()
        .expect("coalmine runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
}

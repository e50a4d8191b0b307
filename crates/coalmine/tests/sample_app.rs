//! `coalmine sample-app` run as a process and spoken to over loopback
//! with a small blocking HTTP/1.1 client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sample app, killed when dropped.
struct App {
    child: Child,
    addr: SocketAddr,
}

impl App {
    /// Starts the binary on a free loopback port and waits for `/healthz`.
    fn start(args: &[&str]) -> App {
        let addr = free_addr();
        let child = Command::new(env!("CARGO_BIN_EXE_coalmine"))
            .arg("sample-app")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("coalmine runs");
        let mut app = App { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = app.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = app.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("sample-app exited early ({status}): {err}");
            }
            if let Ok(mut c) = Client::connect(addr)
                && let Ok(r) = c.get("/healthz")
                && r.status == 200
            {
                return app;
            }
            assert!(Instant::now() < deadline, "no /healthz on {addr} in 10s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn client(&self) -> Client {
        Client::connect(self.addr).expect("connects")
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    l.local_addr().expect("bound")
}

/// One answer: status, headers (lower-case names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// A keep-alive HTTP/1.1 client on one connection, for bodies with a
/// Content-Length.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
        })
    }

    fn get(&mut self, path: &str) -> std::io::Result<Answer> {
        self.send("GET", path, "")
    }

    fn send(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<Answer> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.writer.write_all(request.as_bytes())?;
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (name, value) = l.split_once(':').ok_or_else(|| bad("bad header"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .ok_or_else(|| bad("no content-length"))?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8(body).map_err(|_| bad("body is not UTF-8"))?,
        })
    }
}

#[test]
fn answers_name_the_version_and_the_path() {
    let app = App::start(&["--version", "v2.1"]);
    let mut c = app.client();
    for path in ["/x", "/api/orders?id=3", "/"] {
        let a = c.get(path).expect("an answer");
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.header("x-sample-version"), Some("v2.1"));
        let json = a.json();
        assert_eq!(json["version"], "v2.1");
        assert_eq!(json["path"], path.split('?').next().expect("a path"));
        assert_eq!(json["error"], false);
    }
    // Other methods, with a body, on the same kept-alive connection.
    let a = c.send("POST", "/y", "{\"a\":1}").expect("an answer");
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(a.json()["path"], "/y");
    let a = c.get("/healthz").expect("an answer");
    assert_eq!((a.status, a.body.as_str()), (200, "ok"));
}

#[test]
fn ten_percent_errors_give_a_ten_percent_share_of_500s() {
    let app = App::start(&["--version", "v2", "--error-rate", "10%"]);
    let mut c = app.client();
    let n = 2000;
    let mut errors = 0;
    for _ in 0..n {
        let a = c.get("/x").expect("an answer");
        let json = a.json();
        match a.status {
            500 => {
                errors += 1;
                assert_eq!(json["error"], true, "{a:?}");
            }
            200 => assert_eq!(json["error"], false, "{a:?}"),
            other => panic!("status {other}: {a:?}"),
        }
        assert_eq!(json["version"], "v2");
    }
    // Binomial(2000, 0.1): sd 13.4, so 140..=260 is ±4.5 sd.
    assert!((140..=260).contains(&errors), "{errors} errors in {n}");
}

#[test]
fn healthz_never_fails_nor_waits() {
    let app = App::start(&["--version", "v1", "--error-rate", "1", "--latency", "1s"]);
    let mut c = app.client();
    let start = Instant::now();
    for _ in 0..20 {
        let a = c.get("/healthz").expect("an answer");
        assert_eq!((a.status, a.body.as_str()), (200, "ok"));
        assert_eq!(a.header("x-sample-version"), Some("v1"));
    }
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    let a = c.get("/x").expect("an answer");
    assert_eq!(a.status, 500);
    assert_eq!(a.json()["error"], true);
}

#[test]
fn latency_delays_every_answer() {
    let app = App::start(&["--version", "v1", "--latency", "50ms"]);
    let mut c = app.client();
    for _ in 0..10 {
        let start = Instant::now();
        let a = c.get("/x").expect("an answer");
        let took = start.elapsed();
        assert_eq!(a.status, 200);
        assert!(took >= Duration::from_millis(45), "{took:?}");
        assert!(took < Duration::from_secs(1), "{took:?}");
    }
}

#[test]
fn jitter_spreads_the_latency_around_its_value() {
    let app = App::start(&[
        "--version",
        "v1",
        "--latency",
        "40ms",
        "--latency-jitter",
        "30ms",
    ]);
    let mut c = app.client();
    let mut took = Vec::new();
    for _ in 0..30 {
        let start = Instant::now();
        assert_eq!(c.get("/x").expect("an answer").status, 200);
        took.push(start.elapsed());
    }
    assert!(
        took.iter().all(|t| *t >= Duration::from_millis(9)),
        "{took:?}"
    );
    let (min, max) = (took.iter().min(), took.iter().max());
    assert!(
        max.zip(min)
            .is_some_and(|(a, b)| *a - *b > Duration::from_millis(10)),
        "no spread: {took:?}"
    );
}

#[test]
fn bad_flags_exit_1_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--version", "v1", "--error-rate", "1.5"], "--error-rate"),
        (&["--version", "v1", "--error-rate=-0.1"], "--error-rate"),
        (&["--version", "v1", "--error-rate", "120%"], "--error-rate"),
        (&["--version", "v1", "--error-rate", "lots"], "--error-rate"),
        (&["--version", "v1", "--latency", "20"], "--latency"),
        (&["--version", "v1", "--latency", "fast"], "--latency"),
        (
            &["--version", "v1", "--latency-jitter=-5ms"],
            "--latency-jitter",
        ),
        (&["--version", "v1", "--listen", "nowhere"], "--listen"),
        (&[], "--version"),
    ];
    for (args, flag) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_coalmine"))
            .arg("sample-app")
            .args(*args)
            .output()
            .expect("coalmine runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_address_exits_1() {
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a free port");
    let addr = taken.local_addr().expect("bound").to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_coalmine"))
        .args(["sample-app", "--version", "v1", "--listen", &addr])
        .output()
        .expect("coalmine runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot listen on") && stderr.contains(&addr),
        "{stderr}"
    );
    drop(taken);
}

#[cfg(unix)]
#[test]
fn sigterm_stops_it_cleanly() {
    let mut app = App::start(&["--version", "v1"]);
    let status = Command::new("kill")
        .args(["-TERM", &app.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = app.child.try_wait().expect("waitable") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 10s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = app.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("coalmine sample-app serving"))
            .count(),
        1,
        "{err}"
    );
}

//! The local controller of `coalmine run FILE`: one process runs the proxy
//! in front of `spec.upstreams`, the rollout state machine, and the judge
//! fed by the proxy's own counters (and any Prometheus or webhook metrics).
//!
//! Each pass of the loop is one `coalmine_driver::turn`, as in the
//! controller: observe (health checks, commands from the admin API, the
//! judge's report), `decide`, store the status (`--state`, atomically,
//! before acting: `LocalActuator`), carry out the actions (routes,
//! promotion); then sleep until the next interval, timer or command, at
//! most a second. The judging session and its schedule are the driver's
//! (a loop that stalled collects once and skips the intervals it missed).
//! Everything the
//! rollout needs to resume is in the status, so a restart with the same
//! `--state` file continues at the same step and weight, and the judge
//! continues its evidence (`status.judgeState`, written after each
//! judged interval); the interval under way at the restart is lost with
//! the proxy's counters.
//!
//! [`prepare`] binds the addresses and [`Prepared::run`] walks the rollout;
//! [`execute`] does both. The admin API is in `admin.rs`, the `--state`
//! and `--report` files in `state.rs`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use coalmine_core::Time;
use coalmine_core::plan::{Plan, Target};
use coalmine_core::rollout::{Action, Command, CommandKind, Decision, Observation};
use coalmine_core::routes::Routes;
use coalmine_core::spec::Canary;
use coalmine_core::status::{CanaryStatus, Phase};
use coalmine_driver::{Actuator, Session, Turn};
use coalmine_providers::{BuiltinSource, Context};
use coalmine_proxy::{Config, Limits, Proxy};

use crate::admin::{self, EVENTS_KEPT, EventRecord, Shared};
use crate::dashboard::{self, Board};
use crate::health;
use crate::state::{self, HistoryEntry};
use crate::view::{self, Screen};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The canary became stable.
    Promoted,
    /// The canary was rolled back (or failed).
    RolledBack,
    /// Stopped (signal) before the rollout ended.
    Stopped,
}

/// How a run shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// One live line, redrawn (a terminal).
    Live,
    /// A log line per change (a pipe or a file).
    Log,
    /// Nothing (the demo draws its own).
    Quiet,
}

impl View {
    /// Live on a terminal, a log otherwise.
    pub fn detect() -> View {
        if std::io::stdout().is_terminal() {
            View::Live
        } else {
            View::Log
        }
    }
}

/// Options of a run, shared with the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// Traffic address override.
    pub listen: Option<SocketAddr>,
    /// Admin address.
    pub admin: SocketAddr,
    /// Where `GET /metrics` is also served alone, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The sticky cookies' secret (random when absent).
    pub sticky_secret: Option<Vec<u8>>,
    /// The bearer token the admin API requires, if any.
    pub admin_token: Option<String>,
    /// State file.
    pub state: Option<PathBuf>,
    /// Report file.
    pub report: Option<PathBuf>,
    /// Exit when the rollout ends.
    pub exit_on_finish: bool,
    /// Told the outcome as soon as the rollout ends (the demo stops its
    /// load there, before the proxy stops).
    pub on_finish: Option<mpsc::UnboundedSender<Outcome>>,
    /// Progress display.
    pub view: View,
    /// The file name, for messages.
    pub label: String,
}

/// Runs a rollout until it ends (or `stop` completes); returns the outcome.
pub async fn execute(
    canary: Canary,
    plan: Plan,
    options: Options,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Outcome, String> {
    let (outcome, _) = prepare(canary, plan, options).await?.run(stop).await?;
    Ok(outcome)
}

/// A run whose addresses are bound and whose upstreams answer, not yet
/// started: the demo reads the bound addresses (port 0 picks a free one)
/// before it sends traffic.
pub struct Prepared {
    canary: Canary,
    plan: Plan,
    options: Options,
    proxy: Proxy,
    status: CanaryStatus,
    desired: String,
    stable_urls: Vec<String>,
    canary_urls: Vec<String>,
    data: TcpListener,
    control: TcpListener,
    metrics: Option<TcpListener>,
    listen: SocketAddr,
    admin: SocketAddr,
}

/// Checks the upstreams, loads `--state`, builds the proxy and binds both
/// addresses.
pub async fn prepare(canary: Canary, plan: Plan, options: Options) -> Result<Prepared, String> {
    let Target::Local {
        stable: stable_urls,
        canary: canary_urls,
        listen: file_listen,
    } = plan.target.clone()
    else {
        return Err("coalmine run needs spec.upstreams".into());
    };
    for url in stable_urls.iter().chain(&canary_urls) {
        reachable(url).await?;
    }
    let desired = canary.spec.desired_revision();
    let status = match &options.state {
        Some(path) if path.exists() => state::resumed(
            state::checked_state(state::read_state(path)?, &plan, path)?,
            path,
        ),
        _ => CanaryStatus {
            stable_revision: canary.spec.local_stable_revision(),
            ..CanaryStatus::default()
        },
    };
    // After a promotion, stable serves the canary's servers.
    let promoted_already = status.stable_revision.as_deref() == Some(desired.as_str());
    let stable_urls = if promoted_already {
        canary_urls.clone()
    } else {
        stable_urls
    };
    let proxy = Proxy::new(Config {
        stable: stable_urls.clone(),
        canary: canary_urls.clone(),
        routes: Routes::all_stable(),
        limits: Limits::default(),
        sticky_secret: options.sticky_secret.clone(),
    })
    .map_err(|e| format!("spec.upstreams: {e}"))?;
    let listen = match (options.listen, file_listen) {
        (Some(a), _) => a,
        (None, Some(l)) => l.parse().map_err(|_| {
            format!("spec.upstreams.listen: `{l}` is not an address like 127.0.0.1:8080")
        })?,
        (None, None) => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let data = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e} (use --listen ADDR)"))?;
    let control = TcpListener::bind(options.admin).await.map_err(|e| {
        format!(
            "cannot listen on {} (admin): {e} (use --admin ADDR)",
            options.admin
        )
    })?;
    let metrics = match options.metrics_listen {
        None => None,
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
            format!("cannot listen on {addr} (metrics): {e} (use --metrics-listen ADDR)")
        })?),
    };
    let listen = data.local_addr().map_err(|e| format!("{listen}: {e}"))?;
    let admin = control
        .local_addr()
        .map_err(|e| format!("{}: {e}", options.admin))?;
    Ok(Prepared {
        canary,
        plan,
        options,
        proxy,
        status,
        desired,
        stable_urls,
        canary_urls,
        data,
        control,
        metrics,
        listen,
        admin,
    })
}

impl Prepared {
    /// The address traffic goes to.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The admin API's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Serves traffic and walks the rollout until it ends (or `stop`);
    /// returns how it ended and the last status.
    pub async fn run(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(Outcome, CanaryStatus), String> {
        let Prepared {
            canary,
            plan,
            options,
            proxy,
            mut status,
            desired,
            stable_urls,
            canary_urls,
            data,
            control,
            metrics,
            listen,
            admin: admin_addr,
        } = self;
        let (tx, mut commands) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            status: Mutex::new(status.clone()),
            commands: tx,
            command_seq: std::sync::atomic::AtomicU64::new(0),
            started: Time::now(),
            events: Mutex::new(std::collections::VecDeque::new()),
            screen: Mutex::new(Screen::default()),
            state_error: Mutex::new(None),
            board: Board::new(
                &canary,
                &plan,
                &options.label,
                admin_addr,
                options.admin_token.is_some(),
            ),
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let data_task = tokio::spawn({
            let proxy = proxy.clone();
            let stop = stopped(stop_rx.clone());
            async move { proxy.serve(data, stop, StdDuration::from_secs(5)).await }
        });
        let admin_task = tokio::spawn({
            let proxy = proxy.clone();
            let shared = shared.clone();
            let stop = stopped(stop_rx.clone());
            let guard = coalmine_proxy::admin::Guard::new(admin_addr, options.admin_token.clone())
                .with_public(dashboard::PUBLIC_PATHS);
            async move {
                let handler = move |req, _peer| admin::handle(proxy.clone(), shared.clone(), req);
                coalmine_proxy::admin::serve(control, guard, handler, stop).await;
            }
        });
        if let Some(listener) = metrics {
            let (proxy, stop) = (proxy.clone(), stopped(stop_rx.clone()));
            tokio::spawn(async move { proxy.serve_metrics(listener, stop).await });
        }
        let traffic_task = tokio::spawn({
            let (proxy, shared, stop) = (proxy.clone(), shared.clone(), stop_rx.clone());
            async move { shared.board.sample_traffic(proxy, stop).await }
        });
        tracing::info!(%listen, admin = %admin_addr, "coalmine run: serving {}; dashboard at http://{admin_addr}/", options.label);
        let health_path = canary
            .spec
            .upstreams
            .as_ref()
            .and_then(|u| u.health_path.clone());
        let health = health::watch(&stable_urls, &canary_urls, health_path, stop_rx.clone());
        let notifier = coalmine_notify::Notifier::with_counts(
            &canary.spec.notifications,
            shared.board.notification_counts(),
        );
        let name = canary.metadata.name.clone().unwrap_or_default();
        // The stable outage the rollout was paused for, so it pauses once.
        let mut paused_for: Option<String> = None;

        let mut stable_ready = status.stable_revision.clone();
        let mut session: Option<Session> = None;
        let mut history: Vec<HistoryEntry> = Vec::new();
        let mut pending: Option<Command> = None;
        let mut outcome = None;
        let ctx = Context {
            name: canary.metadata.name.clone().unwrap_or_default(),
            namespace: canary.metadata.namespace.clone().unwrap_or_default(),
            interval: plan
                .analysis
                .as_ref()
                .map_or(StdDuration::from_secs(10), |a| a.interval.to_std()),
        };
        let mut display = Display::default();
        tokio::pin!(stop);
        loop {
            let now = Time::now();
            let clock = tokio::time::Instant::now();
            // A rollout (or retry) under way gets a judge from its start.
            coalmine_driver::session::refresh(
                &mut session,
                &plan,
                &status,
                local_share(status.weight.get()),
                now,
                clock,
                &options.label,
                |analysis| {
                    let builtin = BuiltinSource::in_process(proxy.metrics().counters());
                    coalmine_providers::sources(analysis, Some(&builtin))
                        .map_err(|e| format!("spec.analysis: {e}"))
                },
            )?;
            let routes = proxy.routes();
            let checked = health.borrow().clone();
            if pending.is_none()
                && let Some(why) = stable_outage(&status, &checked, &mut paused_for)
            {
                let message = format!(
                    "{why}; the rollout is paused with its routes unchanged: run `coalmine resume` once stable answers"
                );
                tracing::warn!("{message}");
                tell(
                    &notifier,
                    &name,
                    "StableUnreachable",
                    &message,
                    true,
                    &status,
                );
                record_event(&shared, &options, true, "StableUnreachable", message, None);
                pending = Some(Command {
                    id: format!("health-{}", Time::now().unix_millis()),
                    kind: CommandKind::Pause,
                });
            }
            let observation = Observation {
                desired_revision: desired.clone(),
                canary_ready: checked.canary_ready,
                canary_ready_at: None,
                canary_down: checked.canary_down.clone(),
                canary_gone: !routes.reaches_canary(),
                stable_ready_revision: stable_ready.clone(),
                analysis: None,
                command: pending.clone(),
            };
            let weight = status.weight.get();
            let mut local = LocalActuator {
                proxy: &proxy,
                shared: &shared,
                options: &options,
                notifier: &notifier,
                name: &name,
                canary_urls: &canary_urls,
                stable_ready: &mut stable_ready,
                command: pending.as_ref().map(|c| c.id.clone()),
            };
            let turned = coalmine_driver::turn(
                Turn {
                    plan: &plan,
                    status: &status,
                    observation,
                    ctx: &ctx,
                    now,
                    clock,
                },
                &mut session,
                &mut local,
            )
            .await?;
            if let Some(report) = turned.judged {
                let entry = HistoryEntry {
                    at: report.at,
                    weight,
                    verdict: report.verdict,
                    metrics: report.metrics,
                };
                shared.board.judged(&entry);
                history.push(entry);
            }
            let decision = turned.decision;
            status = decision.status.clone();
            // A command is observed by one decision; its id keeps it from acting twice.
            pending = None;
            if !notifier.is_empty() {
                let counts = Some(notifier.status());
                if status.notifications != counts {
                    status.notifications = counts;
                    if let Ok(mut s) = shared.status.lock() {
                        s.notifications = status.notifications.clone();
                    }
                }
            }
            show(
                &options,
                &shared,
                &mut display,
                &status,
                plan.steps.len(),
                &proxy,
            );
            let finished = match status.phase {
                Phase::Promoted => Some(Outcome::Promoted),
                Phase::RolledBack | Phase::Failed => Some(Outcome::RolledBack),
                _ => None,
            };
            if finished.is_none() && status.phase != Phase::Idle {
                // A retry started the rollout again: its end is still ahead.
                outcome = None;
            }
            if finished.is_some() && outcome.is_none() {
                outcome = finished;
                if let (Some(tx), Some(o)) = (&options.on_finish, finished) {
                    let _ = tx.send(o);
                }
                if let Some(path) = &options.report {
                    state::write_report(path, &status, &history)?;
                }
                if let Ok(mut screen) = shared.screen.lock() {
                    screen.keep();
                }
                if options.exit_on_finish {
                    break;
                }
            }
            let mut wake = turned
                .next_collection
                .unwrap_or_else(|| tokio::time::Instant::now() + StdDuration::from_secs(1));
            if let Some(after) = decision.requeue_after {
                wake = wake.min(tokio::time::Instant::now() + after.to_std());
            }
            wake = wake.min(tokio::time::Instant::now() + StdDuration::from_secs(1));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                Some(command) = commands.recv() => {
                    pending = Some(command);
                }
                _ = &mut stop => break,
            }
        }
        if outcome.is_none()
            && let Some(path) = &options.report
        {
            state::write_report(path, &status, &history)?;
        }
        let _ = stop_tx.send(true);
        let _ = data_task.await;
        let _ = admin_task.await;
        let _ = traffic_task.await;
        Ok((outcome.unwrap_or(Outcome::Stopped), status))
    }
}

/// The canary's share of requests at a weight: the proxy splits requests
/// exactly.
fn local_share(weight: u8) -> f64 {
    f64::from(weight) / 100.0
}

/// Tells the notification webhooks about a transition.
fn tell(
    notifier: &coalmine_notify::Notifier,
    name: &str,
    reason: &str,
    message: &str,
    warning: bool,
    status: &CanaryStatus,
) {
    if let Some(n) =
        coalmine_notify::notice_for(name, None, reason, message, warning, status, Time::now())
    {
        notifier.notify(n);
    }
}

/// The local platform of a turn: the status is stored in `--state` (and
/// shown on `/status`), routes and promotion go to the in-process proxy.
struct LocalActuator<'a> {
    proxy: &'a Proxy,
    shared: &'a Shared,
    options: &'a Options,
    notifier: &'a coalmine_notify::Notifier,
    name: &'a str,
    canary_urls: &'a [String],
    /// The revision stable's servers run (the canary's after a promotion).
    stable_ready: &'a mut Option<String>,
    /// The command this turn observes, whose id tags its events.
    command: Option<String>,
}

impl Actuator for LocalActuator<'_> {
    type Error = String;

    fn share(&self, weight: coalmine_core::Percent) -> f64 {
        local_share(weight.get())
    }

    async fn persist(&mut self, status: &CanaryStatus, changed: bool) -> Result<(), String> {
        if changed || state::state_unsaved(&self.shared.state_error) {
            if let Some(path) = &self.options.state {
                state::save_state(path, status, &self.shared.state_error);
            }
            if let Ok(mut s) = self.shared.status.lock() {
                *s = status.clone();
            }
        } else if let Some(path) = &self.options.state {
            state::mark_alive(path);
        }
        Ok(())
    }

    async fn act(&mut self, decision: &Decision) -> Result<(), String> {
        let proxy = self.proxy;
        for action in &decision.actions {
            match action {
                Action::SetRoutes(r) => {
                    if proxy.routes() != *r
                        && let Err(problems) = proxy.set_routes(r.clone())
                    {
                        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                        return Err(format!(
                            "the rollout asked for invalid routes: {}",
                            text.join("; ")
                        ));
                    }
                }
                Action::PromoteStable { revision } => {
                    if self.stable_ready.as_ref() != Some(revision) {
                        proxy
                            .set_upstreams(self.canary_urls, self.canary_urls)
                            .map_err(|e| format!("promotion: {e}"))?;
                        *self.stable_ready = Some(revision.clone());
                    }
                }
                // The servers already run; nothing to create or scale.
                Action::EnsureCanary { .. } | Action::ScaleDownCanary => {}
                Action::Event(e) => {
                    tell(
                        self.notifier,
                        self.name,
                        e.reason,
                        &e.message,
                        e.warning,
                        &decision.status,
                    );
                    record_event(
                        self.shared,
                        self.options,
                        e.warning,
                        e.reason,
                        e.message.clone(),
                        self.command.clone(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// Keeps an event for `GET /events` and shows it (unless quiet).
fn record_event(
    shared: &Shared,
    options: &Options,
    warning: bool,
    reason: &'static str,
    message: String,
    command: Option<String>,
) {
    if options.view != View::Quiet {
        if options.view == View::Live
            && let Ok(mut screen) = shared.screen.lock()
        {
            screen.clear(&mut std::io::stderr());
        }
        let kind = if warning { "warning" } else { "event" };
        eprintln!("{kind}: {reason}: {message}");
    }
    if let Ok(mut events) = shared.events.lock() {
        if events.len() == EVENTS_KEPT {
            events.pop_front();
        }
        events.push_back(EventRecord {
            at: Time::now(),
            type_: if warning { "Warning" } else { "Normal" },
            reason,
            message,
            command,
        });
    }
}

/// Why to pause a rollout under way for a stable outage: `Some` once per
/// outage (`paused_for` remembers it until stable answers again), so a
/// person who resumes during the outage is not overruled.
fn stable_outage(
    status: &CanaryStatus,
    health: &health::Health,
    paused_for: &mut Option<String>,
) -> Option<String> {
    let Some(why) = &health.stable_down else {
        *paused_for = None;
        return None;
    };
    let running =
        matches!(status.phase, Phase::Progressing | Phase::Paused) && status.pause.is_none();
    if !running || paused_for.is_some() {
        return None;
    }
    *paused_for = Some(why.clone());
    Some(why.clone())
}

/// Fails with a clear message when an upstream does not accept connections.
async fn reachable(url: &str) -> Result<(), String> {
    let addr = health::authority(url).map_err(|e| format!("spec.upstreams: {e}"))?;
    match tokio::time::timeout(
        StdDuration::from_secs(3),
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "spec.upstreams: {url} is unreachable ({e}); start that server first or fix the URL"
        )),
        Err(_) => Err(format!(
            "spec.upstreams: {url} did not accept a connection within 3s; start that server first or fix the URL"
        )),
    }
}

/// What the run shows of its progress between two decisions.
#[derive(Default)]
struct Display {
    rates: view::Rates,
    last_log: String,
}

/// The live block (terminal) or a log line when something changed.
fn show(
    options: &Options,
    shared: &Shared,
    display: &mut Display,
    status: &CanaryStatus,
    steps: usize,
    proxy: &Proxy,
) {
    if options.view == View::Quiet {
        return;
    }
    let m = proxy.metrics();
    let count = |t| -> u64 { m.track(t).counts().iter().sum() };
    display.rates.sample(
        std::time::Instant::now(),
        count(coalmine_proxy::route::Track::Stable),
        count(coalmine_proxy::route::Track::Canary),
    );
    match options.view {
        View::Live => {
            let lines = view::render(&options.label, status, steps, display.rates.per_second);
            if let Ok(mut screen) = shared.screen.lock() {
                screen.draw(&mut std::io::stderr(), &lines);
            }
        }
        View::Log => {
            let line = view::log_line(status, steps);
            if line != display.last_log {
                let traffic = display.rates.per_second.map_or(String::new(), |(s, c)| {
                    format!(" · stable {s:.0} req/s, canary {c:.0} req/s")
                });
                eprintln!("{} {line}{traffic}", Time::now());
                display.last_log = line;
            }
        }
        View::Quiet => {}
    }
}

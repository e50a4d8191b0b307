//! The files of a local run: `--state`, the rollout's status saved after
//! every change (written atomically, read back and checked on a restart,
//! its timers shifted by the time no process ran it), and `--report`, the
//! final status with the judge's history.

use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;

use coalmine_core::Time;
use coalmine_core::plan::Plan;
use coalmine_core::status::{CanaryStatus, MetricStatus, Verdict};

/// One judged interval, for `--report`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HistoryEntry {
    pub(crate) at: Time,
    pub(crate) weight: u8,
    pub(crate) verdict: Verdict,
    pub(crate) metrics: Vec<MetricStatus>,
}

pub(crate) fn read_state(path: &Path) -> Result<CanaryStatus, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--state {}: cannot read: {e}", path.display()))?;
    CanaryStatus::from_json(&text).map_err(|e| {
        format!(
            "--state {}: not a saved status ({e}); remove the file to start over",
            path.display()
        )
    })
}

/// A saved status whose values the plan can hold: a step past the last
/// would promote at once (a weight above 100 does not even read, see
/// [`CanaryStatus::from_json`]). The file is only trusted as far as it is
/// checked.
pub(crate) fn checked_state(
    status: CanaryStatus,
    plan: &Plan,
    path: &Path,
) -> Result<CanaryStatus, String> {
    let steps = plan.steps.len();
    let problem = if usize::try_from(status.step).map_or(true, |step| step > steps) {
        Some(format!(
            "step {} is past the plan's {steps} steps",
            status.step
        ))
    } else {
        None
    };
    match problem {
        Some(why) => Err(format!(
            "--state {}: {why}; not a status of this rollout (remove the file to start over)",
            path.display()
        )),
        None => Ok(status),
    }
}

/// The saved status with the time no process ran the rollout taken off
/// its timers (`rollout::discount_downtime`: without traffic there is no
/// bake time). The state file's modification time tells when the last
/// run was last alive, as every decision writes or touches the file
/// ([`mark_alive`]); the estimate errs long by at most one decision's
/// period, i.e. a timed pause may last that much longer, never shorter.
/// The shifted status is written back at once, so a second restart does
/// not count the first one's downtime again.
pub(crate) fn resumed(status: CanaryStatus, path: &Path) -> CanaryStatus {
    let Some(last_alive) = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .map(Time::from_unix_millis)
    else {
        return status;
    };
    let down = Time::now().since(last_alive);
    let shifted = coalmine_core::rollout::discount_downtime(&status, down);
    if shifted != status {
        tracing::info!(down = %down, "--state: the rollout's timers resume where they stopped");
        if let Err(e) = write_state(path, &shifted) {
            tracing::warn!("{e}; the timers are shifted in memory only");
        }
    }
    shifted
}

/// Moves the state file's modification time to now: the instant [`resumed`]
/// takes as the last one this run was alive. A failure only makes a later
/// restart count a little more time as down.
pub(crate) fn mark_alive(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), error = %e, "cannot touch the state file");
    }
}

/// Whether the last `--state` write failed (and so is due again).
pub(crate) fn state_unsaved(error: &Mutex<Option<String>>) -> bool {
    error.lock().map(|e| e.is_some()).unwrap_or(true)
}

/// Saves the status. A failure (a read-only directory, a full disk) stops
/// neither the rollout nor the traffic: the routes decided stay in force,
/// the failure is logged and shown on `/status` as `stateError`, and the
/// write is tried again at the next decision (within a second).
pub(crate) fn save_state(path: &Path, status: &CanaryStatus, error: &Mutex<Option<String>>) {
    let written = write_state(path, status);
    let mut error = error.lock().unwrap_or_else(|e| e.into_inner());
    match written {
        Ok(()) => {
            if error.take().is_some() {
                tracing::info!(path = %path.display(), "--state written again");
            }
        }
        Err(why) => {
            if error.as_deref() != Some(why.as_str()) {
                tracing::error!("{why}; traffic goes on with the routes in force, retrying");
            }
            *error = Some(why);
        }
    }
}

/// Writes the status atomically: a temporary file, synced, then renamed.
fn write_state(path: &Path, status: &CanaryStatus) -> Result<(), String> {
    write_json(path, status).map_err(|e| format!("--state {}: cannot write: {e}", path.display()))
}

pub(crate) fn write_report(
    path: &Path,
    status: &CanaryStatus,
    history: &[HistoryEntry],
) -> Result<(), String> {
    #[derive(Serialize)]
    struct Report<'a> {
        status: &'a CanaryStatus,
        history: &'a [HistoryEntry],
    }
    write_json(path, &Report { status, history })
        .map_err(|e| format!("--report {}: cannot write: {e}", path.display()))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    use std::io::Write;
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

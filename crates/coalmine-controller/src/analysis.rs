//! The judging session of each rollout under way (`coalmine-driver`'s
//! [`Session`]), one per Canary, fed by its providers once per analysis
//! interval during the Canary's reconcile.
//!
//! The judge's evidence lives in memory and in the Canary's status
//! (`status.judgeState`, written with the status after each judged
//! interval): a restarted or newly elected controller continues it from
//! there, with the alpha already spent, rather than starting afresh. A new
//! revision, a retry or an edit of `spec.analysis` gets a new judge (see
//! [`coalmine_driver::session`]). Collection happens inside the reconcile
//! of that Canary, so a slow provider delays only its own Canary.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coalmine_driver::Session;

/// A Canary's judging session, if a rollout is under way.
pub type Slot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// The judging sessions of every Canary this controller is rolling out.
#[derive(Default)]
pub struct Analyses {
    judges: Mutex<HashMap<String, Slot>>,
}

impl std::fmt::Debug for Analyses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analyses").finish_non_exhaustive()
    }
}

impl Analyses {
    /// Forgets a Canary's judge (deleted, or no rollout under way).
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.judges.lock() {
            m.remove(key);
        }
    }

    /// The Canary's session slot (empty until a rollout is judged).
    pub fn slot(&self, key: &str) -> Slot {
        match self.judges.lock() {
            Ok(mut m) => m.entry(key.to_owned()).or_default().clone(),
            Err(_) => Slot::default(),
        }
    }
}

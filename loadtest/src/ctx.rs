//! What every scenario shares about the process it runs in: the run's id and this process's
//! role ([`Ctx`], [`Procs`]), the Ctrl-C token that ends a phase early, and the open-files
//! check. `main` builds the [`Ctx`] from the command line and hands it to the scenario.

use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::workers::{ParentLink, Slot};

/// How this process takes part in the run.
pub enum Procs {
    /// The whole run in this process.
    Single,
    /// Parent of N worker processes: starts them, sets the start, merges their results.
    Parent(u32),
    /// One worker: its share of the run, reporting to the parent over stdout.
    Worker(Slot, tokio::sync::Mutex<ParentLink>),
}

/// What every scenario needs to know about the process it runs in.
pub struct Ctx {
    pub run_id: String,
    pub procs: Procs,
}

impl Ctx {
    /// This process's share (`0/1` unless it is a worker).
    pub fn slot(&self) -> Slot {
        match &self.procs {
            Procs::Worker(slot, _) => *slot,
            Procs::Single | Procs::Parent(_) => Slot { index: 0, count: 1 },
        }
    }
}

/// A short id unique to this run (milliseconds since the epoch and the pid, in hex), used in
/// user, trip and driver ids so that runs never collide in Redis or the database.
pub fn run_id() -> String {
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{millis:x}{:x}", std::process::id())
}

/// A token cancelled on the first Ctrl-C, so a scenario can end its current phase early and
/// still report and clean up. The listening task lives as long as the process.
pub fn interrupt_token() -> CancellationToken {
    let token = CancellationToken::new();
    let on_signal = token.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: finishing the current phase early");
            on_signal.cancel();
        }
    });
    token
}

/// Warns when the soft open-files limit cannot hold `sockets` connections (each is one fd).
pub fn warn_if_fd_limit_below(sockets: u64) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l["Max open files".len()..].split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft
        && soft < sockets.saturating_add(64)
    {
        eprintln!(
            "warning: open-files limit is {soft}, below the {sockets} sockets requested; \
             raise it with `ulimit -n` or connections will fail with io:Other/EMFILE"
        );
    }
}

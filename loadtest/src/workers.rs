//! Multi-process runs (`--workers N`): this machine caps one process at 20,000 open files,
//! so 50,000 sockets need several processes. The parent re-executes its own binary N times
//! with the same arguments plus `--worker i/N --run-id R`; each worker runs its share of the
//! scenario and talks to the parent in JSON lines:
//!
//! - worker → parent (stdout): `progress` every second, `ready` at the scenario's barrier
//!   (all connections up), `result` (its partial report, histograms in base64 V2) at the end;
//! - parent → worker (stdin): `go` with the shared wall-clock start once every worker is
//!   ready, or `stop`. End of stdin means the parent is gone: the worker stops too.
//!
//! Workers' stderr is the parent's, so their warnings show as they happen. This module owns
//! the child processes: every wait on them has a deadline, and those still running at the
//! end are killed by pid (never by name).

use std::process::Stdio;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::progress::snapshot::{Display, Snapshot};
use crate::stats::Tally;

/// This process's share of a multi-process run: worker `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub index: u32,
    pub count: u32,
}

impl FromStr for Slot {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (i, n) = s.split_once('/').ok_or("expected INDEX/COUNT")?;
        let index: u32 = i.parse().map_err(|_| "bad worker index")?;
        let count: u32 = n.parse().map_err(|_| "bad worker count")?;
        if count == 0 || index >= count {
            return Err("worker index must be below the count".to_owned());
        }
        Ok(Self { index, count })
    }
}

impl Slot {
    /// This worker's part of `total` items (the first `total % count` workers take one more).
    pub fn share(self, total: u64) -> u64 {
        let (n, i) = (u64::from(self.count), u64::from(self.index));
        total / n + u64::from(i < total % n)
    }

    /// True when item `k` (of a run-wide numbering) belongs to this worker.
    pub fn owns(self, k: u64) -> bool {
        k % u64::from(self.count) == u64::from(self.index)
    }
}

/// A worker's message to its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", content = "body", rename_all = "camelCase")]
pub enum FromWorker {
    Progress(Snapshot),
    Ready(Value),
    Result(Value),
    Failed(String),
}

/// The parent's message to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ToWorker {
    /// Everyone is ready; begin the measured phase at this wall-clock instant.
    Go {
        #[serde(rename = "startUnixMs")]
        start_unix_ms: u64,
    },
    Stop,
}

/// Writes one line to the parent. Failures are ignored: a gone parent closes our stdin,
/// which stops the run.
pub fn send_to_parent(msg: &FromWorker) {
    use std::io::Write as _;
    if let Ok(line) = serde_json::to_string(msg) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The worker's end of the link: the `go` signal and a token cancelled on `stop` or when
/// the parent goes away.
pub struct ParentLink {
    go: watch::Receiver<Option<u64>>,
    pub stop: CancellationToken,
}

impl ParentLink {
    /// Starts the stdin reader (owner: the worker process; ends at end of stdin).
    pub fn connect() -> Self {
        let (tx, go) = watch::channel(None);
        let stop = CancellationToken::new();
        let on_stop = stop.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<ToWorker>(&line) {
                    Ok(ToWorker::Go { start_unix_ms }) => {
                        let _ = tx.send(Some(start_unix_ms));
                    }
                    Ok(ToWorker::Stop) => break,
                    Err(_) => eprintln!("worker: ignoring an unreadable line from the parent"),
                }
            }
            on_stop.cancel();
        });
        Self { go, stop }
    }

    /// Tells the parent this worker reached the barrier and waits (up to `timeout`) for `go`.
    pub async fn barrier(&mut self, ready: Value, timeout: Duration) -> Option<u64> {
        send_to_parent(&FromWorker::Ready(ready));
        let wait = self.go.wait_for(Option::is_some);
        tokio::select! {
            r = tokio::time::timeout(timeout, wait) => r.ok().and_then(|r| r.ok().and_then(|v| *v)),
            () = self.stop.cancelled() => None,
        }
    }
}

enum Event {
    Msg(FromWorker),
    Exited,
}

/// The parent's side: the worker processes and what they said.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    rx: mpsc::Receiver<(usize, Event)>,
    latest: Vec<Snapshot>,
    ready: Vec<Option<Value>>,
    results: Vec<Option<Value>>,
    exited: Vec<bool>,
    display: Display,
    /// Workers that failed, exited early or sent something unreadable.
    pub failures: Tally,
}

impl Fleet {
    /// Starts `count` workers running this binary with this process's arguments.
    pub fn spawn(scenario: &str, count: u32, run_id: &str) -> anyhow::Result<Self> {
        if count == 0 {
            bail!("--workers must be at least 1");
        }
        let exe = std::env::current_exe().context("finding this binary to start workers")?;
        let args: Vec<_> = std::env::args_os().skip(1).collect();
        let n = usize::try_from(count).unwrap_or(1);
        // Capacity: a worker sends one progress line a second; this is minutes of slack.
        let (tx, rx) = mpsc::channel(1024);
        let mut children = Vec::with_capacity(n);
        let mut stdins = Vec::with_capacity(n);
        for index in 0..count {
            let mut child = Command::new(&exe)
                .args(&args)
                .arg("--worker")
                .arg(format!("{index}/{count}"))
                .arg("--run-id")
                .arg(run_id)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {index}"))?;
            let stdout = child.stdout.take().context("worker stdout")?;
            stdins.push(child.stdin.take());
            children.push(child);
            let tx = tx.clone();
            let i = usize::try_from(index).unwrap_or(0);
            // Reader task (owner: the fleet; ends at the worker's end of stdout).
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(msg) = serde_json::from_str::<FromWorker>(&line)
                        && tx.send((i, Event::Msg(msg))).await.is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send((i, Event::Exited)).await;
            });
        }
        Ok(Self {
            children,
            stdins,
            rx,
            latest: vec![Snapshot::default(); n],
            ready: vec![None; n],
            results: vec![None; n],
            exited: vec![false; n],
            display: Display::new(scenario),
            failures: Tally::default(),
        })
    }

    /// Waits until every worker that is still running has reached its barrier.
    pub async fn wait_ready(&mut self, deadline: Instant, interrupt: &CancellationToken) -> Vec<Value> {
        self.wait(deadline, interrupt, |f| f.ready.iter().zip(&f.exited).all(|(r, e)| r.is_some() || *e)).await;
        self.ready.iter().flatten().cloned().collect()
    }

    /// Sends `msg` to every worker still listening.
    pub async fn broadcast(&mut self, msg: &ToWorker) {
        let Ok(mut line) = serde_json::to_string(msg) else { return };
        line.push('\n');
        for stdin in self.stdins.iter_mut().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(2), stdin.write_all(line.as_bytes())).await;
        }
    }

    /// Waits for every worker's result (or exit); missing results are counted in `failures`.
    pub async fn wait_results(&mut self, deadline: Instant, interrupt: &CancellationToken) -> Vec<Value> {
        let mut stopped = false;
        loop {
            self.wait(deadline, interrupt, |f| f.results.iter().zip(&f.exited).all(|(r, e)| r.is_some() || *e)).await;
            // On Ctrl-C, ask workers to wrap up and keep waiting for their partial results.
            if interrupt.is_cancelled() && !stopped && Instant::now() < deadline {
                stopped = true;
                self.broadcast(&ToWorker::Stop).await;
                continue;
            }
            break;
        }
        for (i, r) in self.results.iter().enumerate() {
            if r.is_none() {
                self.failures.add(&format!("worker{i}:no_result"));
            }
        }
        self.results.iter().flatten().cloned().collect()
    }

    async fn wait(&mut self, deadline: Instant, interrupt: &CancellationToken, done: impl Fn(&Self) -> bool) {
        let mut redraw = tokio::time::interval(Duration::from_millis(500));
        while !done(self) {
            tokio::select! {
                () = sleep_until(deadline) => {
                    eprintln!("workers: deadline reached");
                    return;
                }
                () = interrupt.cancelled() => return,
                _ = redraw.tick() => self.display.update(Snapshot::sum(&self.latest)),
                got = self.rx.recv() => match got {
                    None => return,
                    Some((i, Event::Exited)) => self.exited[i] = true,
                    Some((i, Event::Msg(FromWorker::Progress(s)))) => self.latest[i] = s,
                    Some((i, Event::Msg(FromWorker::Ready(v)))) => self.ready[i] = Some(v),
                    Some((i, Event::Msg(FromWorker::Result(v)))) => self.results[i] = Some(v),
                    Some((i, Event::Msg(FromWorker::Failed(m)))) => {
                        eprintln!("worker {i} failed: {m}");
                        self.failures.add(&format!("worker{i}:failed"));
                    }
                },
            }
        }
    }

    /// Closes the workers' stdin, waits up to 10 s for them to exit, kills the rest.
    pub async fn finish(mut self) {
        self.display.finish();
        self.stdins.clear();
        for (i, child) in self.children.iter_mut().enumerate() {
            match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => eprintln!("worker {i} exited with {status}"),
                Ok(Err(e)) => eprintln!("worker {i}: {e}"),
                Err(_) => {
                    eprintln!("worker {i} did not exit; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_parse_and_split_work_evenly() {
        assert_eq!("1/3".parse::<Slot>(), Ok(Slot { index: 1, count: 3 }));
        assert!("3/3".parse::<Slot>().is_err());
        assert!("0/0".parse::<Slot>().is_err());
        assert!("x".parse::<Slot>().is_err());
        let shares: Vec<u64> = (0..3).map(|i| Slot { index: i, count: 3 }.share(50_000)).collect();
        assert_eq!(shares, vec![16_667, 16_667, 16_666]);
        assert_eq!(shares.iter().sum::<u64>(), 50_000);
        let s = Slot { index: 2, count: 3 };
        assert!(s.owns(5) && !s.owns(6));
    }

    #[test]
    fn messages_round_trip_as_json_lines() {
        let line = serde_json::to_string(&FromWorker::Ready(serde_json::json!({"connected": 3}))).expect("json");
        assert_eq!(line, r#"{"type":"ready","body":{"connected":3}}"#);
        let go: ToWorker = serde_json::from_str(r#"{"type":"go","startUnixMs":12}"#).expect("go");
        assert!(matches!(go, ToWorker::Go { start_unix_ms: 12 }));
        assert!(matches!(serde_json::from_str::<ToWorker>(r#"{"type":"stop"}"#), Ok(ToWorker::Stop)));
    }
}

//! Deleting a finished case's topics and groups off the critical path: a deletion waits for
//! the controller (~0.3 s), so a background thread does it while the next case runs, every
//! case that finished meanwhile in one request (one case at a time, it capped a check at ≈3
//! cases a second, and at 16 cases side by side a check waited 10 s at its end for the
//! queue). Dropping
//! the [`Cleanup`] (at the end of a check) waits until every deletion was attempted, so a run
//! leaves nothing behind on the cluster.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::cluster::Cluster;

/// Topics and groups of one finished case.
struct Leftovers {
    topics: Vec<String>,
    groups: Vec<String>,
}

pub(crate) struct Cleanup {
    tx: Mutex<Option<Sender<Leftovers>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Cleanup {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        let (tx, rx) = channel::<Leftovers>();
        let worker = std::thread::Builder::new()
            .name("kafka-harness-cleanup".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    batch.extend(rx.try_iter());
                    let topics: Vec<&str> = batch
                        .iter()
                        .flat_map(|l| l.topics.iter().map(String::as_str))
                        .collect();
                    let groups: Vec<&str> = batch
                        .iter()
                        .flat_map(|l| l.groups.iter().map(String::as_str))
                        .collect();
                    // Best effort: a failure here cannot change a verdict, and the prefix keeps
                    // leftovers recognisable.
                    let _ = cluster.delete_topics(&topics);
                    let _ = cluster.delete_groups(&groups);
                }
            })
            .ok();
        Cleanup {
            tx: Mutex::new(Some(tx)),
            worker: Mutex::new(worker),
        }
    }

    /// Delete these once the case is over (now, if the background thread is gone).
    pub(crate) fn submit(&self, cluster: &Cluster, topics: Vec<String>, groups: Vec<String>) {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let leftovers = Leftovers { topics, groups };
        let unsent = match tx.as_ref() {
            Some(tx) => tx.send(leftovers).err().map(|e| e.0),
            None => Some(leftovers),
        };
        if let Some(l) = unsent {
            let topics: Vec<&str> = l.topics.iter().map(String::as_str).collect();
            let groups: Vec<&str> = l.groups.iter().map(String::as_str).collect();
            let _ = cluster.delete_topics(&topics);
            let _ = cluster.delete_groups(&groups);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = w.join();
        }
    }
}

/// Case directories are named `kafka-harness-case-<pid>-<random>` in the temp directory, so
/// that one left by a harness that was killed mid-case (a CI timeout, Ctrl-C: no destructor
/// ran) can be told from one a live harness is using.
const CASE_DIR_PREFIX: &str = "kafka-harness-case-";

/// A new case directory, after (once per process) removing those whose harness is gone.
pub(crate) fn case_dir() -> std::io::Result<tempfile::TempDir> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let tmp = std::env::temp_dir();
    SWEPT.call_once(|| sweep_dead_case_dirs(&tmp, process_exists));
    tempfile::Builder::new()
        .prefix(&format!("{CASE_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&tmp)
}

/// The pid a case directory's name carries (`None`: not a case directory of this format).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(CASE_DIR_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Whether a process with this pid exists; `true` where that cannot be known (no `/proc`), so
/// nothing is removed there.
fn process_exists(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove every case directory in `tmp` whose owner process is gone. Best effort: a directory
/// that cannot be read or removed stays.
fn sweep_dead_case_dirs(tmp: &std::path::Path, alive: impl Fn(u32) -> bool) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if !alive(pid) && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_this_format() {
        assert_eq!(owner_pid("kafka-harness-case-4242-AbC9x"), Some(4242));
        assert_eq!(owner_pid("kafka-harness-case-AbC9x"), None);
        assert_eq!(owner_pid("kafka-harness-case-4242-"), None);
        assert_eq!(owner_pid("other-4242-AbC9x"), None);
    }

    #[test]
    fn the_sweep_removes_only_directories_of_dead_owners() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dead = tmp.path().join("kafka-harness-case-7-dead1");
        let live = tmp.path().join("kafka-harness-case-8-live1");
        let foreign = tmp.path().join("kafka-harness-case-old1");
        for d in [&dead, &live, &foreign] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::write(d.join("trace-1.jsonl"), "{}").expect("write");
        }
        sweep_dead_case_dirs(tmp.path(), |pid| pid == 8);
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(foreign.exists());
    }

    #[test]
    fn this_process_is_alive_and_an_impossible_pid_is_not() {
        assert!(process_exists(std::process::id()));
        // Above Linux's largest pid_max (2^22).
        if std::path::Path::new("/proc/self").exists() {
            assert!(!process_exists(u32::MAX - 1));
        }
    }
}

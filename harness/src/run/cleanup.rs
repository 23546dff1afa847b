//! Deleting a finished case's topics and groups off the critical path: a deletion waits for
//! the controller (~0.3 s), so a background thread does it while the next case runs. Dropping
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
                for l in rx {
                    let topics: Vec<&str> = l.topics.iter().map(String::as_str).collect();
                    let groups: Vec<&str> = l.groups.iter().map(String::as_str).collect();
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

//! Broker faults during an incarnation: find the broker that has the role the schedule names
//! (a partition's leader, the group's coordinator) when the fault fires, kill or freeze it,
//! and bring it back when its time is up — or when the incarnation ends, whichever comes
//! first, so that the drain always runs on a whole cluster. One broker is out at a time: a
//! broker fault that comes due while another broker is out waits for it to be back (metadata
//! would still name the broker that is out). A broker is listed as out *before* the harness
//! acts on it, so a case that ends in an error brings it back too ([`Case`]'s `Drop`).

use std::time::{Duration, Instant};

use super::Case;
use crate::schedule::{BrokerAction, BrokerTarget};
use crate::trace::EventKind;
use crate::Result;

/// How long after a broker came back a silent worker is not yet called idle: librdkafka's
/// reconnect backoff grows to 10 s (`reconnect.backoff.max.ms`), and a blocking call made
/// during the fault (a commit, `commit_transaction` — 10 s in the instrumented producer)
/// returns only when it gets an answer or times out.
const RECOVERY: Duration = Duration::from_secs(12);

/// A broker the harness has taken down or frozen and must bring back.
pub(super) struct Outstanding {
    broker: usize,
    frozen: bool,
    due: Instant,
    role: String,
}

impl Case<'_> {
    /// Fire a [`crate::Fault::Broker`]: resolve its target now, then act. Call it only when
    /// no broker is out ([`Case::broker_out`]).
    pub(super) fn broker_fault(
        &mut self,
        target: BrokerTarget,
        action: BrokerAction,
    ) -> Result<()> {
        let broker = self.broker_with(target)?;
        let role = target.to_string();
        let (frozen, millis) = match action {
            BrokerAction::Restart => (false, 0),
            BrokerAction::Down { millis } => (false, millis),
            BrokerAction::Pause { millis } => (true, millis),
        };
        self.orchestrator(EventKind::BrokerFault {
            broker,
            action: if frozen { "pause" } else { "kill" }.into(),
            role: Some(role.clone()),
        });
        self.outstanding.push(Outstanding {
            broker,
            frozen,
            due: Instant::now() + Duration::from_millis(millis),
            role,
        });
        if frozen {
            self.runner.cluster.pause_broker(broker)?;
        } else {
            self.runner.cluster.kill_broker(broker)?;
        }
        // A restart is a kill that is due at once: the incarnation's next
        // `restore_brokers` brings it back, after the worker waiting at its effect was
        // released into the outage.
        Ok(())
    }

    /// The broker that has `role` for this case now (from a fresh metadata read).
    pub(super) fn broker_with(&self, role: BrokerTarget) -> Result<usize> {
        let cluster = &self.runner.cluster;
        Ok(match role {
            BrokerTarget::Leader { partition } => cluster.leader_of(&self.topic, partition)?,
            BrokerTarget::Coordinator => cluster.coordinator_of(&self.group)?,
            BrokerTarget::TransactionCoordinator => {
                cluster.transaction_coordinator_of(&self.transactional_id())?
            }
        })
    }

    /// Whether a broker is down or frozen right now.
    pub(super) fn broker_out(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// Whether a broker is out or a link cut, or one came back less than [`RECOVERY`] ago:
    /// a worker that is silent then may be inside a client call that is still recovering,
    /// not idle.
    pub(super) fn broker_recovering(&self) -> bool {
        self.broker_out()
            || self.link_out()
            || self.broker_back.is_some_and(|t| t.elapsed() < RECOVERY)
    }

    /// Bring back every broker whose time is up (`all`: every one), then wait until the
    /// cluster is whole (every broker in metadata, a replicated topic can be created).
    pub(super) fn restore_brokers(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        while let Some(i) = self.outstanding.iter().position(|o| all || o.due <= now) {
            // Still listed while it is brought back: if that fails, `Drop` tries again.
            let (broker, frozen, role) = {
                let o = &self.outstanding[i];
                (o.broker, o.frozen, o.role.clone())
            };
            let cluster = &self.runner.cluster;
            let action = if frozen {
                cluster.resume_broker(broker)?;
                cluster.wait_ready()?;
                "resume"
            } else {
                cluster.restart_broker(broker)?;
                "restart"
            };
            self.outstanding.remove(i);
            self.broker_back = Some(Instant::now());
            self.orchestrator(EventKind::BrokerFault {
                broker,
                action: action.into(),
                role: Some(role),
            });
        }
        Ok(())
    }

    /// Best effort, for a case that is being abandoned on an error.
    pub(super) fn restore_brokers_quietly(&mut self) {
        for o in std::mem::take(&mut self.outstanding) {
            let cluster = &self.runner.cluster;
            let restored = if o.frozen {
                cluster.resume_broker(o.broker)
            } else {
                cluster.restart_broker(o.broker)
            };
            if let Err(e) = restored {
                eprintln!(
                    "kafka-harness: could not bring broker {} back after a failed case: {e}",
                    o.broker
                );
            }
        }
    }
}

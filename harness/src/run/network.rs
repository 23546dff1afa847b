//! Network faults during an incarnation: the links between the worker and a broker (found
//! by role when the fault fires) or every broker, cut or slowed through the harness's proxy,
//! healed when the fault's time is up or when the incarnation ends — so the drain runs over
//! open links. The worker reaches the brokers through the proxies only in a case with a
//! network fault (its spec's bootstrap is the proxied one); the second member and the
//! harness's own clients go direct, so the cut is between this worker and the cluster.

use std::time::{Duration, Instant};

use super::Case;
use crate::cluster::LinkState;
use crate::schedule::{LinkAction, LinkTarget};
use crate::trace::EventKind;
use crate::Result;

/// A link the harness has cut or slowed and must heal.
pub(super) struct CutLink {
    broker: Option<usize>,
    due: Instant,
    role: String,
}

impl Case<'_> {
    /// Whether this case's worker connects through the link proxies.
    pub(super) fn proxied(&self) -> bool {
        self.schedule.faults.iter().any(|f| {
            matches!(
                f.cluster_fault(),
                Some(crate::schedule::ClusterFault::Network(..))
            )
        })
    }

    /// Fire a [`crate::Fault::Network`]: resolve its target now, then cut or slow.
    pub(super) fn network_fault(&mut self, target: LinkTarget, action: LinkAction) -> Result<()> {
        let broker = match target.broker() {
            Some(role) => Some(self.broker_with(role)?),
            None => None,
        };
        let (state, name) = match action {
            LinkAction::Cut { .. } => (LinkState::Cut, "cut"),
            LinkAction::Slow { delay_ms, .. } => {
                (LinkState::Slow(Duration::from_millis(delay_ms)), "slow")
            }
        };
        let role = target.to_string();
        self.cut_links.push(CutLink {
            broker,
            due: Instant::now() + Duration::from_millis(action.millis()),
            role: role.clone(),
        });
        self.runner.cluster.set_link(broker, state)?;
        self.orchestrator(EventKind::LinkFault {
            broker,
            action: name.into(),
            role,
        });
        Ok(())
    }

    /// Whether a link is cut or slowed right now.
    pub(super) fn link_out(&self) -> bool {
        !self.cut_links.is_empty()
    }

    /// Heal every link whose time is up (`all`: every one).
    pub(super) fn heal_links(&mut self, all: bool) -> Result<()> {
        let now = Instant::now();
        while let Some(i) = self.cut_links.iter().position(|c| all || c.due <= now) {
            let (broker, role) = (self.cut_links[i].broker, self.cut_links[i].role.clone());
            self.runner.cluster.set_link(broker, LinkState::Open)?;
            self.cut_links.remove(i);
            self.broker_back = Some(Instant::now());
            self.orchestrator(EventKind::LinkFault {
                broker,
                action: "heal".into(),
                role,
            });
        }
        Ok(())
    }

    /// Best effort, for a case that is being abandoned on an error.
    pub(super) fn heal_links_quietly(&mut self) {
        for c in std::mem::take(&mut self.cut_links) {
            if let Err(e) = self.runner.cluster.set_link(c.broker, LinkState::Open) {
                eprintln!("kafka-harness: could not heal a network cut after a failed case: {e}");
            }
        }
    }
}

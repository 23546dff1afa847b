//! proptest strategies that generate schedules and shrink them toward the smallest failure:
//! fewer faults (the vector shrinks by removal), earlier hits and smaller counts (integers
//! shrink toward their lower bound), fewer messages, partitions and keys, and crash points
//! toward the first discovered one. Every generated schedule passes [`Schedule::validate`].

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{NewTree, ValueTree};
use proptest::test_runner::TestRunner;

use super::{
    BrokerAction, BrokerTarget, Fault, LinkAction, LinkTarget, Schedule, SinkFailure, Workload,
    SCHEDULE_VERSION,
};

/// The built-in point right after a poll returned (`worker::points::AFTER_POLL`; named here so
/// that `schedule` needs nothing from `worker`, and a test checks the two agree).
pub(crate) const AFTER_POLL: &str = "after-poll";

/// In a relative fault, `*` as the point counts hits of every crash point: "the first thing
/// the consumer does after the revoke".
pub const ANY_POINT: &str = "*";

/// The anchor a relative crash counts from after a rebalance: the built-in `revoke` point.
pub const ANCHOR_REVOKE: &str = "revoke";
/// The anchor a relative crash counts from after a sink outage began (a pseudo-point the
/// sink handle marks at the outage's first failed write).
pub const ANCHOR_SINK_OUTAGE: &str = "sink-outage";

/// Which kinds of fault a strategy may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultKinds {
    /// Self-inflicted SIGKILL at crash points.
    pub crashes: bool,
    /// Orchestrator SIGKILL after N effects.
    pub kills: bool,
    /// Orchestrator SIGKILL at a random instant (non-deterministic; off by default).
    pub random_kills: bool,
    /// Sink outages (k consecutive failing writes, or failures for t ms), alone or followed
    /// by a crash counted from the outage's start.
    pub sink_failures: bool,
    /// A second group member joining at a crash point, alone or followed by a crash counted
    /// from the revoke.
    pub rebalances: bool,
    /// Broker faults ([`Fault::BrokerAt`] at a crash-point hit, or [`Fault::Broker`] after N
    /// effects): the leader of an input partition or the group
    /// coordinator (for a transactional check, also the transaction coordinator) killed and
    /// restarted, killed for a while, or frozen for a while (needs the
    /// containers or local backend; on a 3-broker cluster a restart moves leadership and
    /// coordination to the other brokers).
    pub broker_faults: bool,
    /// The worker stopped (SIGSTOP) at a crash point for 300 ms, or for 2.5 s — past the
    /// session timeout, so it wakes as a zombie after a second member took its partitions;
    /// with `rebalances` too, also 300 ms soon after a revoke (the other member runs ahead).
    pub pauses: bool,
    /// Network faults ([`Fault::NetworkAt`] at a crash-point hit, or [`Fault::Network`] after
    /// N effects): the worker's links to the leader of an input
    /// partition, to the group coordinator (for a transactional check, also to the
    /// transaction coordinator) or to every broker, cut for 2 s or slowed by 200 ms a chunk
    /// for 2 s (needs the containers or local backend).
    pub network_faults: bool,
}

impl FaultKinds {
    /// Every kind off: the base to switch on exactly the kinds wanted.
    ///
    /// ```
    /// use kafka_harness::FaultKinds;
    /// let only_pauses = FaultKinds { pauses: true, ..FaultKinds::NONE };
    /// assert!(!only_pauses.crashes && only_pauses.pauses);
    /// ```
    pub const NONE: FaultKinds = FaultKinds {
        crashes: false,
        kills: false,
        random_kills: false,
        sink_failures: false,
        rebalances: false,
        broker_faults: false,
        pauses: false,
        network_faults: false,
    };
}

impl Default for FaultKinds {
    fn default() -> Self {
        FaultKinds {
            crashes: true,
            kills: true,
            ..FaultKinds::NONE
        }
    }
}

/// A pause the group rides out (below the default 1 s session timeout).
pub const PAUSE_SHORT_MS: u64 = 300;
/// A pause past the session timeout: the worker wakes as a zombie.
pub const PAUSE_ZOMBIE_MS: u64 = 2500;

/// How long a generated broker fault keeps its broker down or frozen: past the client's
/// request timeouts' first retries and the harness's 1 s session timeout, short of a case's
/// budget.
pub const BROKER_FAULT_MS: u64 = 2000;

/// How long a generated network fault lasts: past the harness's 1 s session timeout (a cut
/// from the coordinator gets the worker evicted), short of a case's budget.
pub const NETWORK_FAULT_MS: u64 = 2000;
/// The delay a generated slow link adds to every chunk, each way.
pub const SLOW_LINK_DELAY_MS: u64 = 200;

/// A count in `1..=max`: `max` half the time, else uniform; it shrinks toward 1 by binary
/// search from wherever it was drawn, as a range draw does. (A union of `Just(max)` and the
/// range shrank from `max` only to one random value of the range: when that value held, the
/// minimal schedule kept every message.)
#[derive(Debug, Clone, Copy)]
struct TopHeavy(u32);

impl Strategy for TopHeavy {
    type Tree = proptest::num::u32::BinarySearch;
    type Value = u32;

    fn new_tree(&self, runner: &mut TestRunner) -> NewTree<Self> {
        let max = self.0.max(1);
        // Drawn through proptest's own strategies: the runner's generator alone decides, so a
        // tree drawn again from a copy of it is the same tree (see `harness::speculate`).
        let at_max = proptest::bool::ANY.new_tree(runner)?.current();
        let uniform = (1..=max).new_tree(runner)?.current();
        let start = if at_max { max } else { uniform };
        Ok(proptest::num::u32::BinarySearch::new_above(1, start))
    }
}

/// The space schedules are drawn from.
#[derive(Debug, Clone)]
pub struct ScheduleSpace {
    /// Crash points that exist in the consumer, with the most hits one incarnation reached in
    /// the fault-free discovery run.
    pub points: Vec<(String, u32)>,
    /// Upper bounds of the workload (lower bounds are 1).
    pub max: Workload,
    /// Faults per schedule.
    pub faults: std::ops::RangeInclusive<usize>,
    /// Allowed fault kinds.
    pub kinds: FaultKinds,
    /// Broker count (for broker faults).
    pub brokers: usize,
    /// Whether the backend can cut the worker's links (for network faults).
    pub links: bool,
    /// Whether the worker is transactional: broker faults then also target its transaction
    /// coordinator.
    pub transactional: bool,
    /// Whether the harness can count the worker's effects: its writes go through the harness's
    /// sink (`after-sink-write` hits), or its output is the case's output topic. A consumer
    /// that writes with its own client (its own database connection) shows no effects, so
    /// faults triggered after N effects — kills, broker and network faults, rebalances of a
    /// consumer without crash points — are not generated for it: they would never fire, and a
    /// case whose first incarnation waits for one runs its later faults never.
    pub effects: bool,
}

impl ScheduleSpace {
    /// The strategy. Panics never; an empty space yields fault-free schedules.
    ///
    /// Workload and faults shrink independently. Each fault's trigger is then clamped to what
    /// the drawn workload can reach (a crash point's hits scale with the message count: the
    /// discovery run saw `max_hit` hits with `max.messages` messages), so a small workload does
    /// not get faults whose trigger never comes, at every shrink step too.
    pub fn strategy(&self) -> BoxedStrategy<Schedule> {
        let max = self.max;
        // Half the time a dimension is drawn at its maximum: a fault has the most in flight
        // with the most traffic, and a bug about moving partitions needs more than one (drawn
        // uniformly, half the cases had one partition and most had few messages).
        let messages = TopHeavy(max.messages);
        let partitions = TopHeavy(max.partitions.max(1) as u32).prop_map(|p| p as i32);
        let workload =
            (messages, partitions, 1..=max.keys.max(1)).prop_map(|(messages, partitions, keys)| {
                Workload {
                    messages,
                    partitions,
                    // More keys than messages changes nothing (message `i` has key `k{i}` either
                    // way), so such workloads are drawn as one: a shrink step that only lowers
                    // `keys` toward `messages` is then the schedule in hand, answered without a run
                    // (it cost a case per step before, invisible in the shrink log).
                    keys: keys.min(messages),
                }
            });
        let Some(fault) = self.fault_strategy(max.messages.max(1)) else {
            return workload.prop_map(Schedule::new).boxed();
        };
        let space = self.clone();
        // Which side of a rebalance the worker ends on (see `Schedule::joiner_first`): both
        // are explored, and a shrunk schedule keeps its side on replay.
        let joiner_first = if self.kinds.rebalances {
            proptest::bool::ANY.boxed()
        } else {
            Just(false).boxed()
        };
        (
            workload,
            proptest::collection::vec(fault, self.faults.clone()),
            joiner_first,
        )
            .prop_map(move |(workload, groups, joiner_first)| {
                let faults = groups
                    .into_iter()
                    .flatten()
                    .map(|f| space.clamp(f, &workload))
                    .collect();
                let mut schedule = Schedule {
                    version: SCHEDULE_VERSION,
                    workload,
                    faults,
                    joiner_first: false,
                };
                schedule.joiner_first = joiner_first && schedule.adds_member();
                schedule
            })
            .boxed()
    }

    /// `fault` with its trigger brought within reach of `workload` (and a partition it names
    /// within its partitions).
    fn clamp(&self, fault: Fault, workload: &Workload) -> Fault {
        let m = workload.messages.max(1);
        match fault {
            Fault::Crash { point, hit } => {
                let hit = hit.min(self.reachable_hits(&point, hit, m));
                Fault::Crash { point, hit }
            }
            Fault::RebalanceAt { point, hit } => {
                let hit = hit.min(self.reachable_hits(&point, hit, m));
                Fault::RebalanceAt { point, hit }
            }
            Fault::PauseAt { point, hit, millis } => {
                let hit = hit.min(self.reachable_hits(&point, hit, m));
                Fault::PauseAt { point, hit, millis }
            }
            Fault::CrashAfter { after, point, hit } => {
                let hit = hit.min(self.reachable_hits(&point, hit, m));
                Fault::CrashAfter { after, point, hit }
            }
            Fault::RebalanceAfter { after, point, hit } => {
                let hit = hit.min(self.reachable_hits(&point, hit, m));
                Fault::RebalanceAfter { after, point, hit }
            }
            Fault::PauseAfter {
                after,
                point,
                hit,
                millis,
            } => {
                let hit = hit.min(self.reachable_hits(&point, hit, m));
                Fault::PauseAfter {
                    after,
                    point,
                    hit,
                    millis,
                }
            }
            Fault::KillAfterEffects { effects } => Fault::KillAfterEffects {
                effects: effects.min(m),
            },
            Fault::SinkFailure {
                write,
                failure,
                writes,
                millis,
            } => Fault::SinkFailure {
                write: write.min(m),
                failure,
                writes,
                millis,
            },
            Fault::Rebalance { after_effects } => Fault::Rebalance {
                after_effects: after_effects.min(m),
            },
            Fault::BrokerRestart {
                broker,
                after_effects,
            } => Fault::BrokerRestart {
                broker,
                after_effects: after_effects.min(m),
            },
            Fault::Broker {
                target,
                action,
                after_effects,
            } => Fault::Broker {
                target: target.within(workload.partitions),
                action,
                after_effects: after_effects.min(m),
            },
            Fault::Network {
                target,
                action,
                after_effects,
            } => Fault::Network {
                target: target.within(workload.partitions),
                action,
                after_effects: after_effects.min(m),
            },
            Fault::BrokerAt {
                target,
                action,
                point,
                hit,
            } => Fault::BrokerAt {
                target: target.within(workload.partitions),
                action,
                hit: hit.min(self.reachable_hits(&point, hit, m)),
                point,
            },
            Fault::NetworkAt {
                target,
                action,
                point,
                hit,
            } => Fault::NetworkAt {
                target: target.within(workload.partitions),
                action,
                hit: hit.min(self.reachable_hits(&point, hit, m)),
                point,
            },
            other => other,
        }
    }

    /// Hits of `point` a workload of `messages` can reach (`fallback` for an unknown point).
    fn reachable_hits(&self, point: &str, fallback: u32, messages: u32) -> u32 {
        let max_hit = self
            .points
            .iter()
            .find(|(p, _)| p == point)
            .map(|(_, h)| *h)
            .unwrap_or(fallback);
        self.scaled_hits(max_hit, messages)
    }

    /// Hits of a point that a workload of `messages` can reach.
    fn scaled_hits(&self, max_hit: u32, messages: u32) -> u32 {
        let max_messages = self.max.messages.max(1) as u64;
        let scaled = (max_hit as u64 * messages as u64).div_ceil(max_messages);
        scaled.clamp(1, max_hit.max(1) as u64) as u32
    }

    /// One fault, or two related ones (an outage or a rebalance, then a crash counted from it).
    fn fault_strategy(&self, max_effects: u32) -> Option<BoxedStrategy<Vec<Fault>>> {
        let k = self.kinds;
        let single = |s: BoxedStrategy<Fault>| s.prop_map(|f| vec![f]).boxed();
        let points: Vec<(String, u32)> = self
            .points
            .iter()
            .map(|(p, h)| (p.clone(), self.scaled_hits(*h, max_effects)))
            .collect();
        let at_point = |points: Vec<(String, u32)>, max: u32| {
            select(points)
                .prop_flat_map(move |(point, max_hit)| (Just(point), 1..=max_hit.clamp(1, max)))
        };
        // A fault that follows a related one lands soon after it: at the first few crash-point
        // hits after it — of any point (`*`, half the time) or of a named one — hit 1 most often.
        let mut relative_points = vec![(ANY_POINT.to_string(), u32::MAX)];
        relative_points.extend(points.iter().cloned());
        let soon_after = move || {
            let any = Just(ANY_POINT.to_string());
            let named = select(relative_points.clone()).prop_map(|(p, _)| p);
            let point = prop_oneof![any, named];
            let hit = prop_oneof![3 => Just(1u32), 1 => 2u32..=4];
            (point, hit)
        };
        let crash_after = |after: &'static str| {
            proptest::option::of(
                soon_after().prop_map(move |(point, hit)| Fault::CrashAfter {
                    after: after.to_string(),
                    point,
                    hit,
                }),
            )
        };
        let mut options: Vec<BoxedStrategy<Vec<Fault>>> = Vec::new();
        if k.crashes && !points.is_empty() {
            options.push(single(
                at_point(points.clone(), u32::MAX)
                    .prop_map(|(point, hit)| Fault::Crash { point, hit })
                    .boxed(),
            ));
        }
        if k.kills && self.effects {
            options.push(single(
                (1..=max_effects)
                    .prop_map(|effects| Fault::KillAfterEffects { effects })
                    .boxed(),
            ));
        }
        if k.random_kills {
            options.push(single(
                (50u64..=3000)
                    .prop_map(|millis| Fault::KillAfterMillis { millis })
                    .boxed(),
            ));
        }
        if k.sink_failures {
            let failure = prop_oneof![
                Just(SinkFailure::Transient),
                Just(SinkFailure::Permanent),
                (100u64..=2000).prop_map(|millis| SinkFailure::Hang { millis }),
            ];
            // Real outages last: k consecutive writes, or t ms; both shrink toward short.
            let length = prop_oneof![
                (1u32..=4).prop_map(|writes| (writes, None)),
                (20u64..=1500).prop_map(|ms| (1, Some(ms))),
            ];
            let outage = (1..=max_effects, failure, length).prop_map(
                |(write, failure, (writes, millis))| Fault::SinkFailure {
                    write,
                    failure,
                    writes,
                    millis,
                },
            );
            // Then maybe a crash or a rebalance while the outage's consequences are in flight.
            let mut follow: Vec<BoxedStrategy<Option<Fault>>> = Vec::new();
            if k.crashes && !points.is_empty() {
                follow.push(crash_after(ANCHOR_SINK_OUTAGE).boxed());
            }
            if k.rebalances && !points.is_empty() {
                follow.push(
                    proptest::option::of(soon_after().prop_map(|(point, hit)| {
                        Fault::RebalanceAfter {
                            after: ANCHOR_SINK_OUTAGE.to_string(),
                            point,
                            hit,
                        }
                    }))
                    .boxed(),
                );
            }
            let then = if follow.is_empty() {
                Just(None).boxed()
            } else {
                proptest::strategy::Union::new(follow).boxed()
            };
            options.push(
                (outage, then)
                    .prop_map(|(o, c)| std::iter::once(o).chain(c).collect())
                    .boxed(),
            );
        }
        if k.rebalances && (self.effects || !points.is_empty()) {
            if points.is_empty() {
                options.push(single(
                    (1..=max_effects)
                        .prop_map(|after_effects| Fault::Rebalance { after_effects })
                        .boxed(),
                ));
            } else {
                // Two times in three right after a poll, where a consumer holds records it has
                // not processed yet — the moment a revoke hurts —, half of those within the
                // first three polls (a revoke early leaves the most work for the next owner);
                // otherwise at any point.
                let after_poll: Vec<(String, u32)> = points
                    .iter()
                    .filter(|(p, _)| p == AFTER_POLL)
                    .cloned()
                    .collect();
                let has_after_poll = !after_poll.is_empty();
                let rebalance = if has_after_poll {
                    prop_oneof![
                        at_point(after_poll.clone(), 3),
                        at_point(after_poll, u32::MAX),
                        at_point(points.clone(), u32::MAX)
                    ]
                    .boxed()
                } else {
                    at_point(points.clone(), u32::MAX).boxed()
                }
                .prop_map(|(point, hit)| Fault::RebalanceAt { point, hit });
                // Then maybe a crash counted from the revoke, or a short pause there: the
                // member that took partitions over runs ahead (processes, commits) before
                // this one goes on with whatever it kept of them.
                let mut follow: Vec<BoxedStrategy<Option<Fault>>> = Vec::new();
                if k.crashes {
                    follow.push(crash_after(ANCHOR_REVOKE).boxed());
                }
                if k.pauses {
                    // Half the time at the first poll after the revoke: the new assignment is
                    // in force there (a pause inside the revoke handler holds the rebalance
                    // up instead of letting the other member run).
                    let next_poll = if has_after_poll {
                        Just((AFTER_POLL.to_string(), 1u32)).boxed()
                    } else {
                        soon_after().boxed()
                    };
                    let at = prop_oneof![next_poll, soon_after()];
                    follow.push(
                        proptest::option::weighted(
                            0.75,
                            at.prop_map(|(point, hit)| Fault::PauseAfter {
                                after: ANCHOR_REVOKE.to_string(),
                                point,
                                hit,
                                millis: PAUSE_SHORT_MS,
                            }),
                        )
                        .boxed(),
                    );
                }
                let then = if follow.is_empty() {
                    Just(None).boxed()
                } else {
                    proptest::strategy::Union::new(follow).boxed()
                };
                options.push(
                    (rebalance, then)
                        .prop_map(|(r, c)| std::iter::once(r).chain(c).collect())
                        .boxed(),
                );
            }
        }
        if k.pauses && !points.is_empty() {
            // Short (the group keeps it) or past the session timeout (a zombie); shrinks
            // toward short.
            let length = prop_oneof![Just(PAUSE_SHORT_MS), Just(PAUSE_ZOMBIE_MS)];
            options.push(single(
                (at_point(points.clone(), u32::MAX), length)
                    .prop_map(|((point, hit), millis)| Fault::PauseAt { point, hit, millis })
                    .boxed(),
            ));
        }
        // When a broker or network fault fires: at a crash-point hit (the worker waits there
        // until the fault is in place — deterministic for any consumer with crash points, its
        // own fail points included, which is all a consumer with its own clients has), or
        // after a count of effects. Shrinks toward the point.
        let trigger = {
            let effects = (1..=max_effects).prop_map(Trigger::Effects);
            // (`select` panics on no points: `at` is built only where there are some.)
            let at = || at_point(points.clone(), u32::MAX).prop_map(|(p, h)| Trigger::At(p, h));
            match (points.is_empty(), self.effects) {
                (true, true) => Some(effects.boxed()),
                (false, true) => Some(prop_oneof![at(), effects].boxed()),
                (false, false) => Some(at().boxed()),
                (true, false) => None,
            }
        };
        if let (true, true, Some(trigger)) = (k.broker_faults, self.brokers > 0, trigger.clone()) {
            // Shrinks toward the coordinator of the group (one per case, whatever the
            // workload) and toward a kill with an immediate restart.
            let mut targets = vec![
                Just(BrokerTarget::Coordinator).boxed(),
                (0..self.max.partitions.max(1))
                    .prop_map(|partition| BrokerTarget::Leader { partition })
                    .boxed(),
            ];
            if self.transactional {
                targets.push(Just(BrokerTarget::TransactionCoordinator).boxed());
            }
            let target = proptest::strategy::Union::new(targets);
            let action = prop_oneof![
                Just(BrokerAction::Restart),
                Just(BrokerAction::Down {
                    millis: BROKER_FAULT_MS
                }),
                Just(BrokerAction::Pause {
                    millis: BROKER_FAULT_MS
                }),
            ];
            options.push(single(
                (target, action, trigger.clone())
                    .prop_map(|(target, action, trigger)| match trigger {
                        Trigger::At(point, hit) => Fault::BrokerAt {
                            target,
                            action,
                            point,
                            hit,
                        },
                        Trigger::Effects(after_effects) => Fault::Broker {
                            target,
                            action,
                            after_effects,
                        },
                    })
                    .boxed(),
            ));
        }
        if let (true, true, Some(trigger)) = (k.network_faults, self.links, trigger) {
            // Shrinks toward a cut from the group coordinator.
            let mut targets = vec![
                Just(LinkTarget::Coordinator).boxed(),
                (0..self.max.partitions.max(1))
                    .prop_map(|partition| LinkTarget::Leader { partition })
                    .boxed(),
                Just(LinkTarget::All).boxed(),
            ];
            if self.transactional {
                targets.push(Just(LinkTarget::TransactionCoordinator).boxed());
            }
            let target = proptest::strategy::Union::new(targets);
            let action = prop_oneof![
                Just(LinkAction::Cut {
                    millis: NETWORK_FAULT_MS
                }),
                Just(LinkAction::Slow {
                    millis: NETWORK_FAULT_MS,
                    delay_ms: SLOW_LINK_DELAY_MS,
                }),
            ];
            options.push(single(
                (target, action, trigger)
                    .prop_map(|(target, action, trigger)| match trigger {
                        Trigger::At(point, hit) => Fault::NetworkAt {
                            target,
                            action,
                            point,
                            hit,
                        },
                        Trigger::Effects(after_effects) => Fault::Network {
                            target,
                            action,
                            after_effects,
                        },
                    })
                    .boxed(),
            ));
        }
        if options.is_empty() {
            return None;
        }
        Some(proptest::strategy::Union::new(options).boxed())
    }
}

/// When a generated broker or network fault fires.
#[derive(Debug, Clone)]
enum Trigger {
    /// At this hit of this point.
    At(String, u32),
    /// After this many effects.
    Effects(u32),
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    fn space() -> ScheduleSpace {
        ScheduleSpace {
            points: vec![("after-poll".into(), 12), ("after-commit".into(), 4)],
            max: Workload {
                messages: 20,
                partitions: 3,
                keys: 5,
            },
            faults: 1..=3,
            kinds: FaultKinds {
                sink_failures: true,
                rebalances: true,
                broker_faults: true,
                network_faults: true,
                ..FaultKinds::default()
            },
            brokers: 3,
            links: true,
            transactional: false,
            effects: true,
        }
    }

    /// Shrinking draws a failing case's tree again from a copy of the generator and replays
    /// proptest's moves on it (harness::speculate): two trees drawn from the same generator state
    /// must stay equal through any sequence of moves.
    #[test]
    fn a_schedule_tree_drawn_again_shrinks_the_same_way() {
        use proptest::test_runner::{Config, RngAlgorithm, TestRng};
        let strategy = ScheduleSpace {
            kinds: FaultKinds {
                pauses: true,
                ..space().kinds
            },
            ..space()
        }
        .strategy();
        let mut generator = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
        );
        for case in 0..60 {
            let rng = generator.rng().clone();
            let mut first = strategy.new_tree(&mut generator).unwrap();
            let mut again = TestRunner::new_with_rng(Config::default(), rng);
            let mut second = strategy.new_tree(&mut again).unwrap();
            for step in 0..40 {
                assert_eq!(
                    first.current(),
                    second.current(),
                    "case {case}, step {step}"
                );
                // A made-up outcome: "fails" while more than one fault is left.
                let (a, b) = if first.current().faults.len() > 1 || step % 3 == 0 {
                    (first.simplify(), second.simplify())
                } else {
                    (first.complicate(), second.complicate())
                };
                assert_eq!(a, b);
                if !a {
                    break;
                }
            }
        }
    }

    proptest! {
        #[test]
        fn generated_schedules_are_valid_and_name_only_discovered_points(s in space().strategy()) {
            let known = known();
            prop_assert!(s.validate(Some(&known)).is_ok());
            // 1..=3 groups of one fault or two related ones.
            prop_assert!((1..=6).contains(&s.faults.len()));
            for (i, f) in s.faults.iter().enumerate() {
                match f {
                    Fault::Crash { point, hit }
                    | Fault::RebalanceAt { point, hit }
                    | Fault::BrokerAt { point, hit, .. }
                    | Fault::NetworkAt { point, hit, .. } => {
                        let max = space().points.iter().find(|(p, _)| p == point).map(|(_, m)| *m).unwrap();
                        prop_assert!(*hit >= 1 && *hit <= max);
                    }
                    // A relative crash directly follows the fault it is counted from.
                    Fault::CrashAfter { after, hit, .. } | Fault::RebalanceAfter { after, hit, .. } => {
                        prop_assert!(*hit >= 1 && *hit <= 4);
                        let anchor = i.checked_sub(1).map(|j| &s.faults[j]);
                        let ok = matches!(
                            (after.as_str(), anchor),
                            (ANCHOR_REVOKE, Some(Fault::RebalanceAt { .. }))
                                | (ANCHOR_SINK_OUTAGE, Some(Fault::SinkFailure { .. }))
                        );
                        prop_assert!(ok, "{:?}", s.faults);
                    }
                    Fault::SinkFailure { writes, millis, .. } => {
                        prop_assert!((1..=4).contains(writes));
                        prop_assert!(millis.is_none_or(|m| (20..=1500).contains(&m)));
                    }
                    // `validate` above: a leader's partition exists in the drawn workload.
                    Fault::Broker { after_effects, .. } | Fault::Network { after_effects, .. } => {
                        prop_assert!(*after_effects >= 1 && *after_effects <= s.workload.messages);
                    }
                    _ => {}
                }
            }
        }
    }

    /// A consumer whose effects the harness cannot count (its own database client, no output
    /// topic) gets no fault triggered by an effect count — with every kind that has one on —,
    /// and still gets faults at its crash points; one with no crash points either gets none
    /// of those kinds at all.
    #[test]
    fn no_fault_waits_for_effects_a_consumer_does_not_show() {
        let blind = ScheduleSpace {
            kinds: FaultKinds {
                kills: true,
                rebalances: true,
                broker_faults: true,
                network_faults: true,
                ..FaultKinds::NONE
            },
            effects: false,
            ..space()
        };
        let counts_effects = |f: &Fault| {
            matches!(
                f,
                Fault::KillAfterEffects { .. }
                    | Fault::Rebalance { .. }
                    | Fault::Broker { .. }
                    | Fault::Network { .. }
            )
        };
        let mut runner = TestRunner::deterministic();
        let strategy = blind.strategy();
        let (mut at_points, mut cluster) = (0, 0);
        for _ in 0..300 {
            let s = strategy.new_tree(&mut runner).unwrap().current();
            assert!(!s.faults.iter().any(counts_effects), "{:?}", s.faults);
            at_points += s.faults.len();
            cluster += s
                .faults
                .iter()
                .filter(|f| matches!(f, Fault::BrokerAt { .. } | Fault::NetworkAt { .. }))
                .count();
        }
        assert!(at_points > 300 && cluster > 0);
        // The same space with effects counted draws them.
        let strategy = ScheduleSpace {
            effects: true,
            ..blind.clone()
        }
        .strategy();
        let drawn = (0..100)
            .flat_map(|_| strategy.new_tree(&mut runner).unwrap().current().faults)
            .filter(counts_effects)
            .count();
        assert!(drawn > 0);
        // No crash points and no effects: nothing those kinds could trigger.
        let nothing = ScheduleSpace {
            points: Vec::new(),
            ..blind
        };
        assert!(nothing.fault_strategy(20).is_none());
    }

    /// Discovered points plus the anchors relative crashes count from.
    fn known() -> Vec<String> {
        let mut k: Vec<String> = space().points.into_iter().map(|(p, _)| p).collect();
        k.extend([ANCHOR_REVOKE.to_string(), ANCHOR_SINK_OUTAGE.to_string()]);
        k
    }

    /// Half the workloads come at the maximum, where a fault has the most in flight; the rest
    /// spread over the range (a uniform draw gave one partition in half the cases).
    #[test]
    fn workloads_lean_to_the_maximum_and_still_cover_the_range() {
        let mut runner = TestRunner::deterministic();
        let strategy = space().strategy();
        let draws: Vec<Workload> = (0..400)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current().workload)
            .collect();
        let share = |f: &dyn Fn(&Workload) -> bool| {
            draws.iter().filter(|w| f(w)).count() as f64 / draws.len() as f64
        };
        // Expected: 1/2 + 1/2 · 1/20 at 20 messages, 1/2 + 1/2 · 1/3 at 3 partitions.
        assert!((0.45..0.65).contains(&share(&|w| w.messages == 20)));
        assert!((0.58..0.78).contains(&share(&|w| w.partitions == 3)));
        assert!(share(&|w| w.messages <= 10) > 0.15);
        assert!(share(&|w| w.partitions == 1) > 0.08);
    }

    /// From wherever a count was drawn — its maximum included — shrinking finds the smallest
    /// that still fails, as from a uniform draw.
    #[test]
    fn a_count_drawn_at_its_maximum_shrinks_to_the_smallest_that_fails() {
        let mut runner = TestRunner::deterministic();
        let mut from_max = 0;
        for _ in 0..40 {
            let mut tree = TopHeavy(20).new_tree(&mut runner).unwrap();
            if tree.current() == 20 {
                from_max += 1;
            }
            if tree.current() < 7 {
                continue;
            }
            // "Fails" with 7 or more messages.
            loop {
                let moved = if tree.current() >= 7 {
                    tree.simplify()
                } else {
                    tree.complicate()
                };
                if !moved {
                    break;
                }
            }
            assert_eq!(tree.current(), 7);
        }
        assert!(from_max >= 10, "{from_max} of 40 drawn at the maximum");
    }

    #[test]
    fn shrinking_keeps_every_schedule_valid_and_reaches_one_fault() {
        let known = known();
        let mut runner = TestRunner::deterministic();
        for _ in 0..20 {
            let mut tree = space().strategy().new_tree(&mut runner).unwrap();
            // Always "fails": shrinking must walk to the smallest schedule, valid at every step.
            while tree.simplify() {
                assert!(tree.current().validate(Some(&known)).is_ok());
            }
            let min = tree.current();
            // One fault, its trigger and duration at their smallest.
            assert_eq!(min.faults.len(), 1, "{min:?}");
            match &min.faults[0] {
                Fault::Crash { hit, .. } | Fault::RebalanceAt { hit, .. } => assert_eq!(*hit, 1),
                Fault::SinkFailure {
                    write,
                    writes,
                    millis,
                    ..
                } => {
                    assert_eq!((*write, *writes), (1, 1));
                    assert!(millis.is_none_or(|m| m == 20), "{min:?}");
                }
                Fault::KillAfterEffects { effects } => assert_eq!(*effects, 1),
                Fault::Broker {
                    target,
                    action,
                    after_effects,
                } => {
                    assert_eq!(*target, BrokerTarget::Coordinator);
                    assert_eq!(*action, BrokerAction::Restart);
                    assert_eq!(*after_effects, 1);
                }
                Fault::Network {
                    target,
                    action,
                    after_effects,
                } => {
                    assert_eq!(*target, LinkTarget::Coordinator);
                    assert!(matches!(action, LinkAction::Cut { .. }), "{min:?}");
                    assert_eq!(*after_effects, 1);
                }
                // A cluster fault shrinks toward its point trigger: the first point, hit 1.
                Fault::BrokerAt {
                    target,
                    action,
                    point,
                    hit,
                } => {
                    assert_eq!(*target, BrokerTarget::Coordinator);
                    assert_eq!(*action, BrokerAction::Restart);
                    assert_eq!((point.as_str(), *hit), ("after-poll", 1));
                }
                Fault::NetworkAt {
                    target,
                    action,
                    point,
                    hit,
                } => {
                    assert_eq!(*target, LinkTarget::Coordinator);
                    assert!(matches!(action, LinkAction::Cut { .. }), "{min:?}");
                    assert_eq!((point.as_str(), *hit), ("after-poll", 1));
                }
                other => panic!("unexpected minimal fault {other:?}"),
            }
            assert_eq!(
                min.workload,
                Workload {
                    messages: 1,
                    partitions: 1,
                    keys: 1
                }
            );
        }
    }
}

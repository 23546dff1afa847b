//! proptest strategies that generate schedules and shrink them toward the smallest failure:
//! fewer faults (the vector shrinks by removal), earlier hits and smaller counts (integers
//! shrink toward their lower bound), fewer messages, partitions and keys, and crash points
//! toward the first discovered one. Every generated schedule passes [`Schedule::validate`].

use proptest::prelude::*;
use proptest::sample::select;

use super::{Fault, Schedule, Workload, SCHEDULE_VERSION};
use crate::trace::SinkFailure;

/// Which kinds of fault a strategy may generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultKinds {
    /// Self-inflicted SIGKILL at crash points.
    pub crashes: bool,
    /// Orchestrator SIGKILL after N effects.
    pub kills: bool,
    /// Orchestrator SIGKILL at a random instant (non-deterministic; off by default).
    pub random_kills: bool,
    /// Failing sink writes.
    pub sink_failures: bool,
    /// A second group member joining.
    pub rebalances: bool,
    /// Broker kill + restart (needs a backend with broker faults).
    pub broker_restarts: bool,
}

impl Default for FaultKinds {
    fn default() -> Self {
        FaultKinds {
            crashes: true,
            kills: true,
            random_kills: false,
            sink_failures: false,
            rebalances: false,
            broker_restarts: false,
        }
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
        let workload = (
            1..=max.messages.max(1),
            1..=max.partitions.max(1),
            1..=max.keys.max(1),
        )
            .prop_map(|(messages, partitions, keys)| Workload {
                messages,
                partitions,
                keys,
            });
        let Some(fault) = self.fault_strategy(max.messages.max(1)) else {
            return workload.prop_map(Schedule::new).boxed();
        };
        let space = self.clone();
        (
            workload,
            proptest::collection::vec(fault, self.faults.clone()),
        )
            .prop_map(move |(workload, faults)| {
                let faults = faults
                    .into_iter()
                    .map(|f| space.clamp(f, workload.messages))
                    .collect();
                Schedule {
                    version: SCHEDULE_VERSION,
                    workload,
                    faults,
                }
            })
            .boxed()
    }

    /// `fault` with its trigger brought within reach of a workload of `messages`.
    fn clamp(&self, fault: Fault, messages: u32) -> Fault {
        let m = messages.max(1);
        match fault {
            Fault::Crash { point, hit } => {
                let max_hit = self
                    .points
                    .iter()
                    .find(|(p, _)| *p == point)
                    .map(|(_, h)| *h)
                    .unwrap_or(hit);
                let hit = hit.min(self.scaled_hits(max_hit, m));
                Fault::Crash { point, hit }
            }
            Fault::KillAfterEffects { effects } => Fault::KillAfterEffects {
                effects: effects.min(m),
            },
            Fault::SinkFailure { write, failure } => Fault::SinkFailure {
                write: write.min(m),
                failure,
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
            other => other,
        }
    }

    /// Hits of a point that a workload of `messages` can reach.
    fn scaled_hits(&self, max_hit: u32, messages: u32) -> u32 {
        let max_messages = self.max.messages.max(1) as u64;
        let scaled = (max_hit as u64 * messages as u64).div_ceil(max_messages);
        scaled.clamp(1, max_hit.max(1) as u64) as u32
    }

    fn fault_strategy(&self, max_effects: u32) -> Option<BoxedStrategy<Fault>> {
        let k = self.kinds;
        let mut options: Vec<BoxedStrategy<Fault>> = Vec::new();
        if k.crashes && !self.points.is_empty() {
            let points: Vec<(String, u32)> = self
                .points
                .iter()
                .map(|(p, h)| (p.clone(), self.scaled_hits(*h, max_effects)))
                .collect();
            options.push(
                select(points)
                    .prop_flat_map(|(point, max_hit)| (Just(point), 1..=max_hit.max(1)))
                    .prop_map(|(point, hit)| Fault::Crash { point, hit })
                    .boxed(),
            );
        }
        if k.kills {
            options.push(
                (1..=max_effects)
                    .prop_map(|effects| Fault::KillAfterEffects { effects })
                    .boxed(),
            );
        }
        if k.random_kills {
            options.push(
                (50u64..=3000)
                    .prop_map(|millis| Fault::KillAfterMillis { millis })
                    .boxed(),
            );
        }
        if k.sink_failures {
            let failure = prop_oneof![
                Just(SinkFailure::Transient),
                Just(SinkFailure::Permanent),
                (100u64..=2000).prop_map(|millis| SinkFailure::Hang { millis }),
            ];
            options.push(
                (1..=max_effects, failure)
                    .prop_map(|(write, failure)| Fault::SinkFailure { write, failure })
                    .boxed(),
            );
        }
        if k.rebalances {
            options.push(
                (1..=max_effects)
                    .prop_map(|after_effects| Fault::Rebalance { after_effects })
                    .boxed(),
            );
        }
        if k.broker_restarts && self.brokers > 0 {
            options.push(
                (0..self.brokers, 1..=max_effects)
                    .prop_map(|(broker, after_effects)| Fault::BrokerRestart {
                        broker,
                        after_effects,
                    })
                    .boxed(),
            );
        }
        if options.is_empty() {
            return None;
        }
        Some(proptest::strategy::Union::new(options).boxed())
    }
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
                ..FaultKinds::default()
            },
            brokers: 1,
        }
    }

    proptest! {
        #[test]
        fn generated_schedules_are_valid_and_name_only_discovered_points(s in space().strategy()) {
            let known: Vec<String> = space().points.into_iter().map(|(p, _)| p).collect();
            prop_assert!(s.validate(Some(&known)).is_ok());
            prop_assert!((1..=3).contains(&s.faults.len()));
            for f in &s.faults {
                if let Fault::Crash { point, hit } = f {
                    let max = space().points.iter().find(|(p, _)| p == point).map(|(_, m)| *m).unwrap();
                    prop_assert!(*hit >= 1 && *hit <= max);
                }
            }
        }
    }

    #[test]
    fn shrinking_keeps_every_schedule_valid_and_reaches_one_fault() {
        let known: Vec<String> = space().points.into_iter().map(|(p, _)| p).collect();
        let mut runner = TestRunner::deterministic();
        for _ in 0..20 {
            let mut tree = space().strategy().new_tree(&mut runner).unwrap();
            // Always "fails": shrinking must walk to the smallest schedule, valid at every step.
            while tree.simplify() {
                assert!(tree.current().validate(Some(&known)).is_ok());
            }
            let min = tree.current();
            assert_eq!(min.faults.len(), 1, "{min:?}");
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

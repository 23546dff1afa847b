//! Shrinking several proptest steps at once.
//!
//! proptest shrinks one candidate at a time: `simplify` while the candidate still fails,
//! `complicate` once it passes, so every step waits for the case before it — seconds each on a
//! broker, and the steps of a shrink are most of the time to a minimal schedule. A value tree
//! cannot be copied, but it can be made again: the same strategy drawn from a copy of the
//! generator taken just before the case was drawn gives the same tree, and the same moves on
//! it give the same candidates. So the candidates of the next `d` steps, for every outcome of
//! the steps before them (2^d − 1 of them), are known before any of them runs: they run side
//! by side, and the real outcomes pick the one path through them that proptest's own loop
//! would have taken. Same steps, same minimal schedule; fewer rounds of waiting.

use proptest::strategy::{BoxedStrategy, Strategy, ValueTree};
use proptest::test_runner::{Config, TestRng, TestRunner};

/// A shrink step proptest takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Move {
    Simplify,
    Complicate,
}

impl Move {
    /// proptest's choice: simplify after a candidate that still failed (and at the start),
    /// complicate after one that passed.
    fn after(failed: bool) -> Move {
        if failed {
            Move::Simplify
        } else {
            Move::Complicate
        }
    }
}

/// A generated case's value tree, made again on demand.
#[derive(Clone)]
pub(super) struct TreeSource<T: std::fmt::Debug> {
    strategy: BoxedStrategy<T>,
    rng: TestRng,
    config: Config,
}

impl<T: std::fmt::Debug + Clone> TreeSource<T> {
    /// `rng`: a copy of the generator taken just before the case was drawn from `strategy`.
    pub(super) fn new(strategy: BoxedStrategy<T>, rng: TestRng, config: Config) -> Self {
        TreeSource {
            strategy,
            rng,
            config,
        }
    }

    /// The value after `moves` from the case as drawn; `None` when a move had nothing left to
    /// change (proptest's loop ends there) or the tree cannot be drawn again.
    pub(super) fn after(&self, moves: &[Move]) -> Option<T> {
        let mut runner = TestRunner::new_with_rng(self.config.clone(), self.rng.clone());
        let mut tree = self.strategy.new_tree(&mut runner).ok()?;
        for m in moves {
            let moved = match m {
                Move::Simplify => tree.simplify(),
                Move::Complicate => tree.complicate(),
            };
            if !moved {
                return None;
            }
        }
        Some(tree.current())
    }
}

/// One candidate of a speculation.
#[derive(Debug)]
pub(super) struct Node<T> {
    /// The outcomes assumed on the way to it (`true`: that candidate failed).
    path: Vec<bool>,
    /// Its move (the last on its way).
    step: Move,
    /// `None`: the move had nothing left to change; the shrink ends at this node.
    pub(super) candidate: Option<T>,
}

/// How many steps to speculate: as many as fit `parallel` runs at `tries` runs per candidate
/// (2^d − 1 candidates), at most 4; one when the cases must run alone anyway.
pub(super) fn depth(parallel: u32, tries: u32, alone: bool) -> u32 {
    if alone {
        return 1;
    }
    let mut d = 1;
    while d < 4 && ((1u32 << (d + 1)) - 1) * tries.max(1) <= parallel {
        d += 1;
    }
    d
}

/// The nodes of the next `depth` steps after `history` (whose last outcome was `last_failed`;
/// `true` at the start), root first.
pub(super) fn plan<T: std::fmt::Debug + Clone>(
    source: &TreeSource<T>,
    history: &[Move],
    last_failed: bool,
    depth: u32,
) -> Vec<Node<T>> {
    let mut nodes = Vec::new();
    let mut frontier = vec![(Vec::new(), last_failed)];
    for _ in 0..depth {
        let mut next = Vec::new();
        for (path, failed) in frontier {
            let step = Move::after(failed);
            // The moves of `path`'s ancestors: each follows the outcome assumed before it.
            let mut moves = history.to_vec();
            moves.extend(
                std::iter::once(last_failed)
                    .chain(path.iter().copied())
                    .map(Move::after),
            );
            let candidate = source.after(&moves);
            if candidate.is_some() {
                for outcome in [true, false] {
                    let mut p: Vec<bool> = path.clone();
                    p.push(outcome);
                    next.push((p, outcome));
                }
            }
            nodes.push(Node {
                path,
                step,
                candidate,
            });
        }
        frontier = next;
    }
    nodes
}

/// Where a walk through one speculation got to.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Walk {
    /// The moves taken (to append to the history).
    pub(super) moves: Vec<Move>,
    /// The outcome of the last candidate answered (unchanged if none was).
    pub(super) last_failed: bool,
    /// A move had nothing left to change: proptest's loop is over.
    pub(super) ended: bool,
}

/// Follow the real outcomes from the root, at most `budget` steps: `answer` says whether a
/// candidate failed (`None`: it has no answer, e.g. it was not run because it was known when
/// planned and is not any more; the walk stops before it and the next plan starts there).
pub(super) fn walk<T>(
    nodes: &[Node<T>],
    last_failed: bool,
    budget: u32,
    mut answer: impl FnMut(&T) -> Option<bool>,
) -> Walk {
    let mut walk = Walk {
        moves: Vec::new(),
        last_failed,
        ended: false,
    };
    let mut path = Vec::new();
    while (walk.moves.len() as u32) < budget {
        let Some(node) = nodes.iter().find(|n| n.path == path) else {
            break;
        };
        let Some(candidate) = &node.candidate else {
            walk.ended = true;
            break;
        };
        let Some(failed) = answer(candidate) else {
            break;
        };
        walk.moves.push(node.step);
        walk.last_failed = failed;
        path.push(failed);
    }
    walk
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::test_runner::RngAlgorithm;

    type Value = (u32, Vec<u8>);
    type Predicate<'a> = &'a dyn Fn(&Value) -> bool;

    fn source(seed: u8) -> TreeSource<Value> {
        let strategy = (0u32..10_000, proptest::collection::vec(0u8..50, 0..6)).boxed();
        TreeSource::new(
            strategy,
            TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
            Config::default(),
        )
    }

    /// proptest's own loop on the tree itself: the failing values in order, the steps taken.
    fn sequential(src: &TreeSource<Value>, fails: Predicate) -> (Vec<Value>, u32) {
        let mut runner = TestRunner::new_with_rng(src.config.clone(), src.rng.clone());
        let mut tree = src.strategy.new_tree(&mut runner).unwrap();
        let mut kept = vec![];
        let mut simplify = true;
        let mut steps = 0;
        loop {
            let moved = if simplify {
                tree.simplify()
            } else {
                tree.complicate()
            };
            if !moved {
                break;
            }
            steps += 1;
            let c = tree.current();
            simplify = fails(&c);
            if simplify {
                kept.push(c);
            }
        }
        (kept, steps)
    }

    #[test]
    fn a_tree_made_again_is_the_same_tree() {
        for seed in 0..20 {
            let src = source(seed);
            let mut runner = TestRunner::new_with_rng(src.config.clone(), src.rng.clone());
            let mut tree = src.strategy.new_tree(&mut runner).unwrap();
            assert_eq!(src.after(&[]), Some(tree.current()));
            let moves = [
                Move::Simplify,
                Move::Simplify,
                Move::Complicate,
                Move::Simplify,
            ];
            for (i, m) in moves.iter().enumerate() {
                let moved = match m {
                    Move::Simplify => tree.simplify(),
                    Move::Complicate => tree.complicate(),
                };
                if !moved {
                    assert_eq!(src.after(&moves[..=i]), None, "seed {seed}");
                    break;
                }
                assert_eq!(src.after(&moves[..=i]), Some(tree.current()), "seed {seed}");
            }
        }
    }

    /// Every depth, every seed, three failure predicates: the walk through speculations keeps
    /// exactly the values proptest's sequential loop keeps, in as many steps, in fewer rounds.
    #[test]
    fn speculation_takes_proptests_own_path() {
        let predicates: [Predicate; 3] = [
            &|v| v.0 >= 137,
            &|v| v.1.iter().filter(|b| **b > 20).count() >= 2,
            &|v| v.0 % 7 == 3 || v.1.len() >= 3,
        ];
        for seed in 0..30 {
            let src = source(seed);
            for (p, fails) in predicates.iter().enumerate() {
                let initial = src.after(&[]).unwrap();
                if !fails(&initial) {
                    continue;
                }
                let (expected, steps) = sequential(&src, fails);
                for d in 1..=4 {
                    let mut history = vec![];
                    let mut last_failed = true;
                    let mut kept = vec![];
                    let mut rounds = 0;
                    loop {
                        rounds += 1;
                        let nodes = plan(&src, &history, last_failed, d);
                        let w = walk(&nodes, last_failed, u32::MAX, |c| {
                            let f = fails(c);
                            if f {
                                kept.push(c.clone());
                            }
                            Some(f)
                        });
                        history.extend(&w.moves);
                        last_failed = w.last_failed;
                        if w.ended {
                            break;
                        }
                    }
                    assert_eq!(kept, expected, "seed {seed}, predicate {p}, depth {d}");
                    assert_eq!(history.len() as u32, steps);
                    let bound = steps.div_ceil(d) + 1;
                    assert!(rounds <= bound, "{rounds} rounds > {bound} at depth {d}");
                }
            }
        }
    }

    #[test]
    fn a_walk_stops_at_its_budget_and_before_an_unanswered_candidate() {
        let src = source(3);
        let nodes = plan(&src, &[], true, 3);
        let w = walk(&nodes, true, 2, |_| Some(true));
        assert_eq!(w.moves, vec![Move::Simplify, Move::Simplify]);
        let mut n = 0;
        let w = walk(&nodes, true, 10, |_| {
            n += 1;
            (n == 1).then_some(false)
        });
        assert_eq!(w.moves, vec![Move::Simplify]);
        assert!(!w.last_failed && !w.ended);
    }

    /// The harness's shrink loop before speculation: proptest's loop with a memo (the value in
    /// hand is kept again and a value that held is dropped again without running; each still
    /// counts toward the budget). The values kept, the steps, the values run.
    fn sequential_with_memo(
        src: &TreeSource<Value>,
        fails: Predicate,
        budget: u32,
    ) -> (Vec<Value>, u32, Vec<Value>) {
        let mut runner = TestRunner::new_with_rng(src.config.clone(), src.rng.clone());
        let mut tree = src.strategy.new_tree(&mut runner).unwrap();
        let mut current = tree.current();
        let (mut kept, mut held, mut ran) = (vec![], vec![], vec![]);
        let mut simplify = true;
        let mut steps = 0;
        while steps < budget {
            let moved = if simplify {
                tree.simplify()
            } else {
                tree.complicate()
            };
            if !moved {
                break;
            }
            steps += 1;
            let c = tree.current();
            simplify = if c == current {
                true
            } else if held.contains(&c) {
                false
            } else {
                ran.push(c.clone());
                fails(&c)
            };
            if simplify && c != current {
                current = c.clone();
                kept.push(c);
            } else if !simplify && !held.contains(&c) {
                held.push(c);
            }
        }
        (kept, steps, ran)
    }

    /// The same with speculation, as search.rs drives it: per round, the candidates neither
    /// in hand, nor held, nor answered in an earlier round are run; the walk answers from the
    /// memo first and stops before a candidate it has no answer for.
    #[test]
    fn speculation_with_the_memo_keeps_what_the_sequential_loop_keeps() {
        let predicates: [Predicate; 3] = [
            &|v| v.0 >= 137,
            &|v| v.1.iter().filter(|b| **b > 20).count() >= 2,
            &|v| v.0 % 7 == 3 || v.1.len() >= 3,
        ];
        for seed in 0..30 {
            let src = source(seed);
            let initial = src.after(&[]).unwrap();
            for (p, fails) in predicates.iter().enumerate() {
                if !fails(&initial) {
                    continue;
                }
                for budget in [1, 5, 32] {
                    let (expected, steps, ran) = sequential_with_memo(&src, *fails, budget);
                    for d in 1..=4 {
                        let mut current = initial.clone();
                        let (mut kept, mut held) = (vec![], vec![]);
                        let mut answers: std::collections::HashMap<Value, bool> =
                            Default::default();
                        let mut run = vec![];
                        let (mut history, mut last_failed, mut iters) = (vec![], true, 0);
                        while iters < budget {
                            let nodes = plan(&src, &history, last_failed, d.min(budget - iters));
                            for c in nodes.iter().filter_map(|n| n.candidate.as_ref()) {
                                if *c != current && !held.contains(c) && !answers.contains_key(c) {
                                    run.push(c.clone());
                                    answers.insert(c.clone(), fails(c));
                                }
                            }
                            let w = walk(&nodes, last_failed, budget - iters, |c| {
                                let failed = if *c == current {
                                    true
                                } else if held.contains(c) {
                                    false
                                } else {
                                    answers.remove(c)?
                                };
                                iters += 1;
                                if failed && *c != current {
                                    current = c.clone();
                                    kept.push(c.clone());
                                } else if !failed && !held.contains(c) {
                                    held.push(c.clone());
                                }
                                Some(failed)
                            });
                            history.extend(&w.moves);
                            last_failed = w.last_failed;
                            if w.ended {
                                break;
                            }
                        }
                        let at = format!("seed {seed}, predicate {p}, budget {budget}, depth {d}");
                        assert_eq!(kept, expected, "{at}");
                        assert_eq!(iters, steps, "{at}");
                        // Every value the sequential loop ran was run here too (speculation
                        // runs more, never fewer).
                        assert!(ran.iter().all(|v| run.contains(v)), "{at}");
                        if d == 1 {
                            assert_eq!(run.len(), ran.len(), "{at}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn depth_fits_the_parallel_runs() {
        assert_eq!(depth(8, 1, false), 3);
        assert_eq!(depth(8, 2, false), 2);
        assert_eq!(depth(8, 3, false), 1);
        assert_eq!(depth(16, 1, false), 4);
        assert_eq!(depth(1, 1, false), 1);
        assert_eq!(depth(16, 1, true), 1);
    }
}

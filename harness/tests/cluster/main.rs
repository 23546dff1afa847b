//! Backend conformance: the same test bodies against every backend this machine can run
//! (containers when a Docker engine answers, local when the Kafka jars are present, embedded
//! always). A backend the machine cannot run is reported, not silently passed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kafka_harness::{BackendKind, Cluster, ClusterConfig};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// One cluster at a time on this 2-core machine.
static ONE_CLUSTER: Mutex<()> = Mutex::new(());

fn available() -> Vec<BackendKind> {
    let mut out = vec![];
    match kafka_harness::cluster::docker_available() {
        Ok(_) => out.push(BackendKind::Containers),
        Err(e) => eprintln!("backend containers not available here: {e}"),
    }
    let libs = ClusterConfig::from_env()
        .map(|c| c.kafka_libs)
        .unwrap_or_default();
    match kafka_harness::cluster::local_available(&libs) {
        Ok(()) => out.push(BackendKind::Local),
        Err(e) => eprintln!("backend local not available here: {e}"),
    }
    out.push(BackendKind::Embedded);
    out
}

/// Backends with a real broker; a machine with none fails the test (run ci/setup).
fn real_backends() -> Result<Vec<BackendKind>> {
    let real: Vec<_> = available()
        .into_iter()
        .filter(|k| *k != BackendKind::Embedded)
        .collect();
    if real.is_empty() {
        bail!("no real-broker backend on this machine: run ci/setup");
    }
    Ok(real)
}

fn start(kind: BackendKind, brokers: usize) -> Result<(Cluster, Duration)> {
    let t = Instant::now();
    let c = Cluster::start(ClusterConfig::from_env()?.backend(kind).brokers(brokers))?;
    Ok((c, t.elapsed()))
}

fn produce(c: &Cluster, topic: &str, range: std::ops::Range<u32>) -> Result<Vec<u32>> {
    let p: BaseProducer = c
        .client_config()
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()?;
    for i in range.clone() {
        let v = i.to_string();
        loop {
            match p.send(BaseRecord::<str, str>::to(topic).key("k").payload(&v)) {
                Ok(()) => break,
                Err((_, _)) => {
                    p.poll(Duration::from_millis(50));
                }
            }
        }
    }
    p.flush(Duration::from_secs(60))?;
    Ok(range.collect())
}

fn consumer(c: &Cluster, group: &str, extra: &[(&str, &str)]) -> Result<BaseConsumer> {
    let mut cfg = c.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    Ok(cfg.create()?)
}

/// Poll until `n` messages arrived or `timeout`.
fn read(consumer: &BaseConsumer, n: usize, timeout: Duration) -> Result<Vec<u32>> {
    let t = Instant::now();
    let mut got = vec![];
    while got.len() < n && t.elapsed() < timeout {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(std::str::from_utf8(m.payload().unwrap_or_default())?.parse()?),
            // A killed broker shows up as transport errors; the client carries on (not fatal).
            Some(Err(e)) => eprintln!("consumer: {e} (continuing)"),
            None => {}
        }
    }
    Ok(got)
}

fn round_trip(c: &Cluster) -> Result<()> {
    let topic = c.topic_name("round-trip");
    let group = c.topic_name("round-trip.group");
    c.create_topic(&topic, 1)?;
    produce(c, &topic, 0..10)?;
    let first = consumer(c, &group, &[])?;
    first.subscribe(&[&topic])?;
    let got = read(&first, 4, Duration::from_secs(30))?;
    assert_eq!(got, vec![0, 1, 2, 3], "first consumer reads from the start");
    first.commit_consumer_state(CommitMode::Sync)?;
    drop(first);
    let second = consumer(c, &group, &[])?;
    second.subscribe(&[&topic])?;
    let got = read(&second, 6, Duration::from_secs(30))?;
    assert_eq!(
        got,
        (4..10).collect::<Vec<_>>(),
        "a new consumer in the group resumes after the commit"
    );
    drop(second);
    c.delete_topics(&[&topic])?;
    c.delete_groups(&[&group])?;
    Ok(())
}

#[test]
fn produce_consume_commit_and_a_new_group_member_resumes_after_the_commit_on_every_backend(
) -> Result<()> {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    for kind in available() {
        let (c, ready) = start(kind, 1)?;
        eprintln!("MEASURE {kind} 1-broker ready in {} ms", ready.as_millis());
        round_trip(&c).with_context(|| format!("round trip on {kind}"))?;
        c.shutdown()?;
    }
    Ok(())
}

#[test]
fn three_brokers_survive_a_hard_kill_without_losing_acknowledged_writes_and_keep_addresses(
) -> Result<()> {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    for kind in real_backends()? {
        let (c, ready) = start(kind, 3)?;
        eprintln!("MEASURE {kind} 3-broker ready in {} ms", ready.as_millis());
        let bootstrap = c.bootstrap_servers();
        let topic = c.topic_name("survive");
        c.create_topic_with(&topic, 3, &[("min.insync.replicas", "2")])?;
        let mut acked = produce(&c, &topic, 0..50)?;
        coordinators_agree_with_kafkas_own_tool(&c, &topic)
            .with_context(|| format!("coordinators on {kind}"))?;
        c.kill_broker(1)?;
        // acks=all with min ISR 2 of 3: writes keep being acknowledged with one broker down.
        acked.extend(produce(&c, &topic, 50..100)?);
        let group = c.topic_name("survive.group");
        let during = consumer(&c, &group, &[])?;
        during.subscribe(&[&topic])?;
        let seen_during = read(&during, 100, Duration::from_secs(60))?;
        drop(during);
        let t = Instant::now();
        c.restart_broker(1)?;
        eprintln!(
            "MEASURE {kind} broker restart-to-ready in {} ms",
            t.elapsed().as_millis()
        );
        assert_eq!(
            c.bootstrap_servers(),
            bootstrap,
            "addresses unchanged after restart"
        );
        acked.extend(produce(&c, &topic, 100..120)?);
        let after = consumer(&c, &c.topic_name("survive.after"), &[])?;
        after.subscribe(&[&topic])?;
        let mut all = read(&after, acked.len(), Duration::from_secs(60))?;
        all.sort();
        assert_eq!(
            all, acked,
            "{kind}: every acknowledged write is readable after kill + restart"
        );
        assert_eq!(
            seen_during.len(),
            100,
            "{kind}: consuming continued while a broker was down"
        );
        c.shutdown()?;
    }
    Ok(())
}

/// The broker `Cluster::coordinator_of` computes for a group (the leader of the offsets
/// partition its id hashes to) is the one Kafka's own `kafka-consumer-groups --describe
/// --state` names, for groups spread over the brokers.
fn coordinators_agree_with_kafkas_own_tool(c: &Cluster, topic: &str) -> Result<()> {
    let groups: Vec<String> = (0..8)
        .map(|i| c.topic_name(&format!("coord.{i}")))
        .collect();
    for g in &groups {
        // A simple commit (no join) creates the group, Empty, with an offset.
        let consumer = consumer(c, g, &[])?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, rdkafka::Offset::Offset(1))?;
        consumer.commit(&tpl, CommitMode::Sync)?;
    }
    let libs = ClusterConfig::from_env()?.kafka_libs;
    if let Err(e) = kafka_harness::cluster::local_available(&libs) {
        // The tool runs from the Kafka jars ci/setup downloads; the harness's answers are
        // still exercised by the broker-fault tests.
        eprintln!("coordinators NOT compared with Kafka's tool on this machine: {e}");
        return Ok(());
    }
    let mut cmd = std::process::Command::new("java");
    cmd.arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .arg("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand")
        .args(["--bootstrap-server", &c.bootstrap_servers()])
        .args(["--describe", "--state"]);
    for g in &groups {
        cmd.args(["--group", g]);
    }
    let out = cmd
        .output()
        .context("running kafka-consumer-groups (java)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "kafka-consumer-groups failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for g in &groups {
        let line = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(g.as_str()))
            .with_context(|| format!("the tool did not describe {g}:\n{text}"))?;
        // `<group> <host:port> (<node id>) …`
        let id: usize = line
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(id, _)| id.trim().parse())
            .transpose()?
            .with_context(|| format!("no coordinator id in {line:?}"))?;
        let ours = c.coordinator_of(g)?;
        assert_eq!(
            ours + 1,
            id,
            "group {g}: harness says broker index {ours}, Kafka says node {id}"
        );
        seen.insert(id);
    }
    eprintln!("MEASURE coordinators of 8 groups agree with Kafka's tool; on nodes {seen:?}");
    assert!(
        seen.len() > 1,
        "8 groups all on node {seen:?}: the comparison did not tell brokers apart"
    );
    Ok(())
}

fn transactions(c: &Cluster) -> Result<()> {
    let topic = c.topic_name("txn");
    c.create_topic(&topic, 1)?;
    let p: BaseProducer = c
        .client_config()
        .set("transactional.id", c.topic_name("txn.id"))
        .set("enable.idempotence", "true")
        .create()?;
    p.init_transactions(Duration::from_secs(30))?;
    p.begin_transaction()?;
    for v in ["c1", "c2"] {
        p.send(BaseRecord::<str, str>::to(&topic).payload(v))
            .map_err(|(e, _)| e)?;
    }
    p.commit_transaction(Duration::from_secs(30))?;
    p.begin_transaction()?;
    p.send(BaseRecord::<str, str>::to(&topic).payload("aborted"))
        .map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(30))?;
    p.abort_transaction(Duration::from_secs(30))?;
    p.begin_transaction()?;
    p.send(BaseRecord::<str, str>::to(&topic).payload("c3"))
        .map_err(|(e, _)| e)?;
    p.commit_transaction(Duration::from_secs(30))?;
    let read_as = |isolation: &str| -> Result<Vec<String>> {
        let consumer = consumer(
            c,
            &c.topic_name(&format!("txn.{isolation}")),
            &[("isolation.level", isolation)],
        )?;
        consumer.subscribe(&[&topic])?;
        let t = Instant::now();
        let mut got = vec![];
        while t.elapsed() < Duration::from_secs(15) && got.len() < 4 {
            if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                got.push(String::from_utf8_lossy(m?.payload().unwrap_or_default()).into_owned());
            }
        }
        Ok(got)
    };
    assert_eq!(
        read_as("read_committed")?,
        vec!["c1", "c2", "c3"],
        "committed visible, aborted not"
    );
    assert_eq!(
        read_as("read_uncommitted")?,
        vec!["c1", "c2", "aborted", "c3"],
        "the aborted record was written"
    );
    Ok(())
}

#[test]
fn committed_transactions_are_visible_to_read_committed_and_aborted_ones_are_not() -> Result<()> {
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    for kind in real_backends()? {
        let (c, _) = start(kind, 1)?;
        transactions(&c).with_context(|| format!("transactions on {kind}"))?;
        c.shutdown()?;
    }
    Ok(())
}

#[test]
fn the_embedded_backend_starts_fast_and_says_it_cannot_judge_transactions() -> Result<()> {
    let (c, ready) = start(BackendKind::Embedded, 1)?;
    eprintln!("MEASURE embedded ready in {} ms", ready.as_millis());
    assert!(!c.backend().transactions_faithful());
    let err = kafka_harness::Harness::new(kafka_harness::Guarantee::ExactlyOnceTransactional)
        .cluster(std::sync::Arc::new(c))
        .check(|_ctx| Ok(()))
        .expect_err("must refuse");
    let text = err.to_string();
    assert!(
        text.contains("embedded") && text.contains("transactions"),
        "{text}"
    );
    Ok(())
}

#[test]
fn broker_faults_the_embedded_mock_cannot_inject_are_clear_errors() -> Result<()> {
    let (c, _) = start(BackendKind::Embedded, 1)?;
    let err = c.pause_broker(0).expect_err("the mock has no pause");
    assert!(err.to_string().contains("cannot pause"), "{err}");
    let err = c.kill_broker(5).expect_err("no such broker");
    assert!(err.to_string().contains("broker 5 does not exist"), "{err}");
    Ok(())
}

/// A member commits while the group rebalances because a second member joined: a real broker
/// accepts it (the generation is still current), the mock refuses it. This is the fact behind
/// `BackendKind::commits_during_rebalance_faithful`; if a librdkafka upgrade changes it, this
/// test says so.
fn commit_during_join(c: &Cluster) -> Result<std::result::Result<(), String>> {
    let topic = c.topic_name("join-commit");
    let group = c.topic_name("join-commit.group");
    c.create_topic(&topic, 1)?;
    produce(c, &topic, 0..4)?;
    let first = consumer(c, &group, &[])?;
    first.subscribe(&[&topic])?;
    let got = read(&first, 4, Duration::from_secs(30))?;
    assert_eq!(got.len(), 4, "the first member reads the topic");
    let second = consumer(c, &group, &[])?;
    second.subscribe(&[&topic])?;
    // The second member's JoinGroup is sent by librdkafka's own thread; wait until the group
    // rebalances (a real broker says so; the mock cannot describe groups, so give it time).
    let probe: BaseConsumer = c.client_config().create()?;
    let t = Instant::now();
    let mut rebalancing = false;
    let mut described = false;
    while t.elapsed() < Duration::from_secs(15) && !rebalancing {
        if let Ok(list) = probe.fetch_group_list(Some(&group), Duration::from_secs(5)) {
            described |= !list.groups().is_empty();
            rebalancing = list
                .groups()
                .first()
                .is_some_and(|g| g.state() == "PreparingRebalance");
        } else if t.elapsed() > Duration::from_millis(1500) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if c.backend() == BackendKind::Embedded {
        // The mock cannot describe groups: `rebalance-at` falls back to a timed release there.
        assert!(
            !described,
            "the mock described the group: drop the timed release"
        );
    } else {
        assert!(
            rebalancing,
            "the broker never reported the group rebalancing"
        );
    }
    // The first member has not polled since: its generation is the current one.
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(4))?;
    let result = first
        .commit(&tpl, CommitMode::Sync)
        .map_err(|e| e.to_string());
    drop(second);
    drop(first);
    c.delete_topics(&[&topic])?;
    Ok(result)
}

#[test]
fn a_commit_during_a_join_rebalance_lands_on_a_real_broker_and_is_refused_by_the_mock() -> Result<()>
{
    let _one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    for kind in available() {
        let (c, _) = start(kind, 1)?;
        let result = commit_during_join(&c)?;
        eprintln!("MEASURE {kind}: commit during a join rebalance: {result:?}");
        if kind.commits_during_rebalance_faithful() {
            assert_eq!(result, Ok(()), "{kind}: a real broker accepts the commit");
        } else {
            let err = result.expect_err("the mock refuses the commit");
            assert!(err.contains("RebalanceInProgress"), "{kind}: {err}");
        }
    }
    Ok(())
}

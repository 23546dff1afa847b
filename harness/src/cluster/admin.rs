//! Admin calls and readiness, shared by every backend.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use super::{BackendKind, ClusterError, ClusterResult};

const CALL_TIMEOUT: Duration = Duration::from_secs(15);

fn admin(config: &ClientConfig) -> ClusterResult<AdminClient<DefaultClientContext>> {
    config.create().map_err(|e| ClusterError::Admin {
        during: "creating an admin client".into(),
        reason: e.to_string(),
    })
}

/// Runs an admin future to completion. rdkafka's admin futures are driven by librdkafka's
/// own threads, so a current-thread runtime is enough.
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> ClusterResult<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| ClusterError::Process {
            during: "building an async runtime".into(),
            source: e,
        })?;
    Ok(rt.block_on(fut))
}

fn options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(CALL_TIMEOUT))
        .request_timeout(Some(CALL_TIMEOUT))
}

pub(crate) fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    rf: i32,
) -> ClusterResult<()> {
    create_topic_with(config, topic, partitions, rf, &[])
}

pub(crate) fn create_topic_with(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
    rf: i32,
    configs: &[(&str, &str)],
) -> ClusterResult<()> {
    let client = admin(config)?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    // A cluster that was just whole again after a broker fault (a restarted controller, a
    // thawed broker) can leave one request unanswered: seen once in 200 cases on 3 brokers
    // (`Local: Timed out` after 15 s). Creating is idempotent here (an existing topic is
    // the state wanted), so a timeout is tried again, for as long again.
    let started = Instant::now();
    loop {
        let results = block_on(client.create_topics([&new], &options()))?;
        let timed_out = match &results {
            Err(e) => matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut)
            ),
            Ok(per_topic) => per_topic.iter().any(|r| {
                matches!(
                    r,
                    Err((
                        _,
                        RDKafkaErrorCode::RequestTimedOut | RDKafkaErrorCode::NotController
                    ))
                )
            }),
        };
        if timed_out && started.elapsed() < 2 * CALL_TIMEOUT {
            eprintln!(
                "kafka-harness: creating topic {topic} timed out after {} ms; trying again",
                started.elapsed().as_millis()
            );
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        return expect_ok(
            results,
            RDKafkaErrorCode::TopicAlreadyExists,
            "creating topic",
        );
    }
}

pub(crate) fn delete_topics(config: &ClientConfig, topics: &[&str]) -> ClusterResult<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let results = block_on(admin(config)?.delete_topics(topics, &options()))?;
    expect_ok(
        results,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        "deleting topic",
    )
}

pub(crate) fn delete_groups(config: &ClientConfig, groups: &[&str]) -> ClusterResult<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let results = block_on(admin(config)?.delete_groups(groups, &options()))?;
    expect_ok(results, RDKafkaErrorCode::GroupIdNotFound, "deleting group")
}

/// Every per-name result succeeded, or failed only with `harmless` (already exists / already
/// gone: the state the call wanted).
fn expect_ok(
    results: rdkafka::error::KafkaResult<Vec<Result<String, (String, RDKafkaErrorCode)>>>,
    harmless: RDKafkaErrorCode,
    during: &str,
) -> ClusterResult<()> {
    let results = results.map_err(|e| ClusterError::Admin {
        during: during.into(),
        reason: e.to_string(),
    })?;
    for r in results {
        match r {
            Err((name, code)) if code != harmless => {
                return Err(ClusterError::Admin {
                    during: format!("{during} {name}"),
                    reason: code.to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Ready = metadata lists `brokers` brokers and, where allowed, a topic replicated on all of
/// them can be created (which needs a live controller that sees every broker unfenced), and a
/// group coordinator answers an offset fetch for it (a fresh cluster creates its offsets topic
/// on the first group request and answers `NotCoordinator` / `CoordinatorLoadInProgress`
/// until it is loaded: a harness run must not be the one to find that out).
pub(crate) fn wait_ready(
    config: &ClientConfig,
    kind: BackendKind,
    brokers: usize,
    probe_prefix: Option<&str>,
    timeout: Duration,
) -> ClusterResult<()> {
    let started = Instant::now();
    let bootstrap = config
        .get("bootstrap.servers")
        .unwrap_or_default()
        .to_string();
    let mut last = String::from("no answer yet");
    let probe = probe_prefix.map(|p| format!("{p}ready-{}-{}", std::process::id(), nonce()));
    while started.elapsed() < timeout {
        match metadata_brokers(config) {
            Ok(n) if n >= brokers => match &probe {
                None => return Ok(()),
                Some(topic) => match create_topic(config, topic, 1, brokers as i32)
                    .map_err(|e| e.to_string())
                    .and_then(|()| coordinator_answers(config, topic))
                {
                    Ok(()) => {
                        let _ = delete_topics(config, &[topic]);
                        return Ok(());
                    }
                    Err(e) => last = e,
                },
            },
            Ok(n) => last = format!("metadata lists {n} of {brokers} brokers"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(ClusterError::NotReady {
        backend: kind,
        bootstrap,
        waited_ms: started.elapsed().as_millis(),
        reason: last,
    })
}

/// An offset fetch for a probe group on `topic` succeeds (the group is never joined, so it
/// leaves nothing behind).
fn coordinator_answers(config: &ClientConfig, topic: &str) -> Result<(), String> {
    let mut c = config.clone();
    c.set("group.id", format!("{topic}.group"))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().map_err(|e| e.to_string())?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(2))
        .map_err(|e| format!("group coordinator: {e}"))?;
    for e in got.elements() {
        if let Err(err) = e.error() {
            return Err(format!("group coordinator: {err}"));
        }
    }
    Ok(())
}

fn metadata_brokers(config: &ClientConfig) -> Result<usize, String> {
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(None, Duration::from_secs(2))
        .map_err(|e| format!("metadata: {e}"))?;
    Ok(md.brokers().len())
}

/// `topic`'s partitions and their leaders' node ids (`-1`: none right now), from a fresh
/// metadata read.
fn partition_leaders(config: &ClientConfig, topic: &str) -> Result<Vec<(i32, i32)>, String> {
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), CALL_TIMEOUT)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| format!("metadata lists no topic {topic}"))?;
    if let Some(err) = t.error() {
        return Err(format!(
            "metadata of {topic}: {:?}",
            RDKafkaErrorCode::from(err)
        ));
    }
    Ok(t.partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect())
}

/// The leader's node id of `partition` among `leaders` (as [`partition_leaders`] reads them).
fn leader_among(leaders: &[(i32, i32)], topic: &str, partition: i32) -> Result<i32, String> {
    match leaders.iter().find(|(p, _)| *p == partition) {
        None => Err(format!("{topic} has no partition {partition}")),
        Some((_, leader)) if *leader >= 0 => Ok(*leader),
        Some(_) => Err(format!("{topic}-{partition} has no leader right now")),
    }
}

/// The node id of the leader of `topic`'s `partition`, from a fresh metadata read.
pub(crate) fn leader_of(config: &ClientConfig, topic: &str, partition: i32) -> Result<i32, String> {
    leader_among(&partition_leaders(config, topic)?, topic, partition)
}

/// The internal topic that holds committed offsets; the leader of the partition a group id
/// hashes to is the group's coordinator.
pub(crate) const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The `__consumer_offsets` partition that holds `group`, as the broker computes it
/// (`Utils.abs(groupId.hashCode()) % partitions`, `GroupCoordinatorService.partitionFor`).
pub(crate) fn offsets_partition_for(group: &str, partitions: i32) -> i32 {
    let h = java_string_hash(group);
    // Kafka's `Utils.abs`: `Integer.MIN_VALUE` (whose negation overflows) counts as 0.
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Java's `String.hashCode`: `s[0]·31^(n-1) + … + s[n-1]` over UTF-16 code units, wrapping.
pub(crate) fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The internal topic that holds transaction state; the leader of the partition a
/// `transactional.id` hashes to is that producer's transaction coordinator.
pub(crate) const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The node id of the coordinator of `key` on `internal_topic`: the leader of the partition
/// `key` hashes to. Kafka places a group on `__consumer_offsets` and a `transactional.id` on
/// `__transaction_state` with the same function ([`offsets_partition_for`]).
pub(crate) fn coordinator_of(
    config: &ClientConfig,
    internal_topic: &str,
    key: &str,
) -> Result<i32, String> {
    let leaders = partition_leaders(config, internal_topic).map_err(|e| {
        format!(
            "{e} (the topic exists once a group or a transactional producer has used this cluster)"
        )
    })?;
    if leaders.is_empty() {
        return Err(format!("metadata lists no partitions of {internal_topic}"));
    }
    let partition = offsets_partition_for(key, leaders.len() as i32);
    leader_among(&leaders, internal_topic, partition)
}

/// A short random-enough suffix (time-based; uniqueness per process is all that is needed).
pub(crate) fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", t & 0xffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_that_is_missing_or_has_no_leader_is_a_clear_error() {
        let leaders = [(0, 2), (1, -1)];
        assert_eq!(leader_among(&leaders, "t", 0), Ok(2));
        assert!(leader_among(&leaders, "t", 1)
            .unwrap_err()
            .contains("t-1 has no leader"));
        assert!(leader_among(&leaders, "t", 5)
            .unwrap_err()
            .contains("no partition 5"));
    }

    #[test]
    fn group_ids_hash_as_java_strings_do() {
        // Values from the JVM: "".hashCode(), "hello".hashCode(), and the string whose hash
        // is Integer.MIN_VALUE.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        assert_eq!(java_string_hash("Aa"), java_string_hash("BB"));
        // Non-ASCII: UTF-16 code units ("é" is 0xE9).
        assert_eq!(java_string_hash("é"), 0xE9);
        assert_eq!(offsets_partition_for("polygenelubricants", 50), 0);
        assert_eq!(offsets_partition_for("hello", 50), 99_162_322 % 50);
        for g in ["a", "group-1", "kh.orders.7.group", "ümlaut"] {
            assert!((0..5).contains(&offsets_partition_for(g, 5)));
        }
    }
}

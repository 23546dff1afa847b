//! Broker settings for fast, faithful tests, shared by the local and containers backends.

/// Server properties every harness-managed broker gets, for a cluster of `brokers`.
///
/// - `group.initial.rebalance.delay.ms=0`: no 3 s wait before the first assignment.
/// - `group.min.session.timeout.ms=500`: a crashed consumer's partitions move after its own
///   (short) `session.timeout.ms`, not after the broker's 6 s floor.
/// - internal topics replicated on every broker, with `min.insync.replicas` = 2 on 3 brokers,
///   so a killed broker is survivable but not hidden.
/// - `auto.create.topics.enable=false`: a typo in a topic name is an error, not a new topic.
/// - `transaction.abort.timed.out.transaction.cleanup.interval.ms=500`: a transaction past its
///   timeout is aborted (and its producer's epoch bumped) within half a second of it, not up
///   to 10 s later, so a paused transactional worker meets the expiry its config promises.
pub(crate) fn broker_properties(brokers: usize) -> Vec<(&'static str, String)> {
    let rf = brokers.to_string();
    let min_isr = if brokers >= 3 { "2" } else { "1" }.to_string();
    vec![
        ("group.initial.rebalance.delay.ms", "0".into()),
        ("group.min.session.timeout.ms", "500".into()),
        ("offsets.topic.replication.factor", rf.clone()),
        ("offsets.topic.num.partitions", "5".into()),
        ("transaction.state.log.replication.factor", rf.clone()),
        ("transaction.state.log.min.isr", min_isr.clone()),
        ("transaction.state.log.num.partitions", "5".into()),
        ("min.insync.replicas", min_isr),
        ("default.replication.factor", rf),
        ("auto.create.topics.enable", "false".into()),
        ("num.partitions", "1".into()),
        // Kafka 4 deletes a topic's files after this delay; keep the per-case churn cheap.
        ("log.segment.delete.delay.ms", "1000".into()),
        (
            "transaction.abort.timed.out.transaction.cleanup.interval.ms",
            "500".into(),
        ),
    ]
}

/// A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).
pub(crate) fn cluster_id() -> String {
    let mut bytes = [0u8; 16];
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ ((std::process::id() as u128) << 64);
    // splitmix64 over the seed: uniqueness, not secrecy, is what a cluster id needs.
    let mut x = seed as u64 ^ (seed >> 64) as u64;
    for chunk in bytes.chunks_mut(8) {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes());
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    // A leading '-' reads as an option to Kafka's argument parser (and to start scripts):
    // keep the first character a letter (it only changes the top 6 bits of the id).
    if out.starts_with(['-', '_']) {
        out.replace_range(0..1, "K");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_are_22_url_safe_chars() {
        for _ in 0..2000 {
            let id = cluster_id();
            assert!(
                !id.starts_with(['-', '_']),
                "{id} would read as a command-line option"
            );
        }
        let id = cluster_id();
        assert_eq!(id.len(), 22);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn three_brokers_get_replicated_internal_topics_and_min_isr_two() {
        let p = broker_properties(3);
        let get = |k| p.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("offsets.topic.replication.factor"), Some("3"));
        assert_eq!(get("transaction.state.log.min.isr"), Some("2"));
        assert_eq!(get("auto.create.topics.enable"), Some("false"));
    }
}

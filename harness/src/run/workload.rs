//! Producing a case's input `I`: one idempotent, `acks=all` producer shared by every case of a
//! run, each message's delivery report routed back to the case that sent it. Only messages
//! the broker acknowledged enter the trace as `Produced`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::Case;
use crate::cluster::Cluster;
use crate::trace::{monotonic_us, Event, EventKind, MessageRef};
use crate::worker::{Record, ID_HEADER};
use crate::{Error, Result};

/// Acknowledged `(id, partition, offset, time)` and failures of one case's messages.
#[derive(Default)]
struct Deliveries {
    ok: Mutex<Vec<(u64, i32, i64, u64)>>,
    failed: Mutex<Vec<String>>,
}

/// Routes each delivery report to its case's [`Deliveries`].
struct Router;

impl ClientContext for Router {}
impl ProducerContext for Router {
    type DeliveryOpaque = Box<(u64, Arc<Deliveries>)>;
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (id, to) = *opaque;
        match result {
            Ok(m) => to.ok.lock().unwrap_or_else(|p| p.into_inner()).push((
                id,
                m.partition(),
                m.offset(),
                monotonic_us(),
            )),
            Err((e, _)) => to
                .failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("message {id}: {e}")),
        }
    }
}

/// The run's workload producer, created on first use.
#[derive(Default)]
pub(crate) struct WorkloadProducer {
    inner: Mutex<Option<Arc<BaseProducer<Router>>>>,
}

impl WorkloadProducer {
    fn get(&self, cluster: &Cluster) -> Result<Arc<BaseProducer<Router>>> {
        let mut slot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let mut config = cluster.client_config();
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5");
        let producer: BaseProducer<Router> = config
            .create_with_context(Router)
            .map_err(|e| Error::kafka("creating the workload producer", e))?;
        let producer = Arc::new(producer);
        *slot = Some(producer.clone());
        Ok(producer)
    }
}

impl Case<'_> {
    /// Produce the workload and record what the broker acknowledged, then the end offsets.
    pub(super) fn produce(&mut self) -> Result<()> {
        let w = self.schedule.workload;
        let producer = self.runner.producer.get(&self.runner.cluster)?;
        // The case's topic is new to this producer: ask for its metadata now, so the sends
        // below find their partition leaders at once. Left to itself, librdkafka queued the
        // records until a metadata refresh of its own — the produce step took 603 ms of a
        // 2.35 s median case on containers, 161 ms with this (speed bench, 2026-12-02). A
        // failed request costs nothing: the producer then looks the topic up itself, as before.
        let _ = producer
            .client()
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10));
        let deliveries = Arc::new(Deliveries::default());
        for id in 0..w.messages as u64 {
            let key = w.key_of(id);
            let payload = match &self.runner.payload {
                // The user's generator runs here, in the orchestrator: a panic in it is a
                // configuration error naming the message, not a crashed test.
                Some(generate) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    generate(id, &key)
                }))
                .map_err(|panic| {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a non-string panic".into());
                    crate::Error::Config(format!(
                        "the payload generator (Harness::payload) panicked for message {id} (key {key:?}): {why}"
                    ))
                })?,
                None => Record::default_payload(id, &key),
            };
            let id_text = id.to_string();
            let mut record =
                BaseRecord::with_opaque_to(&self.topic, Box::new((id, deliveries.clone())))
                    .key(key.as_str())
                    .payload(&payload)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: ID_HEADER,
                        value: Some(&id_text),
                    }))
                    .partition(w.partition_of(id));
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        producer.poll(Duration::from_millis(10));
                        record = back;
                    }
                    Err((e, _)) => return Err(Error::kafka("producing the workload", e)),
                }
            }
        }
        producer
            .flush(Duration::from_secs(60))
            .map_err(|e| Error::kafka("flushing the workload", e))?;
        let failed = deliveries
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !failed.is_empty() {
            // Unacknowledged messages are not in I; the checkers judge only what the broker took.
            eprintln!(
                "kafka-harness: {} workload messages not acknowledged: {}",
                failed.len(),
                failed.join("; ")
            );
        }
        let mut ok = deliveries
            .ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        ok.sort_by_key(|(id, ..)| *id);
        for (id, partition, offset, at) in ok {
            self.events.push(Event {
                at_us: at.saturating_sub(self.epoch_us),
                inc: 0,
                kind: EventKind::Produced {
                    msg: MessageRef {
                        id,
                        partition,
                        offset,
                    },
                    key: w.key_of(id),
                },
            });
        }
        self.ends = (0..w.partitions)
            .map(|p| {
                // Right after a case that restarted a broker the metadata behind this read can
                // time out once (seen: a 200-case run on 3 brokers ended in a harness error
                // here); a transient error is tried again, as the committed-offset read does.
                super::retry::retry_transient(|| {
                    self.probe
                        .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                        .map(|(_, high)| high)
                        .map_err(|e| Error::kafka("reading high watermarks", e))
                })
            })
            .collect::<Result<_>>()?;
        Ok(())
    }
}

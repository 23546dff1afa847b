use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use super::{ReadBackContext, Sink, SinkError, SinkFactory, SinkReadBack, Stamp};
use crate::trace::SinkSemantics;
use crate::worker::Record;
use crate::Error;

/// The output topic of a consume-transform-produce consumer, written through
/// [`WorkerCtx::transactional_producer`](crate::worker::WorkerCtx::transactional_producer)
/// and read back `read_committed`.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputTopicSink;

struct Refuse;

impl Sink for Refuse {
    fn apply(&mut self, _: &Record, _: Stamp) -> Result<(), SinkError> {
        Err(SinkError::Storage(
            "the output-topic sink is written through ctx.transactional_producer(), not ctx.sink()"
                .into(),
        ))
    }
}

impl SinkFactory for OutputTopicSink {
    fn name(&self) -> &str {
        "output-topic"
    }
    fn semantics(&self) -> SinkSemantics {
        SinkSemantics::OutputTopic
    }
    fn open(&self, _: &Path) -> Result<Box<dyn Sink>, SinkError> {
        Ok(Box::new(Refuse))
    }
    fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack> {
        let mut config = ctx.client.clone();
        config
            .set("group.id", format!("{}.reader", ctx.output_topic))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| Error::kafka("reading the output topic", e))?;
        let md = consumer
            .fetch_metadata(Some(ctx.output_topic), Duration::from_secs(10))
            .map_err(|e| Error::kafka("output topic metadata", e))?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(ctx.output_topic, p.id(), rdkafka::Offset::Beginning)
                    .map_err(|e| Error::kafka("assigning the output topic", e))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| Error::kafka("assigning the output topic", e))?;
        // Read until every partition's position reaches its high watermark (the LSO once no
        // transaction is open, which holds after every worker is dead and fenced), or 20 s.
        let mut output = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        // A client error while a broker that just came back is rejoining the metadata
        // (`DestroyBroker`, a transport error) is not the end of the read: the next round tries
        // again. Only one that lasts until the deadline is returned.
        let mut failing: Option<(&str, rdkafka::error::KafkaError)> = None;
        loop {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    // The input's id header (a consumer that copies headers), else a payload
                    // that is the id (the instrumented producer's records).
                    let id = crate::worker::message_id(&m)
                        .or_else(|| {
                            m.payload()
                                .and_then(|p| std::str::from_utf8(p).ok())
                                .and_then(|s| s.parse::<u64>().ok())
                        })
                        .ok_or_else(|| {
                            Error::Sink(format!(
                                "output record at offset {} carries no `kafka-harness-id` header and its payload is not an id: copy the input record's headers to what you produce",
                                m.offset()
                            ))
                        })?;
                    output.push(id);
                }
                Some(Err(e)) => failing = Some(("reading the output topic", e)),
                None => {
                    let mut done = true;
                    let position = consumer
                        .position()
                        .map_err(|e| Error::kafka("output position", e))?;
                    for e in position.elements() {
                        match consumer.fetch_watermarks(
                            ctx.output_topic,
                            e.partition(),
                            Duration::from_secs(5),
                        ) {
                            Ok((_, high)) => {
                                let pos = e.offset().to_raw().unwrap_or(0);
                                // A transaction's commit marker takes the last offset: position
                                // may stop one short.
                                if pos < high - 1 && high > 0 {
                                    done = false;
                                }
                            }
                            Err(err) => {
                                done = false;
                                failing = Some(("output watermarks", err));
                            }
                        }
                    }
                    if done {
                        break;
                    }
                    if Instant::now() > deadline {
                        if let Some((during, e)) = failing {
                            return Err(Error::kafka(during, e));
                        }
                        break;
                    }
                    failing = None;
                }
            }
        }
        Ok(SinkReadBack {
            applied: Vec::new(),
            state: None,
            output: Some(output),
        })
    }
}

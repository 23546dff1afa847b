//! Async workers: the user's `async fn(WorkerCtx)` on a tokio runtime in the worker process.

use std::future::Future;

use super::context::{WorkerCtx, WorkerError};

/// Turn an async worker into the worker function [`crate::Harness::check`],
/// [`crate::Harness::replay`] and friends take. In the worker process the future runs on a
/// fresh multi-threaded tokio runtime (what `#[tokio::main]` builds), so `StreamConsumer`,
/// `FutureProducer`, `tokio::spawn` and async database clients work as in production. The
/// runtime is dropped when the future returns; a crash is still a SIGKILL of the process.
///
/// ```no_run
/// use futures::StreamExt;
/// use kafka_harness::worker::{on_tokio, WorkerCtx, WorkerError};
/// use kafka_harness::{Guarantee, Harness};
/// use rdkafka::consumer::{Consumer, StreamConsumer};
/// use rdkafka::Message;
///
/// async fn my_consumer(ctx: WorkerCtx) -> Result<(), WorkerError> {
///     let mut config = ctx.consumer_config();
///     config.set("enable.auto.commit", "true").set("enable.auto.offset.store", "false");
///     let consumer: StreamConsumer = config.create()?;
///     consumer.subscribe(&[ctx.topic()])?;
///     let mut sink = ctx.sink()?;
///     let mut stream = consumer.stream();
///     while ctx.running() {
///         let Ok(Some(m)) = tokio::time::timeout(std::time::Duration::from_millis(100), stream.next()).await else {
///             continue;
///         };
///         let m = m?;
///         if let Some(record) = kafka_harness::worker::Record::from_message(&m) {
///             sink.apply(&record)?;
///         }
///         consumer.store_offset_from_message(&m)?;
///     }
///     Ok(())
/// }
///
/// #[test]
/// fn my_consumer_is_at_least_once() {
///     Harness::new(Guarantee::AtLeastOnce).assert(on_tokio(my_consumer));
/// }
/// ```
pub fn on_tokio<F, Fut>(worker: F) -> impl Fn(&mut WorkerCtx) -> Result<(), WorkerError>
where
    F: Fn(WorkerCtx) -> Fut,
    Fut: Future<Output = Result<(), WorkerError>>,
{
    move |ctx: &mut WorkerCtx| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the worker's tokio runtime: {e}"))?;
        runtime.block_on(worker(ctx.clone()))
    }
}

//! The orchestrator's own reads (committed offsets, high watermarks) after a broker or
//! network fault: the cluster answers again within seconds, and until then a read fails with
//! a transient client error that is not the case's verdict.

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long an orchestrator read retries transient errors: a fresh cluster loads its offsets
/// topic lazily, a restarted broker moves coordinators and leaders.
pub(super) const TRANSIENT_BOUND: Duration = Duration::from_secs(30);

/// An orchestrator read that failed the way a coordinator or leader that is moving or loading
/// makes it fail.
fn retriable(e: &Error) -> bool {
    matches!(e, Error::Kafka { source, .. } if crate::worker::transient(source))
}

/// `read` until it succeeds, its error is not a transient client error, or
/// [`TRANSIENT_BOUND`] has passed (backing off 50 ms, doubling, up to 1 s): the
/// orchestrator's reads ride out a broker fault's aftermath.
pub(super) fn retry_transient<T>(mut read: impl FnMut() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        match read() {
            Ok(v) => return Ok(v),
            Err(e) if retriable(&e) && started.elapsed() < TRANSIENT_BOUND => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_orchestrator_read_rides_out_transient_errors_and_stops_at_any_other() {
        use rdkafka::error::KafkaError;
        use rdkafka::types::RDKafkaErrorCode as C;
        let timed_out = || Error::kafka("reading", KafkaError::MetadataFetch(C::OperationTimedOut));
        let mut calls = 0;
        let got = retry_transient(|| {
            calls += 1;
            if calls < 3 {
                Err(timed_out())
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.unwrap(), 3);
        let mut calls = 0;
        let got: Result<()> = retry_transient(|| {
            calls += 1;
            Err(Error::kafka(
                "reading",
                KafkaError::MetadataFetch(C::UnknownTopicOrPartition),
            ))
        });
        assert!(got.is_err());
        assert_eq!(calls, 1, "a non-transient error is not tried again");
    }
}

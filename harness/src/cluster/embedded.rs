//! librdkafka's in-process mock cluster: no Docker, no Java.
//!
//! It listens on real loopback ports, so worker child processes connect to it like to a
//! broker. Groups and offset commits work; transactions are NOT faithful (EndTxn does
//! nothing, aborted records stay visible), so transactional checks are refused here.

use std::ffi::CStr;

use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use rdkafka_sys as rdsys;

use super::{Backend, BackendKind, ClusterError, ClusterResult};

pub(crate) struct Embedded {
    // Field order matters: the mock cluster is destroyed before the client that owns its thread.
    mock: MockHandle,
    _client: BaseProducer,
    bootstrap: String,
}

struct MockHandle(*mut rdsys::rd_kafka_mock_cluster_t);

// SAFETY: librdkafka's mock API hands every call to the mock cluster's own thread
// (rd_kafka_mock_cluster_op), so the handle may be used from any thread.
unsafe impl Send for MockHandle {}
unsafe impl Sync for MockHandle {}

impl Embedded {
    pub(crate) fn start(brokers: usize) -> ClusterResult<Self> {
        let client: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .create()
            .map_err(|e| ClusterError::Embedded(e.to_string()))?;
        // SAFETY: the client outlives the mock (see field order); the pointer is checked.
        let mock = unsafe {
            rdsys::rd_kafka_mock_cluster_new(client.client().native_ptr(), brokers as i32)
        };
        if mock.is_null() {
            return Err(ClusterError::Embedded(
                "rd_kafka_mock_cluster_new returned null".into(),
            ));
        }
        // SAFETY: mock is a live mock cluster; bootstraps returns a string it owns.
        let bootstrap = unsafe {
            rdsys::rd_kafka_mock_group_initial_rebalance_delay_ms(mock, 0);
            CStr::from_ptr(rdsys::rd_kafka_mock_cluster_bootstraps(mock))
                .to_string_lossy()
                .into_owned()
        };
        Ok(Embedded {
            mock: MockHandle(mock),
            _client: client,
            bootstrap,
        })
    }

    fn broker_op(&self, broker: usize, up: bool) -> ClusterResult<()> {
        // Mock broker ids are 1-based.
        let id = broker as i32 + 1;
        // SAFETY: the mock is alive for as long as self.
        let err = unsafe {
            if up {
                rdsys::rd_kafka_mock_broker_set_up(self.mock.0, id)
            } else {
                rdsys::rd_kafka_mock_broker_set_down(self.mock.0, id)
            }
        };
        if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            Ok(())
        } else {
            Err(ClusterError::Embedded(format!(
                "mock broker {id} set {}: {err:?}",
                if up { "up" } else { "down" }
            )))
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // SAFETY: destroyed exactly once, before the client is dropped.
        unsafe { rdsys::rd_kafka_mock_cluster_destroy(self.mock.0) };
    }
}

impl Backend for Embedded {
    fn kind(&self) -> BackendKind {
        BackendKind::Embedded
    }
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }
    /// The mock's closest thing to a kill: the broker drops connections and refuses new ones.
    fn kill(&self, broker: usize) -> ClusterResult<()> {
        self.broker_op(broker, false)
    }
    fn start(&self, broker: usize) -> ClusterResult<()> {
        self.broker_op(broker, true)
    }
    fn probe_with_topic(&self) -> bool {
        false
    }
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Option<ClusterResult<()>> {
        let Ok(name) = std::ffi::CString::new(topic) else {
            return Some(Err(ClusterError::Embedded(format!(
                "topic name {topic:?} contains NUL"
            ))));
        };
        // SAFETY: the mock is alive; the name is a valid C string for the call's duration.
        let err = unsafe {
            rdsys::rd_kafka_mock_topic_create(self.mock.0, name.as_ptr(), partitions, replication)
        };
        Some(
            if err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                Ok(())
            } else {
                Err(ClusterError::Embedded(format!(
                    "creating topic {topic}: {err:?}"
                )))
            },
        )
    }
    /// Mock topics live in memory under unique names; the mock has no DeleteTopics.
    fn admin_deletes(&self) -> bool {
        false
    }
    fn shutdown(&self) -> ClusterResult<()> {
        // The mock lives inside this process and goes with the Cluster value.
        Ok(())
    }
}

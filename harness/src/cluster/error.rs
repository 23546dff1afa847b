use super::BackendKind;

/// Errors of the `cluster` layer: choosing, starting, reaching and faulting brokers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// `KAFKA_HARNESS_BACKEND` named no backend.
    #[error("KAFKA_HARNESS_BACKEND={value:?} is not a backend (expected one of: containers, local, external, embedded)")]
    UnknownBackend {
        /// The value found.
        value: String,
    },
    /// The containers backend was asked for but no Docker engine answers.
    #[error("the containers backend needs a Docker engine, but none answers at {endpoint}: {reason} (run `ci/setup`, or set KAFKA_HARNESS_BACKEND=local or embedded)")]
    NoDocker {
        /// Where the harness looked.
        endpoint: String,
        /// What the engine (or its absence) said.
        reason: String,
    },
    /// The local backend was asked for but the Kafka jars or a JVM are missing.
    #[error("the local backend needs the Kafka {version} jars in {dir} (run `ci/setup`, or set KAFKA_HARNESS_KAFKA_LIBS): {reason}")]
    NoKafkaJars {
        /// Kafka version expected.
        version: String,
        /// Directory searched.
        dir: String,
        /// What was missing.
        reason: String,
    },
    /// The external backend was asked for without bootstrap servers.
    #[error("the external backend needs KAFKA_HARNESS_BOOTSTRAP=host:port[,host:port...]")]
    NoBootstrap,
    /// The brokers did not become ready in time.
    #[error("{backend} cluster at {bootstrap} not ready after {waited_ms} ms: {reason}")]
    NotReady {
        /// Backend in use.
        backend: BackendKind,
        /// Bootstrap servers probed.
        bootstrap: String,
        /// How long the harness waited.
        waited_ms: u128,
        /// The last thing that was missing.
        reason: String,
    },
    /// A broker fault the backend cannot inject.
    #[error("the {backend} backend cannot {action} a broker")]
    FaultUnsupported {
        /// Backend in use.
        backend: BackendKind,
        /// The fault asked for.
        action: &'static str,
    },
    /// A broker index outside the cluster.
    #[error("broker {index} does not exist (the cluster has {count})")]
    NoSuchBroker {
        /// The index asked for (0-based).
        index: usize,
        /// How many brokers there are.
        count: usize,
    },
    /// Only 1 or 3 brokers are supported.
    #[error("{count} brokers asked for; the harness runs 1 or 3")]
    BrokerCount {
        /// The count asked for.
        count: usize,
    },
    /// The harness refused to touch a topic or group outside its prefix.
    #[error("refusing to touch {what} {name:?}: it is not under the harness prefix {prefix:?}")]
    OutsidePrefix {
        /// "topic" or "group".
        what: &'static str,
        /// The name.
        name: String,
        /// The prefix.
        prefix: String,
    },
    /// A Docker engine call failed.
    #[error("docker ({during}): {reason}")]
    Docker {
        /// What the harness was doing.
        during: String,
        /// What Docker said.
        reason: String,
    },
    /// Starting or signalling a broker process failed.
    #[error("broker process ({during}): {source}")]
    Process {
        /// What the harness was doing.
        during: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A Kafka admin call failed.
    #[error("admin ({during}): {reason}")]
    Admin {
        /// What the harness was doing.
        during: String,
        /// What the broker or client said.
        reason: String,
    },
    /// The mock cluster could not be created.
    #[error("embedded mock cluster: {0}")]
    Embedded(String),
}

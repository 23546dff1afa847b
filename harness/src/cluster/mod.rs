//! Where Kafka comes from: one [`Cluster`] interface over four backends.
//!
//! ```text
//!   Cluster::from_env()
//!     KAFKA_HARNESS_BACKEND set ─────────────► that backend
//!     KAFKA_HARNESS_BOOTSTRAP set ───────────► external   (no broker faults)
//!     a Docker engine answers ───────────────► containers (testcontainers)
//!     Kafka jars present (ci/setup) ─────────► local      (child JVMs)
//!     otherwise ─────────────────────────────► embedded   (librdkafka mock)
//! ```
//!
//! Broker faults ([`Cluster::kill_broker`], [`Cluster::restart_broker`],
//! [`Cluster::pause_broker`], [`Cluster::resume_broker`]) are methods here; a
//! backend that cannot inject one returns [`ClusterError::FaultUnsupported`].

mod admin;
mod containers;
mod embedded;
mod error;
mod external;
mod local;
mod props;
mod proxy;
mod reaper;
pub(crate) use reaper::at_exit;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use proxy::LinkProxy;
pub use proxy::LinkState;

pub use error::ClusterError;
pub(crate) use reaper::spawn_tied;

/// The Apache Kafka version the harness pins (image tag, jars, local image).
pub const KAFKA_VERSION: &str = "4.1.1";

/// Every topic, group and transactional id the harness creates starts with this.
pub const DEFAULT_PREFIX: &str = "kafka-harness.";

type ClusterResult<T> = std::result::Result<T, ClusterError>;

/// The four places a cluster can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Brokers in Docker containers started through testcontainers.
    Containers,
    /// Brokers as child JVM processes on loopback.
    Local,
    /// Someone else's cluster, reached through bootstrap servers.
    External,
    /// librdkafka's in-process mock cluster.
    Embedded,
}

impl BackendKind {
    /// Whether Kafka transactions behave as on a real broker (the mock's EndTxn does nothing).
    pub fn transactions_faithful(self) -> bool {
        !matches!(self, BackendKind::Embedded)
    }

    /// Whether the harness can inject [`crate::Fault::Broker`] faults here: kill, restart and
    /// freeze brokers it started, and find which one leads a partition or coordinates a group.
    /// The embedded mock has no real failover (nor a way to freeze a broker); an external
    /// cluster is not the harness's to kill.
    pub fn broker_faults(self) -> bool {
        matches!(self, BackendKind::Containers | BackendKind::Local)
    }

    /// Whether the harness can cut or slow the links between a worker and the brokers
    /// ([`crate::Fault::Network`]): brokers it starts advertise a listener behind a harness
    /// proxy per broker. The embedded mock's brokers advertise only themselves, and an
    /// external cluster's listeners are not the harness's to change.
    pub fn network_faults(self) -> bool {
        matches!(self, BackendKind::Containers | BackendKind::Local)
    }

    /// Whether a commit made while the group rebalances after a member joins is accepted as
    /// on a real broker. Kafka accepts commits from the current generation until the group
    /// completes its rebalance (that is what a revoke handler's commit relies on); librdkafka's
    /// mock coordinator answers `REBALANCE_IN_PROGRESS` to every commit while it waits for
    /// members to rejoin, so on the embedded backend a revoke handler's commit never lands and
    /// a bug in what it commits cannot show.
    pub fn commits_during_rebalance_faithful(self) -> bool {
        !matches!(self, BackendKind::Embedded)
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Containers => "containers",
            BackendKind::Local => "local",
            BackendKind::External => "external",
            BackendKind::Embedded => "embedded",
        })
    }
}

impl FromStr for BackendKind {
    type Err = ClusterError;
    fn from_str(s: &str) -> ClusterResult<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "containers" | "container" | "docker" => Ok(BackendKind::Containers),
            "local" | "jvm" => Ok(BackendKind::Local),
            "external" => Ok(BackendKind::External),
            "embedded" | "mock" => Ok(BackendKind::Embedded),
            _ => Err(ClusterError::UnknownBackend {
                value: s.to_string(),
            }),
        }
    }
}

/// The environment variable that carries a worker process's spec file (see `worker::spec`).
pub(crate) const ENV_WORKER_SPEC: &str = "KAFKA_HARNESS_WORKER_SPEC";

/// What a worker process knows of its orchestrator's cluster: part of the worker spec file,
/// read here so that `Cluster::shared()` in a worker is a view of that cluster (and this
/// module needs nothing from `worker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClusterView {
    pub bootstrap: String,
    pub backend: BackendKind,
    pub brokers: usize,
    pub prefix: String,
}

impl ClusterView {
    /// The view in this process's worker spec, if this is a worker process.
    fn from_env() -> Option<ClusterView> {
        let path = std::env::var_os(ENV_WORKER_SPEC)?;
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// How to start a cluster. Every field has an environment override, read by [`ClusterConfig::from_env`].
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Force a backend. Env: `KAFKA_HARNESS_BACKEND` (`containers|local|external|embedded`).
    pub backend: Option<BackendKind>,
    /// Number of brokers, 1 or 3. Env: `KAFKA_HARNESS_BROKERS`. Ignored by `external`.
    pub brokers: usize,
    /// Container image. Env: `KAFKA_HARNESS_IMAGE`; default `apache/kafka:4.1.1`.
    pub image: String,
    /// Bootstrap servers of an external cluster. Env: `KAFKA_HARNESS_BOOTSTRAP`.
    pub bootstrap: Option<String>,
    /// Directory of the Kafka jars for `local`. Env: `KAFKA_HARNESS_KAFKA_LIBS`;
    /// default `${XDG_CACHE_HOME:-~/.cache}/kafka-harness/kafka-4.1.1/libs` (filled by `ci/setup`).
    pub kafka_libs: std::path::PathBuf,
    /// Prefix of every topic/group the harness creates. Env: `KAFKA_HARNESS_PREFIX`.
    pub prefix: String,
    /// How long to wait for brokers to become ready. Env: `KAFKA_HARNESS_READY_TIMEOUT_MS`.
    pub ready_timeout: Duration,
    /// JVM flags of the brokers the harness starts (containers, local), besides the heap's.
    /// Env: `KAFKA_HARNESS_BROKER_JVM_OPTS`; default [`BROKER_JVM_OPTS`].
    pub broker_jvm_opts: String,
}

/// The brokers' JVM flags by default: the serial collector and the client compiler only (C1).
/// A test broker lives seconds to minutes under a light load, so the optimizing compiler's
/// work (C2) and G1's concurrent threads never pay for themselves, and on a small machine they
/// take the CPU the cases need: on this project's 2-core machine a CI run with five broker
/// JVMs at once was CPU-bound, the JVMs the largest share. JIT and GC flags change how fast
/// the broker's code runs, never what it does.
pub const BROKER_JVM_OPTS: &str =
    "-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true";

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backend: None,
            brokers: 1,
            image: format!("apache/kafka:{KAFKA_VERSION}"),
            bootstrap: None,
            kafka_libs: local::default_libs_dir(),
            prefix: DEFAULT_PREFIX.to_string(),
            ready_timeout: Duration::from_secs(90),
            broker_jvm_opts: BROKER_JVM_OPTS.to_string(),
        }
    }
}

impl ClusterConfig {
    /// Defaults overridden by the `KAFKA_HARNESS_*` environment variables documented on each field.
    pub fn from_env() -> ClusterResult<Self> {
        let mut c = ClusterConfig::default();
        if let Some(v) = env_nonempty("KAFKA_HARNESS_BACKEND") {
            c.backend = Some(v.parse()?);
        }
        if let Some(v) = env_nonempty("KAFKA_HARNESS_BROKERS") {
            c.brokers = v
                .parse()
                .map_err(|_| ClusterError::BrokerCount { count: 0 })?;
        }
        if let Some(v) = env_nonempty("KAFKA_HARNESS_IMAGE") {
            c.image = v;
        }
        c.bootstrap = env_nonempty("KAFKA_HARNESS_BOOTSTRAP");
        if let Some(v) = env_nonempty("KAFKA_HARNESS_KAFKA_LIBS") {
            c.kafka_libs = v.into();
        }
        if let Some(v) = env_nonempty("KAFKA_HARNESS_PREFIX") {
            c.prefix = v;
        }
        if let Some(ms) =
            env_nonempty("KAFKA_HARNESS_READY_TIMEOUT_MS").and_then(|v| v.parse().ok())
        {
            c.ready_timeout = Duration::from_millis(ms);
        }
        if let Some(v) = env_nonempty("KAFKA_HARNESS_BROKER_JVM_OPTS") {
            c.broker_jvm_opts = v;
        }
        Ok(c)
    }

    /// Force a backend.
    pub fn backend(mut self, kind: BackendKind) -> Self {
        self.backend = Some(kind);
        self
    }

    /// Set the broker count (1 or 3).
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n;
        self
    }

    /// Decide which backend to use and why, without starting anything.
    pub fn choose(&self) -> ClusterResult<(BackendKind, String)> {
        if let Some(kind) = self.backend {
            return Ok((
                kind,
                "forced by KAFKA_HARNESS_BACKEND / ClusterConfig::backend".into(),
            ));
        }
        if let Some(b) = &self.bootstrap {
            return Ok((
                BackendKind::External,
                format!("KAFKA_HARNESS_BOOTSTRAP={b}"),
            ));
        }
        match containers::docker_answers() {
            Ok(endpoint) => Ok((
                BackendKind::Containers,
                format!("a Docker engine answers at {endpoint}"),
            )),
            Err(no_docker) => {
                if let Err(why) = local::check_libs(&self.kafka_libs) {
                    return Ok((
                        BackendKind::Embedded,
                        format!("no Docker ({no_docker}) and no local Kafka jars ({why})"),
                    ));
                }
                Ok((
                    BackendKind::Local,
                    format!(
                        "no Docker ({no_docker}); Kafka jars found in {}",
                        self.kafka_libs.display()
                    ),
                ))
            }
        }
    }
}

/// `Ok(endpoint)` when a Docker engine answers; the reason otherwise.
pub fn docker_available() -> std::result::Result<String, String> {
    containers::docker_answers()
}

/// `Ok` when `libs` holds a Kafka broker classpath and `java` runs.
pub fn local_available(libs: &std::path::Path) -> std::result::Result<(), String> {
    local::check_libs(libs)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// What a backend must do; broker faults default to "unsupported".
trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    fn bootstrap(&self) -> String;
    fn kill(&self, broker: usize) -> ClusterResult<()> {
        let _ = broker;
        Err(ClusterError::FaultUnsupported {
            backend: self.kind(),
            action: "kill",
        })
    }
    fn start(&self, broker: usize) -> ClusterResult<()> {
        let _ = broker;
        Err(ClusterError::FaultUnsupported {
            backend: self.kind(),
            action: "restart",
        })
    }
    fn pause(&self, broker: usize) -> ClusterResult<()> {
        let _ = broker;
        Err(ClusterError::FaultUnsupported {
            backend: self.kind(),
            action: "pause",
        })
    }
    fn resume(&self, broker: usize) -> ClusterResult<()> {
        let _ = broker;
        Err(ClusterError::FaultUnsupported {
            backend: self.kind(),
            action: "resume",
        })
    }
    /// Create a topic; `None` means "use the admin API".
    fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Option<ClusterResult<()>> {
        let _ = (topic, partitions, replication);
        None
    }
    /// Whether topics and groups are deleted through the admin API (the mock cannot).
    fn admin_deletes(&self) -> bool {
        true
    }
    /// Whether readiness may create a probe topic with replication = broker count.
    fn probe_with_topic(&self) -> bool {
        true
    }
    /// The harness's proxies in front of each broker, when the backend advertises them.
    fn link(&self) -> Option<&LinkProxy> {
        None
    }
    fn shutdown(&self) -> ClusterResult<()>;
}

/// A running Kafka cluster, whichever backend it lives on.
///
/// ```no_run
/// use kafka_harness::cluster::Cluster;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = Cluster::from_env()?;          // picks a backend, starts it, waits until ready
/// println!("{} at {}", cluster.backend(), cluster.bootstrap_servers());
/// let topic = cluster.topic_name("orders");     // always under the harness prefix
/// cluster.create_topic(&topic, 3)?;
/// cluster.shutdown()?;
/// # Ok(()) }
/// ```
pub struct Cluster {
    backend: Box<dyn Backend>,
    brokers: usize,
    prefix: String,
    ready_timeout: Duration,
    reason: String,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("backend", &self.backend.kind())
            .field("bootstrap", &self.backend.bootstrap())
            .field("brokers", &self.brokers)
            .finish()
    }
}

/// The clusters of [`Cluster::shared`] and [`Cluster::shared_with`], by their config's `Debug`
/// text: one per config per process, shut down together at exit.
static SHARED: Mutex<Vec<(String, Arc<Cluster>)>> = Mutex::new(Vec::new());

impl Cluster {
    /// Choose a backend from the environment (see the module docs), start it and wait until ready.
    /// Logs one line saying which backend and why.
    pub fn from_env() -> ClusterResult<Cluster> {
        Cluster::start(ClusterConfig::from_env()?)
    }

    /// Start a cluster as configured and wait until it is ready.
    pub fn start(config: ClusterConfig) -> ClusterResult<Cluster> {
        // In a worker process the test body runs again: it gets the orchestrator's cluster,
        // never a second one.
        if let Some(view) = ClusterView::from_env() {
            return Ok(Cluster::worker_view(view));
        }
        let (kind, reason) = config.choose()?;
        let brokers = match kind {
            BackendKind::External => 1,
            _ if config.brokers == 1 || config.brokers == 3 => config.brokers,
            _ => {
                return Err(ClusterError::BrokerCount {
                    count: config.brokers,
                })
            }
        };
        eprintln!("kafka-harness: backend {kind} ({reason})");
        let started = Instant::now();
        let backend: Box<dyn Backend> = match kind {
            BackendKind::Containers => Box::new(containers::Containers::start(&config, brokers)?),
            BackendKind::Local => Box::new(local::Local::start(&config, brokers)?),
            BackendKind::External => Box::new(external::External::new(&config)?),
            BackendKind::Embedded => Box::new(embedded::Embedded::start(brokers)?),
        };
        // Someone else's cluster either answers or it does not: do not wait as for a JVM start.
        let ready_timeout = match kind {
            BackendKind::External => config.ready_timeout.min(Duration::from_secs(15)),
            _ => config.ready_timeout,
        };
        let cluster = Cluster {
            backend,
            brokers,
            prefix: config.prefix.clone(),
            ready_timeout,
            reason,
        };
        if let Err(e) = cluster.wait_ready() {
            let _ = cluster.shutdown();
            return Err(e);
        }
        eprintln!(
            "kafka-harness: {kind} cluster of {brokers} ready at {} in {} ms",
            cluster.bootstrap_servers(),
            started.elapsed().as_millis()
        );
        Ok(cluster)
    }

    /// The cluster shared by every case of this process: the one [`ClusterConfig::from_env`]
    /// describes, started (by [`Cluster::start`]) on first use and shut down when the process
    /// exits — [`Cluster::shared_with`] of that config, so a test asking for the same config
    /// explicitly gets the same cluster. A failed start is not cached.
    pub fn shared() -> ClusterResult<Arc<Cluster>> {
        Cluster::shared_with(ClusterConfig::from_env()?)
    }

    /// The cluster `config` describes, shared by every caller in this process that asks for the
    /// same config: started (by [`Cluster::start`]) on first use and shut down when the process
    /// exits, like [`Cluster::shared`]'s. For a test binary whose tests need a cluster other
    /// than the environment's default — 3 brokers for broker faults — without starting one per
    /// test. A failed start is not cached. In a worker process it is its orchestrator's cluster.
    ///
    /// ```no_run
    /// use kafka_harness::{Cluster, ClusterConfig};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let three = Cluster::shared_with(ClusterConfig::from_env()?.brokers(3))?;
    /// let again = Cluster::shared_with(ClusterConfig::from_env()?.brokers(3))?;
    /// assert!(std::sync::Arc::ptr_eq(&three, &again));
    /// # Ok(()) }
    /// ```
    pub fn shared_with(config: ClusterConfig) -> ClusterResult<Arc<Cluster>> {
        let key = format!("{config:?}");
        let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = guard.iter().find(|(k, _)| *k == key) {
            return Ok(c.clone());
        }
        // In a worker process `start` gives the orchestrator's cluster, which is not ours to
        // shut down.
        let view = ClusterView::from_env().is_some();
        let cluster = Arc::new(Cluster::start(config)?);
        if guard.is_empty() && !view {
            reaper::at_exit(shutdown_shared);
        }
        guard.push((key, cluster.clone()));
        Ok(cluster)
    }

    fn worker_view(view: ClusterView) -> Cluster {
        Cluster {
            backend: Box::new(external::WorkerView {
                kind: view.backend,
                bootstrap: view.bootstrap,
            }),
            brokers: view.brokers,
            prefix: view.prefix,
            ready_timeout: Duration::from_secs(10),
            reason: "worker process: the orchestrator's cluster".into(),
        }
    }

    /// What a worker process needs to know of this cluster.
    pub(crate) fn view(&self) -> ClusterView {
        ClusterView {
            bootstrap: self.bootstrap_servers(),
            backend: self.backend(),
            brokers: self.broker_count(),
            prefix: self.prefix().to_string(),
        }
    }

    /// Bootstrap servers through the harness's link proxies (one per broker, advertised by
    /// the brokers on a listener of their own), for a client whose links the harness may cut
    /// or slow ([`Cluster::set_link`]); `None` where [`BackendKind::network_faults`] is false.
    pub fn proxied_bootstrap_servers(&self) -> Option<String> {
        self.backend.link().map(LinkProxy::bootstrap)
    }

    /// Cut, slow or heal the link between proxied clients and broker `broker` (0-based; all
    /// brokers with `None`). Connections stay open through a cut: bytes wait, as over a
    /// network that drops packets until it heals.
    pub fn set_link(&self, broker: Option<usize>, state: LinkState) -> ClusterResult<()> {
        if let Some(b) = broker {
            self.broker_index(b)?;
        }
        let link = self.backend.link().ok_or(ClusterError::FaultUnsupported {
            backend: self.backend(),
            action: "network cut",
        })?;
        link.set(broker, state);
        Ok(())
    }

    /// Which backend this cluster runs on.
    pub fn backend(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Why `from_env` chose this backend.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// Number of brokers (1 for external clusters, whose size the harness does not manage).
    pub fn broker_count(&self) -> usize {
        self.brokers
    }

    /// `host:port,...` for clients.
    pub fn bootstrap_servers(&self) -> String {
        self.backend.bootstrap()
    }

    /// The harness's prefix for topics, groups and transactional ids.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `name` under the harness prefix.
    pub fn topic_name(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    /// A client config with `bootstrap.servers` set.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap_servers());
        c.set("broker.address.family", "v4");
        c
    }

    /// Replication factor to use for harness topics: the broker count.
    pub fn replication(&self) -> usize {
        self.brokers
    }

    /// Create a topic under the harness prefix (replication = broker count).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> ClusterResult<()> {
        self.check_prefix("topic", topic)?;
        if let Some(done) = self
            .backend
            .create_topic(topic, partitions, self.brokers as i32)
        {
            return done;
        }
        admin::create_topic(
            &self.client_config(),
            topic,
            partitions,
            self.brokers as i32,
        )
    }

    /// Create a topic with explicit topic configs (e.g. `min.insync.replicas`).
    pub fn create_topic_with(
        &self,
        topic: &str,
        partitions: i32,
        configs: &[(&str, &str)],
    ) -> ClusterResult<()> {
        self.check_prefix("topic", topic)?;
        admin::create_topic_with(
            &self.client_config(),
            topic,
            partitions,
            self.brokers as i32,
            configs,
        )
    }

    /// Delete topics under the harness prefix; refuses any other name.
    pub fn delete_topics(&self, topics: &[&str]) -> ClusterResult<()> {
        for t in topics {
            self.check_prefix("topic", t)?;
        }
        if !self.backend.admin_deletes() {
            return Ok(());
        }
        admin::delete_topics(&self.client_config(), topics)
    }

    /// Delete consumer groups under the harness prefix; refuses any other name.
    pub fn delete_groups(&self, groups: &[&str]) -> ClusterResult<()> {
        for g in groups {
            self.check_prefix("group", g)?;
        }
        if !self.backend.admin_deletes() {
            return Ok(());
        }
        admin::delete_groups(&self.client_config(), groups)
    }

    fn check_prefix(&self, what: &'static str, name: &str) -> ClusterResult<()> {
        if name.starts_with(&self.prefix) {
            Ok(())
        } else {
            Err(ClusterError::OutsidePrefix {
                what,
                name: name.to_string(),
                prefix: self.prefix.clone(),
            })
        }
    }

    fn broker_index(&self, index: usize) -> ClusterResult<()> {
        if index < self.brokers {
            Ok(())
        } else {
            Err(ClusterError::NoSuchBroker {
                index,
                count: self.brokers,
            })
        }
    }

    /// The index (0-based) of the broker that leads `topic`'s `partition` now.
    pub fn leader_of(&self, topic: &str, partition: i32) -> ClusterResult<usize> {
        let node = admin::leader_of(&self.client_config(), topic, partition).map_err(|reason| {
            ClusterError::Admin {
                during: format!("looking up the leader of {topic}-{partition}"),
                reason,
            }
        })?;
        self.index_of_node(node)
    }

    /// The index (0-based) of the broker that coordinates consumer group `group` now: the
    /// leader of the `__consumer_offsets` partition the group id hashes to, as the broker
    /// computes it. Needs a cluster that has served a group (the topic is created then).
    pub fn coordinator_of(&self, group: &str) -> ClusterResult<usize> {
        let node = admin::coordinator_of(&self.client_config(), admin::OFFSETS_TOPIC, group)
            .map_err(|reason| ClusterError::Admin {
                during: format!("looking up the coordinator of group {group}"),
                reason,
            })?;
        self.index_of_node(node)
    }

    /// The index (0-based) of the broker that is the transaction coordinator of
    /// `transactional_id` now: the leader of the `__transaction_state` partition the id hashes
    /// to. Needs a cluster on which a transactional producer has started.
    pub fn transaction_coordinator_of(&self, transactional_id: &str) -> ClusterResult<usize> {
        let node = admin::coordinator_of(
            &self.client_config(),
            admin::TRANSACTION_STATE_TOPIC,
            transactional_id,
        )
        .map_err(|reason| ClusterError::Admin {
            during: format!("looking up the transaction coordinator of {transactional_id}"),
            reason,
        })?;
        self.index_of_node(node)
    }

    /// Brokers the harness starts have node ids 1..=n, in index order.
    fn index_of_node(&self, node: i32) -> ClusterResult<usize> {
        let index = usize::try_from(node - 1).unwrap_or(usize::MAX);
        self.broker_index(index).map(|()| index)
    }

    /// Hard-kill broker `index` (0-based): SIGKILL, no controlled shutdown.
    pub fn kill_broker(&self, index: usize) -> ClusterResult<()> {
        self.broker_index(index)?;
        self.backend.kill(index)
    }

    /// Start broker `index` again after a kill (hard-killing it first if it is running),
    /// at the same address, then wait until the whole cluster is ready.
    pub fn restart_broker(&self, index: usize) -> ClusterResult<()> {
        self.broker_index(index)?;
        self.backend.start(index)?;
        self.wait_ready()
    }

    /// Freeze broker `index` (SIGSTOP / `docker pause`): it holds connections but answers nothing.
    pub fn pause_broker(&self, index: usize) -> ClusterResult<()> {
        self.broker_index(index)?;
        self.backend.pause(index)
    }

    /// Thaw a paused broker.
    pub fn resume_broker(&self, index: usize) -> ClusterResult<()> {
        self.broker_index(index)?;
        self.backend.resume(index)
    }

    /// Wait until metadata lists every broker and the controller can create a topic replicated
    /// on all of them (log lines lie after a restart; this does not).
    pub fn wait_ready(&self) -> ClusterResult<()> {
        admin::wait_ready(
            &self.client_config(),
            self.backend.kind(),
            self.brokers,
            self.backend
                .probe_with_topic()
                .then_some(self.prefix.as_str()),
            self.ready_timeout,
        )
    }

    /// Stop every broker and remove containers, networks and data. Idempotent.
    pub fn shutdown(&self) -> ClusterResult<()> {
        self.backend.shutdown()
    }
}

impl Drop for Cluster {
    /// Best-effort safety net; call [`Cluster::shutdown`] to see errors.
    fn drop(&mut self) {
        let _ = self.backend.shutdown();
    }
}

fn shutdown_shared() {
    let taken = match SHARED.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for (_, c) in taken {
        let _ = c.shutdown();
    }
}

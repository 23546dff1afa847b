//! Brokers in Docker containers, started through testcontainers.
//!
//! One broker, or three in KRaft combined mode on a private Docker network. Each broker's
//! client port is pinned on the host (`127.0.0.1:<port>` → 9092) so a restarted broker comes
//! back at the address clients already know. The image follows the official `apache/kafka`
//! environment contract; `ci/setup` builds a local image that honours the same contract.
//!
//! Faults go straight to the engine (bollard, the client testcontainers is built on):
//! `kill` is `SIGKILL` to the broker, `pause` is the cgroup freezer.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::query_parameters::{
    KillContainerOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use bollard::Docker;
use testcontainers::core::IntoContainerPort;
use testcontainers::runners::SyncRunner;
use testcontainers::{Container, GenericImage, ImageExt};

use super::props::{broker_properties, cluster_id};
use super::proxy::LinkProxy;
use super::reaper::{hostname, pid_alive, LABEL_OWNER_HOST, LABEL_OWNER_PID};
use super::{Backend, BackendKind, ClusterConfig, ClusterError, ClusterResult, KAFKA_VERSION};

fn docker_err(during: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> ClusterError {
    let during = during.into();
    move |e| ClusterError::Docker {
        during,
        reason: e.to_string(),
    }
}

fn endpoint() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

fn runtime() -> ClusterResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ClusterError::Process {
            during: "building an async runtime".into(),
            source: e,
        })
}

/// Attempts at freezing a broker's container (see `Backend::pause` below).
const PAUSE_TRIES: u32 = 5;
/// A Docker client at the engine's own API version (older engines reject newer clients),
/// bound to `rt` (its connections live on that runtime).
fn docker(rt: &tokio::runtime::Runtime) -> ClusterResult<Docker> {
    let d = Docker::connect_with_local_defaults().map_err(|e| ClusterError::NoDocker {
        endpoint: endpoint(),
        reason: e.to_string(),
    })?;
    rt.block_on(async move {
        let d = tokio::time::timeout(std::time::Duration::from_secs(3), d.negotiate_version())
            .await
            .map_err(|_| "no answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        tokio::time::timeout(std::time::Duration::from_secs(3), d.ping())
            .await
            .map_err(|_| "no answer within 3 s".to_string())?
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(d)
    })
    .map_err(|reason| ClusterError::NoDocker {
        endpoint: endpoint(),
        reason,
    })
}

/// `Ok(endpoint)` when a Docker engine answers a ping.
pub(crate) fn docker_answers() -> Result<String, String> {
    let rt = runtime().map_err(|e| e.to_string())?;
    docker(&rt).map(|_| endpoint()).map_err(|e| match e {
        ClusterError::NoDocker { reason, .. } => reason,
        other => other.to_string(),
    })
}

struct Broker {
    name: String,
    container: Option<Container<GenericImage>>,
}

pub(crate) struct Containers {
    rt: tokio::runtime::Runtime,
    docker: Docker,
    brokers: Mutex<Vec<Broker>>,
    network: Option<String>,
    bootstrap: String,
    link: LinkProxy,
}

/// Remove containers and networks left by harness processes that died without cleaning up.
fn remove_leftovers(rt: &tokio::runtime::Runtime, docker: &Docker) {
    let host = hostname();
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("{LABEL_OWNER_HOST}={host}")],
    );
    let opts = ListContainersOptions {
        all: true,
        filters: Some(filters.clone()),
        ..Default::default()
    };
    let Ok(list) = rt.block_on(docker.list_containers(Some(opts))) else {
        return;
    };
    let dead = |labels: &Option<HashMap<String, String>>| {
        labels
            .as_ref()
            .and_then(|l| l.get(LABEL_OWNER_PID))
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|pid| !pid_alive(pid))
    };
    for c in list {
        if dead(&c.labels) {
            if let Some(id) = c.id {
                let opts = RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                };
                let _ = rt.block_on(docker.remove_container(&id, Some(opts)));
            }
        }
    }
    let opts = ListNetworksOptions {
        filters: Some(filters),
    };
    if let Ok(nets) = rt.block_on(docker.list_networks(Some(opts))) {
        for n in nets {
            if dead(&n.labels) {
                if let Some(name) = n.name {
                    let _ = rt.block_on(docker.remove_network(&name));
                }
            }
        }
    }
}

/// The configured image; but where it is the default `apache/kafka` image, absent locally, and
/// the image `ci/setup` builds is present, that one (no registry needed).
fn choose_image(rt: &tokio::runtime::Runtime, docker: &Docker, configured: &str) -> String {
    let default = format!("apache/kafka:{KAFKA_VERSION}");
    let local = format!("localhost/kafka-harness/kafka:{KAFKA_VERSION}");
    let present = |name: &str| rt.block_on(docker.inspect_image(name)).is_ok();
    if configured == default
        && std::env::var_os("KAFKA_HARNESS_IMAGE").is_none()
        && !present(&default)
        && present(&local)
    {
        eprintln!("kafka-harness: {default} is not present; using {local} built by ci/setup");
        return local;
    }
    configured.to_string()
}

fn split_image(image: &str) -> (String, String) {
    // The tag is after the last ':' that follows the last '/' (a registry may have a port).
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

/// `foo.bar-baz` → `KAFKA_FOO_BAR___BAZ` (the official image's rendering rule, inverted).
fn env_name(property: &str) -> String {
    let mut s = String::from("KAFKA_");
    for c in property.chars() {
        match c {
            '.' => s.push('_'),
            '-' => s.push_str("___"),
            '_' => s.push_str("__"),
            c => s.push(c.to_ascii_uppercase()),
        }
    }
    s
}

impl Containers {
    pub(crate) fn start(config: &ClusterConfig, n: usize) -> ClusterResult<Self> {
        let rt = runtime()?;
        let docker = docker(&rt)?;
        remove_leftovers(&rt, &docker);
        let pid = std::process::id().to_string();
        let host = hostname();
        let tag = format!("{pid}-{}", super::admin::nonce());
        let network = (n > 1).then(|| format!("kafka-harness-{tag}"));
        if let Some(net) = &network {
            let mut labels = HashMap::new();
            labels.insert(LABEL_OWNER_PID.to_string(), pid.clone());
            labels.insert(LABEL_OWNER_HOST.to_string(), host.clone());
            let req = bollard::models::NetworkCreateRequest {
                name: net.clone(),
                labels: Some(labels),
                ..Default::default()
            };
            rt.block_on(docker.create_network(req))
                .map_err(docker_err("creating the broker network"))?;
        }
        // Client and proxied-listener ports for every broker, all held until all are chosen
        // so that the kernel cannot hand one out twice.
        let held: Vec<std::net::TcpListener> = (0..2 * n)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| ClusterError::Process {
                    during: "finding a free port".into(),
                    source: e,
                })
            })
            .collect::<ClusterResult<_>>()?;
        let chosen: Vec<u16> = held
            .iter()
            .map(|l| {
                l.local_addr()
                    .map(|a| a.port())
                    .map_err(|e| ClusterError::Process {
                        during: "finding a free port".into(),
                        source: e,
                    })
            })
            .collect::<ClusterResult<_>>()?;
        drop(held);
        let (ports, proxied_ports) = (chosen[..n].to_vec(), chosen[n..].to_vec());
        // The worker's links to each broker: a harness proxy (advertised by the broker on its
        // `PROXIED` listener) in front of a host port mapped to that listener.
        let link = LinkProxy::bind(n)?;
        let names: Vec<String> = (0..n)
            .map(|i| format!("kafka-harness-{tag}-{}", i + 1))
            .collect();
        let id = cluster_id();
        let image = choose_image(&rt, &docker, &config.image);
        let (repo, version) = split_image(&image);
        let mut brokers = Vec::new();
        let mut started = Vec::new();
        for i in 0..n {
            let node = (i + 1).to_string();
            let mut req = GenericImage::new(repo.clone(), version.clone())
                .with_container_name(names[i].clone())
                .with_label(LABEL_OWNER_PID, pid.clone())
                .with_label(LABEL_OWNER_HOST, host.clone())
                .with_mapped_port(ports[i], 9092.tcp())
                .with_mapped_port(proxied_ports[i], 9094.tcp())
                .with_env_var("CLUSTER_ID", id.clone())
                .with_env_var("KAFKA_NODE_ID", node.clone())
                .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
                .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
                .with_env_var("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")
                .with_env_var("KAFKA_JVM_PERFORMANCE_OPTS", config.broker_jvm_opts.clone());
            // A second listener for broker-to-broker traffic (replication, transaction markers):
            // the host-facing address 127.0.0.1:<port> means nothing inside a container.
            let (internal, voters) = match &network {
                Some(_) => (
                    format!("{}:19092", names[i]),
                    names
                        .iter()
                        .enumerate()
                        .map(|(j, nm)| format!("{}@{nm}:29093", j + 1))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                None => (
                    "localhost:19092".to_string(),
                    "1@localhost:29093".to_string(),
                ),
            };
            if let Some(net) = &network {
                req = req.with_network(net.clone());
            }
            req = req
                .with_env_var(
                    "KAFKA_LISTENERS",
                    "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:19092,CONTROLLER://0.0.0.0:29093,PROXIED://0.0.0.0:9094",
                )
                .with_env_var(
                    "KAFKA_ADVERTISED_LISTENERS",
                    format!(
                        "PLAINTEXT://127.0.0.1:{},BROKER://{internal},PROXIED://127.0.0.1:{}",
                        ports[i],
                        link.ports()[i]
                    ),
                )
                .with_env_var(
                    "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                    "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT",
                )
                .with_env_var("KAFKA_INTER_BROKER_LISTENER_NAME", "BROKER")
                .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", voters)
                .with_env_var("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs");
            for (k, v) in broker_properties(n) {
                req = req.with_env_var(env_name(k), v);
            }
            match req.start() {
                Ok(c) => started.push(c),
                Err(e) => {
                    let hint = if e.to_string().contains("pull")
                        || e.to_string().contains("No such image")
                    {
                        " (no registry here? run `ci/setup` and set KAFKA_HARNESS_IMAGE=localhost/kafka-harness/kafka:4.1.1)"
                    } else {
                        ""
                    };
                    drop(started);
                    if let Some(net) = &network {
                        let _ = rt.block_on(docker.remove_network(net));
                    }
                    return Err(ClusterError::Docker {
                        during: format!("starting {}:{} as {}", repo, version, names[i]),
                        reason: format!("{e}{hint}"),
                    });
                }
            }
        }
        for (name, c) in names.into_iter().zip(started) {
            brokers.push(Broker {
                name,
                container: Some(c),
            });
        }
        let bootstrap = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let upstreams: Vec<std::net::SocketAddr> = proxied_ports
            .iter()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        link.start(&upstreams)?;
        Ok(Containers {
            rt,
            docker,
            brokers: Mutex::new(brokers),
            network,
            bootstrap,
            link,
        })
    }

    fn name(&self, i: usize) -> ClusterResult<String> {
        let brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
        brokers
            .get(i)
            .map(|b| b.name.clone())
            .ok_or(ClusterError::NoSuchBroker {
                index: i,
                count: brokers.len(),
            })
    }
}

impl Backend for Containers {
    fn kind(&self) -> BackendKind {
        BackendKind::Containers
    }
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }
    fn link(&self) -> Option<&LinkProxy> {
        Some(&self.link)
    }
    fn kill(&self, i: usize) -> ClusterResult<()> {
        let name = self.name(i)?;
        let opts = KillContainerOptions {
            signal: "SIGKILL".into(),
        };
        self.rt
            .block_on(self.docker.kill_container(&name, Some(opts)))
            .map_err(docker_err(format!("killing {name}")))
    }
    fn start(&self, i: usize) -> ClusterResult<()> {
        let name = self.name(i)?;
        // Stop hard if running (a no-op error when already dead), then start: same ports, same data.
        let opts = KillContainerOptions {
            signal: "SIGKILL".into(),
        };
        let _ = self
            .rt
            .block_on(self.docker.kill_container(&name, Some(opts)));
        let _ = self.rt.block_on(self.docker.unpause_container(&name));
        self.rt
            .block_on(self.docker.start_container(
                &name,
                None::<bollard::query_parameters::StartContainerOptions>,
            ))
            .map_err(docker_err(format!("starting {name}")))
    }
    fn pause(&self, i: usize) -> ClusterResult<()> {
        let name = self.name(i)?;
        // runc gives up freezing when a process of the container does not reach the frozen
        // state in time (a broker thread inside a disk write on a loaded machine; seen in CI:
        // "OCI runtime pause failed: unable to freeze") and thaws it again, so a retry is safe.
        let mut tries = 1;
        loop {
            match self.rt.block_on(self.docker.pause_container(&name)) {
                Ok(()) => return Ok(()),
                Err(e) if tries < PAUSE_TRIES && e.to_string().contains("unable to freeze") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(docker_err(format!("pausing {name} ({tries} tries)"))(e)),
            }
        }
    }
    fn resume(&self, i: usize) -> ClusterResult<()> {
        let name = self.name(i)?;
        self.rt
            .block_on(self.docker.unpause_container(&name))
            .map_err(docker_err(format!("resuming {name}")))
    }
    /// Runs from `atexit` too, where thread-locals (and so tokio and testcontainers' drop)
    /// are gone: plain HTTP on the engine's socket, and testcontainers' handles forgotten.
    fn shutdown(&self) -> ClusterResult<()> {
        let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
        for b in brokers.iter_mut() {
            let _ = engine_request("POST", &format!("/containers/{}/unpause", b.name));
            let _ = engine_request(
                "DELETE",
                &format!("/containers/{}?force=true&v=true", b.name),
            );
            if let Some(c) = b.container.take() {
                std::mem::forget(c);
            }
        }
        if let Some(net) = &self.network {
            let _ = engine_request("DELETE", &format!("/networks/{net}"));
        }
        Ok(())
    }
}

/// One HTTP/1.1 request to the Docker engine's unix socket, std only; returns the status code.
fn engine_request(method: &str, path: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let socket = match std::env::var("DOCKER_HOST") {
        Ok(h) => match h.strip_prefix("unix://") {
            Some(p) => p.to_string(),
            None => return Err(std::io::Error::other("DOCKER_HOST is not a unix socket")),
        },
        Err(_) => "/var/run/docker.sock".to_string(),
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_render_to_the_official_images_env_names() {
        assert_eq!(
            env_name("group.initial.rebalance.delay.ms"),
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"
        );
        assert_eq!(env_name("a_b-c"), "KAFKA_A__B___C");
    }

    #[test]
    fn image_names_split_at_the_tag_not_the_registry_port() {
        assert_eq!(
            split_image("apache/kafka:4.1.1"),
            ("apache/kafka".into(), "4.1.1".into())
        );
        assert_eq!(
            split_image("localhost:5000/k:1"),
            ("localhost:5000/k".into(), "1".into())
        );
        assert_eq!(split_image("k"), ("k".into(), "latest".into()));
    }
}

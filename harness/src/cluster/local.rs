//! Brokers as child JVM processes on loopback, from the jars `ci/setup` fetched. No Docker.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::props::{broker_properties, cluster_id};
use super::proxy::LinkProxy;
use super::reaper::{pid_alive, spawn_tied};
use super::{Backend, BackendKind, ClusterConfig, ClusterError, ClusterResult, KAFKA_VERSION};

/// `${KAFKA_HARNESS_CACHE:-${XDG_CACHE_HOME:-~/.cache}/kafka-harness}/kafka-<version>/libs`.
pub(crate) fn default_libs_dir() -> PathBuf {
    let cache = std::env::var_os("KAFKA_HARNESS_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kafka-harness"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kafka-harness")))
        .unwrap_or_else(|| PathBuf::from("/tmp/kafka-harness-cache"));
    cache.join(format!("kafka-{KAFKA_VERSION}")).join("libs")
}

/// Whether `dir` holds a Kafka broker classpath and a `java` is on PATH.
pub(crate) fn check_libs(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let has_core = entries
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"));
    if !has_core {
        return Err(format!("no kafka_2.13-*.jar in {}", dir.display()));
    }
    match Command::new(java())
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`java -version` exited with {s}")),
        Err(e) => Err(format!("no java: {e}")),
    }
}

fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .map(|h| PathBuf::from(h).join("bin/java"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("java"))
}

struct Broker {
    properties: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

pub(crate) struct Local {
    libs: PathBuf,
    /// [`ClusterConfig::broker_jvm_opts`], split at whitespace.
    jvm_opts: Vec<String>,
    dir: Mutex<Option<tempfile::TempDir>>,
    brokers: Mutex<Vec<Broker>>,
    bootstrap: String,
    link: LinkProxy,
}

/// A port the OS says is free now. Pinned for the cluster's life so restarts keep addresses.
fn free_port() -> ClusterResult<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| ClusterError::Process {
        during: "finding a free port".into(),
        source: e,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ClusterError::Process {
            during: "finding a free port".into(),
            source: e,
        })
}

/// Remove data directories of local clusters whose owner process is gone.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("kafka-harness-local-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Local {
    pub(crate) fn start(config: &ClusterConfig, n: usize) -> ClusterResult<Self> {
        check_libs(&config.kafka_libs).map_err(|reason| ClusterError::NoKafkaJars {
            version: KAFKA_VERSION.into(),
            dir: config.kafka_libs.display().to_string(),
            reason,
        })?;
        remove_leftovers();
        let dir = tempfile::Builder::new()
            .prefix(&format!("kafka-harness-local-{}-", std::process::id()))
            .tempdir()
            .map_err(|e| ClusterError::Process {
                during: "creating the data directory".into(),
                source: e,
            })?;
        let client_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<ClusterResult<_>>()?;
        let controller_ports: Vec<u16> =
            (0..n).map(|_| free_port()).collect::<ClusterResult<_>>()?;
        // The worker's links: a harness proxy per broker, advertised on `PROXIED`.
        let link = LinkProxy::bind(n)?;
        let proxied_ports: Vec<u16> = (0..n).map(|_| free_port()).collect::<ClusterResult<_>>()?;
        let voters = controller_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let id = cluster_id();
        let log4j = dir.path().join("log4j2.properties");
        write(&log4j, LOG4J2)?;
        let mut brokers = Vec::new();
        let mut formats = Vec::new();
        for i in 0..n {
            let mut p = String::new();
            let node = i + 1;
            let _ = writeln!(p, "node.id={node}");
            let _ = writeln!(p, "process.roles=broker,controller");
            let _ = writeln!(p, "controller.quorum.voters={voters}");
            let _ = writeln!(
                p,
                "listeners=PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{},PROXIED://127.0.0.1:{}",
                client_ports[i], controller_ports[i], proxied_ports[i]
            );
            let _ = writeln!(
                p,
                "advertised.listeners=PLAINTEXT://127.0.0.1:{},PROXIED://127.0.0.1:{}",
                client_ports[i],
                link.ports()[i]
            );
            let _ = writeln!(
                p,
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT"
            );
            let _ = writeln!(p, "controller.listener.names=CONTROLLER");
            let _ = writeln!(p, "inter.broker.listener.name=PLAINTEXT");
            let _ = writeln!(
                p,
                "log.dirs={}",
                dir.path().join(format!("data-{node}")).display()
            );
            for (k, v) in broker_properties(n) {
                let _ = writeln!(p, "{k}={v}");
            }
            let properties = dir.path().join(format!("server-{node}.properties"));
            write(&properties, &p)?;
            let log = dir.path().join(format!("broker-{node}.log"));
            // Formatting runs a JVM per broker: do them side by side.
            let mut cmd = Command::new(java());
            cmd.args(config.broker_jvm_opts.split_whitespace())
                .arg("-cp")
                .arg(classpath(&config.kafka_libs))
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .args([
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    &id,
                    "-c",
                ])
                .arg(&properties)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let child = spawn_tied(cmd).map_err(|e| ClusterError::Process {
                during: "formatting storage".into(),
                source: e,
            })?;
            formats.push(child);
            brokers.push(Broker {
                properties,
                log,
                child: None,
            });
        }
        for child in formats {
            let out = child
                .wait_with_output()
                .map_err(|e| ClusterError::Process {
                    during: "formatting storage".into(),
                    source: e,
                })?;
            if !out.status.success() {
                return Err(ClusterError::Process {
                    during: "formatting storage".into(),
                    source: std::io::Error::other(format!(
                        "StorageTool exited {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                });
            }
        }
        let bootstrap = client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let upstreams: Vec<std::net::SocketAddr> = proxied_ports
            .iter()
            .map(|p| std::net::SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        link.start(&upstreams)?;
        let local = Local {
            libs: config.kafka_libs.clone(),
            jvm_opts: config
                .broker_jvm_opts
                .split_whitespace()
                .map(str::to_string)
                .collect(),
            dir: Mutex::new(Some(dir)),
            brokers: Mutex::new(brokers),
            bootstrap,
            link,
        };
        for i in 0..n {
            local.start(i)?;
        }
        Ok(local)
    }

    fn with_broker<T>(
        &self,
        i: usize,
        f: impl FnOnce(&mut Broker) -> ClusterResult<T>,
    ) -> ClusterResult<T> {
        let mut brokers = self.brokers.lock().unwrap_or_else(|p| p.into_inner());
        let count = brokers.len();
        let b = brokers
            .get_mut(i)
            .ok_or(ClusterError::NoSuchBroker { index: i, count })?;
        f(b)
    }

    fn signal(&self, i: usize, sig: libc::c_int, action: &str) -> ClusterResult<()> {
        self.with_broker(i, |b| {
            let Some(child) = b.child.as_ref() else {
                return Err(ClusterError::Process {
                    during: format!("{action} broker {i}"),
                    source: std::io::Error::other("broker is not running"),
                });
            };
            // SAFETY: plain kill(2) on our own child's pid.
            if unsafe { libc::kill(child.id() as libc::pid_t, sig) } != 0 {
                return Err(ClusterError::Process {
                    during: format!("{action} broker {i}"),
                    source: std::io::Error::last_os_error(),
                });
            }
            Ok(())
        })
    }
}

fn classpath(libs: &Path) -> String {
    format!("{}/*", libs.display())
}

fn write(path: &Path, text: &str) -> ClusterResult<()> {
    std::fs::write(path, text).map_err(|e| ClusterError::Process {
        during: format!("writing {}", path.display()),
        source: e,
    })
}

const LOG4J2: &str = "\
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
";

impl Backend for Local {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }
    fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }
    fn link(&self) -> Option<&LinkProxy> {
        Some(&self.link)
    }
    fn kill(&self, i: usize) -> ClusterResult<()> {
        self.with_broker(i, |b| {
            if let Some(mut child) = b.child.take() {
                // Child::kill is SIGKILL: no controlled shutdown, no flush.
                let _ = child.kill();
                let _ = child.wait();
            }
            Ok(())
        })
    }
    fn start(&self, i: usize) -> ClusterResult<()> {
        self.kill(i)?;
        let libs = self.libs.clone();
        let log4j = self
            .dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|d| d.path().join("log4j2.properties"))
            .ok_or_else(|| ClusterError::Process {
                during: "restarting a broker".into(),
                source: std::io::Error::other("cluster was shut down"),
            })?;
        self.with_broker(i, |b| {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&b.log)
                .map_err(|e| ClusterError::Process {
                    during: "opening the broker log".into(),
                    source: e,
                })?;
            let log2 = log.try_clone().map_err(|e| ClusterError::Process {
                during: "opening the broker log".into(),
                source: e,
            })?;
            let mut cmd = Command::new(java());
            cmd.args(["-Xms128m", "-Xmx512m"])
                .args(&self.jvm_opts)
                .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
                .arg("-cp")
                .arg(classpath(&libs))
                .arg("kafka.Kafka")
                .arg(&b.properties)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2);
            let child = spawn_tied(cmd).map_err(|e| ClusterError::Process {
                during: format!("starting broker {i}"),
                source: e,
            })?;
            b.child = Some(child);
            Ok(())
        })
    }
    fn pause(&self, i: usize) -> ClusterResult<()> {
        self.signal(i, libc::SIGSTOP, "pausing")
    }
    fn resume(&self, i: usize) -> ClusterResult<()> {
        self.signal(i, libc::SIGCONT, "resuming")
    }
    fn shutdown(&self) -> ClusterResult<()> {
        let n = self.brokers.lock().unwrap_or_else(|p| p.into_inner()).len();
        for i in 0..n {
            // A paused JVM ignores nothing after SIGKILL, but resume first so wait() returns promptly.
            let _ = self.signal(i, libc::SIGCONT, "resuming");
            self.kill(i)?;
        }
        if let Some(dir) = self.dir.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = dir.close();
        }
        Ok(())
    }
}

//! A sink in the user's own Postgres tables, written by the user's own code.
//!
//! The harness starts one throwaway Postgres server per test process (`initdb` into a temp
//! directory, `postgres` on a free loopback port, killed with the process), gives every case a
//! schema of its own set up with the user's DDL, hands the worker a connection string whose
//! `search_path` is that schema, and after the run reads the user's table back with the
//! user's query. The consumer writes with its own client (tokio-postgres, sqlx, …) exactly as
//! in production.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{ReadBackContext, Sink, SinkError, SinkFactory, SinkReadBack, Stamp};
use crate::trace::{MessageRef, SinkSemantics};
use crate::worker::WorkerCtx;
use crate::Error;

/// The file in the case directory that holds the case's connection string.
const URL_FILE: &str = "postgres.url";
/// How long a fresh server may take to accept connections.
const READY_BOUND: Duration = Duration::from_secs(30);

/// A sink described by the user's schema and read-back query, in a real Postgres.
///
/// - `setup`: DDL run once per case, in the case's own schema (e.g. `CREATE TABLE orders …`).
/// - `read_back`: a query returning one row per effect that landed, as `(key text, id bigint)`:
///   the business key and the workload message id the row stands for (e.g.
///   `SELECT customer, order_id FROM orders`).
///
/// `S*` — the state the rows must equal — is "each input exactly once" by default (every
/// message id once: an idempotent upsert or insert-if-absent keeps it, a plain insert
/// duplicates under redelivery), or "the last message per key" with
/// [`PostgresSink::last_per_key`]. Every row also counts as the effect of its id being
/// applied, so a lost message is reported as Lost.
///
/// ```no_run
/// use kafka_harness::sink::PostgresSink;
/// use kafka_harness::{Guarantee, Harness};
///
/// let sink = PostgresSink::new(
///     "CREATE TABLE orders (order_id bigint PRIMARY KEY, customer text NOT NULL)",
///     "SELECT customer, order_id FROM orders",
/// );
/// let harness = Harness::new(Guarantee::EffectivelyOnce).sink(sink);
/// // In the worker: tokio_postgres::connect(&PostgresSink::connection_string(&ctx)?, NoTls)
/// # let _ = harness;
/// ```
#[derive(Debug, Clone)]
pub struct PostgresSink {
    setup: String,
    read_back: String,
    semantics: SinkSemantics,
}

impl PostgresSink {
    /// A sink of the user's `setup` DDL and `read_back` query (see the type's docs).
    pub fn new(setup: &str, read_back: &str) -> Self {
        PostgresSink {
            setup: setup.to_string(),
            read_back: read_back.to_string(),
            semantics: SinkSemantics::Append,
        }
    }

    /// Judge the final rows against "the last message per key" instead of "each input once".
    pub fn last_per_key(mut self) -> Self {
        self.semantics = SinkSemantics::Upsert;
        self
    }

    /// The connection string for this case's schema, for the worker's own client
    /// (`tokio_postgres::connect(&url, NoTls)`, `sqlx::PgPool::connect(&url)` after
    /// [`PostgresSink::connection_url`]).
    pub fn connection_string(ctx: &WorkerCtx) -> Result<String, SinkError> {
        let path = ctx.case_dir().join(URL_FILE);
        std::fs::read_to_string(&path).map_err(|e| {
            SinkError::Storage(format!(
                "{}: {e} (is the harness's sink a PostgresSink?)",
                path.display()
            ))
        })
    }

    /// The same as a `postgres://` URL (what sqlx takes).
    pub fn connection_url(ctx: &WorkerCtx) -> Result<String, SinkError> {
        let kv = Self::connection_string(ctx)?;
        let get = |k: &str| {
            kv.split_whitespace()
                .find_map(|p| p.strip_prefix(&format!("{k}=")))
                .unwrap_or_default()
                .to_string()
        };
        Ok(format!(
            "postgres://{}@{}:{}/{}?options=-c%20search_path%3D{}",
            get("user"),
            get("host"),
            get("port"),
            get("dbname"),
            schema_from(&kv)
        ))
    }
}

fn schema_from(kv: &str) -> String {
    kv.split("search_path=")
        .nth(1)
        .map(|s| s.trim_end_matches('\'').trim().to_string())
        .unwrap_or_default()
}

/// The case's schema name: the case directory's name, lowercased, `[a-z0-9_]` only.
fn schema_of(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let clean: String = base
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("case_{clean}")
}

fn sql_err(during: &str, e: postgres::Error) -> Error {
    Error::Sink(format!("postgres ({during}): {e}"))
}

impl SinkFactory for PostgresSink {
    fn name(&self) -> &str {
        "postgres"
    }

    fn semantics(&self) -> SinkSemantics {
        self.semantics
    }

    fn prepare(&self, dir: &Path) -> crate::Result<()> {
        let server = Server::shared()?;
        let schema = schema_of(dir);
        let mut client = server.connect()?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema}; {}",
                self.setup
            ))
            .map_err(|e| sql_err("running the setup DDL", e))?;
        let url = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres options='-c search_path={schema}'",
            server.port
        );
        let path = dir.join(URL_FILE);
        std::fs::write(&path, url).map_err(|e| Error::io("writing", &path, e))
    }

    fn open(&self, _dir: &Path) -> Result<Box<dyn Sink>, SinkError> {
        Err(SinkError::Storage(
            "a PostgresSink is written by the consumer's own client: connect with \
             PostgresSink::connection_string(&ctx) instead of ctx.sink()"
                .into(),
        ))
    }

    fn read_back(&self, ctx: &ReadBackContext<'_>) -> crate::Result<SinkReadBack> {
        let server = Server::shared()?;
        let schema = schema_of(ctx.dir);
        let mut client = server.connect()?;
        client
            .batch_execute(&format!("SET search_path TO {schema}"))
            .map_err(|e| sql_err("selecting the case schema", e))?;
        let rows = client
            .query(&self.read_back, &[])
            .map_err(|e| sql_err("running the read-back query", e))?;
        let mut state = Vec::with_capacity(rows.len());
        for row in rows {
            let key: String = row
                .try_get(0)
                .map_err(|e| sql_err("reading column 0 (key text)", e))?;
            let id: i64 = row
                .try_get(1)
                .map_err(|e| sql_err("reading column 1 (id bigint)", e))?;
            state.push((key, id as u64));
        }
        let _ = client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE"));
        // Rows carry no time or incarnation: they count as applied by the end of the case.
        let applied = state
            .iter()
            .map(|r| {
                (
                    Stamp {
                        inc: 0,
                        at_us: u64::MAX,
                    },
                    MessageRef {
                        id: r.1,
                        partition: -1,
                        offset: -1,
                    },
                )
            })
            .collect();
        state.sort();
        Ok(SinkReadBack {
            applied,
            state: Some(state),
            output: None,
        })
    }
}

/// The test process's Postgres server.
struct Server {
    port: u16,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();
static CHILD: Mutex<Option<(Child, PathBuf)>> = Mutex::new(None);

impl Server {
    fn shared() -> crate::Result<&'static Server> {
        SERVER
            .get_or_init(|| Server::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Error::Sink(e.clone()))
    }

    fn connect(&self) -> crate::Result<postgres::Client> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(5))
            .connect(postgres::NoTls)
            .map_err(|e| sql_err("connecting", e))
    }

    fn start() -> crate::Result<Server> {
        let bin = bindir()?;
        let dir = tempfile::Builder::new()
            .prefix("kafka-harness-postgres-")
            .tempdir()
            .map_err(|e| Error::io("creating", std::env::temp_dir(), e))?
            .keep();
        let data = dir.join("data");
        // Postgres refuses to run as root: as root, run it as the `postgres` user.
        let owner = run_as()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| Error::io("handing to the postgres user", &dir, e))?;
        }
        let mut initdb = std::process::Command::new(bin.join("initdb"));
        initdb
            .args([
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
            ])
            .args(["--no-sync", "-E", "UTF8", "--locale", "C"]);
        as_owner(&mut initdb, owner);
        let out = initdb
            .output()
            .map_err(|e| Error::io("running", bin.join("initdb"), e))?;
        if !out.status.success() {
            return Err(Error::Sink(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Error::io("finding a free port", "127.0.0.1", e))?;
        let mut cmd = std::process::Command::new(bin.join("postgres"));
        cmd.args(["-D", &data.to_string_lossy(), "-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("unix_socket_directories={}", dir.display())])
            // A worker's SIGKILL is what is tested, not the database's durability.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        as_owner(&mut cmd, owner);
        let child = crate::cluster::spawn_tied(cmd)
            .map_err(|e| Error::io("starting", bin.join("postgres"), e))?;
        *CHILD.lock().unwrap_or_else(|p| p.into_inner()) = Some((child, dir));
        crate::cluster::at_exit(stop);
        let server = Server { port };
        let started = Instant::now();
        loop {
            match server.connect() {
                Ok(_) => return Ok(server),
                Err(e) if started.elapsed() > READY_BOUND => {
                    return Err(Error::Sink(format!(
                        "postgres on port {port} not ready after {READY_BOUND:?}: {e}"
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// At exit: kill the server and remove its directory.
fn stop() {
    if let Some((mut child, dir)) = CHILD.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn as_owner(cmd: &mut std::process::Command, owner: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
}

/// `Some((uid, gid))` of the `postgres` user when running as root.
fn run_as() -> crate::Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| Error::io("reading", "/etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres") && f.len() > 3)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| {
            Error::Sink(
                "running as root and there is no `postgres` user to run the server as \
                 (install Debian's postgresql, or run ci/setup)"
                    .into(),
            )
        })
}

/// Where `initdb` and `postgres` are: `KAFKA_HARNESS_PG_BIN`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bindir() -> crate::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KAFKA_HARNESS_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).ok_or_else(|| {
        Error::Sink(
            "no Postgres server binaries: install Debian's `postgresql` (ci/setup does) or set \
             KAFKA_HARNESS_PG_BIN to the directory holding initdb and postgres"
                .into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_schema_is_a_plain_identifier() {
        assert_eq!(
            schema_of(Path::new("/tmp/kafka-harness-case-AbC9.x")),
            "case_kafka_harness_case_abc9_x"
        );
    }

    #[test]
    fn the_url_form_keeps_the_schema() {
        let kv = "host=127.0.0.1 port=5999 user=postgres dbname=postgres options='-c search_path=case_x'";
        assert_eq!(schema_from(kv), "case_x");
    }
}

//! The orchestrator's side of a worker: start the process, watch it, kill it.

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::spec::{WorkerSpec, ENV_SPEC};
use crate::trace::Exit;
use crate::{Error, Result};

/// How to start a worker process.
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    /// Re-execute this libtest binary filtered to exactly one test.
    Test { test: String },
    /// Re-execute this (non-test) binary with the same arguments.
    Binary { args: Vec<String> },
}

impl Launch {
    /// Inside a libtest test the thread is named after the test; elsewhere it is `main`.
    pub(crate) fn detect() -> Launch {
        match std::thread::current().name() {
            Some(name) if name != "main" => Launch::Test {
                test: name.to_string(),
            },
            _ => Launch::Binary {
                args: std::env::args().skip(1).collect(),
            },
        }
    }

    /// The harness name a worker is looked up by.
    pub(crate) fn name(&self) -> String {
        match self {
            Launch::Test { test } => test.clone(),
            Launch::Binary { .. } => "main".into(),
        }
    }
}

/// The file this process runs, to start a worker from. On Linux `/proc/self/exe`: it opens
/// the running executable itself, so a `cargo build` that replaces the file while a check runs
/// (the old one is unlinked: `current_exe()` then names a path that is gone) neither breaks the
/// check nor mixes two builds in one case.
fn own_executable() -> Result<std::path::PathBuf> {
    let proc_exe = std::path::Path::new("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe()
        .map_err(|e| Error::Worker(format!("cannot find the current executable: {e}")))
}

pub(crate) struct WorkerProcess {
    child: Child,
    pub(crate) started: Instant,
}

impl WorkerProcess {
    pub(crate) fn spawn(spec: &WorkerSpec, launch: &Launch) -> Result<WorkerProcess> {
        let spec_path = spec.write()?;
        let mut cmd = Command::new(own_executable()?);
        match launch {
            Launch::Test { test } => {
                cmd.args([
                    test.as_str(),
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                    "-q",
                ]);
            }
            Launch::Binary { args } => {
                cmd.args(args);
            }
        }
        let out_path = spec.case_dir.join(format!("worker-{}.log", spec.inc));
        let out = std::fs::File::create(&out_path)
            .map_err(|e| Error::io("creating the worker log", &out_path, e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io("creating the worker log", &out_path, e))?;
        // The test body runs again in a worker up to the harness call, which never returns
        // there (the worker exits or is killed: no destructor runs), so a temporary directory
        // the body made first would outlive the case. A worker's TMPDIR is a directory of its
        // case's, removed with the case.
        let tmp = spec.case_dir.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| Error::io("creating the worker's TMPDIR", &tmp, e))?;
        cmd.env(ENV_SPEC, &spec_path)
            .env("TMPDIR", &tmp)
            .env_remove("RUST_TEST_THREADS")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = crate::cluster::spawn_tied(cmd)
            .map_err(|e| Error::Worker(format!("spawning the worker: {e}")))?;
        Ok(WorkerProcess {
            child,
            started: Instant::now(),
        })
    }

    /// `Some(exit)` once the process has ended.
    pub(crate) fn try_exit(&mut self) -> Result<Option<Exit>> {
        match self.child.try_wait() {
            Ok(Some(status)) => Ok(Some(match (status.code(), status.signal()) {
                (Some(0), _) => Exit::Returned,
                (Some(code), _) => Exit::Code { code },
                (None, Some(signal)) => Exit::Signal { signal },
                (None, None) => Exit::Code { code: -1 },
            })),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::Worker(format!(
                "waiting for worker {}: {e}",
                self.child.id()
            ))),
        }
    }

    /// SIGCONT: continue a worker that stopped itself at a `pause-at` point.
    pub(crate) fn resume(&self) {
        // SAFETY: kill(2) on a child we have not reaped (its pid cannot be reused yet).
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT);
        }
    }

    /// Whether the process is stopped (SIGSTOP), from `/proc/<pid>/stat`.
    pub(crate) fn is_stopped(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return false;
        };
        // `pid (comm) state …`: comm may hold spaces and parentheses, the state follows the last `)`.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "T")
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) -> Result<Exit> {
        let _ = self.child.kill();
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(exit);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for WorkerProcess {
    /// A worker whose handle is dropped while it runs (its case abandoned on an error or
    /// cancelled) is killed and reaped, not left to outlive its case.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

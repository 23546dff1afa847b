//! Nothing the harness starts may outlive the process that started it.
//!
//! - JVM brokers are spawned from one immortal thread with `PR_SET_PDEATHSIG=SIGKILL`, so the
//!   kernel kills them when the test process dies, even by SIGKILL. (The signal follows the
//!   *thread* that forked, which is why that thread never exits.)
//! - Containers carry owner labels; `at_exit` removes them on normal exit, and the next start
//!   removes those whose owner process is gone (a killed run).

use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// Label keys put on every container and network the harness creates.
pub(crate) const LABEL_OWNER_PID: &str = "kafka-harness.owner-pid";
pub(crate) const LABEL_OWNER_HOST: &str = "kafka-harness.owner-host";

type Job = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("kafka-harness-spawner".into())
            .spawn(move || {
                // Lives as long as the process: children forked here die with it.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the harness spawner thread");
        Mutex::new(tx)
    })
}

/// Spawn `cmd` so that it is SIGKILLed when this process dies.
pub(crate) fn spawn_tied(mut cmd: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("spawner thread gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("spawner thread gone"))?
}

/// Whether process `pid` on this host is alive.
pub(crate) fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This host's name, to tell our leftovers from another host's on a shared Docker engine.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

static EXIT_HOOKS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());

extern "C" fn run_exit_hooks() {
    let hooks = match EXIT_HOOKS.lock() {
        Ok(mut g) => std::mem::take(&mut *g),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    for hook in hooks {
        hook();
    }
}

/// Run `hook` when the process exits normally (libtest ends with `exit`, which runs these).
pub(crate) fn at_exit(hook: fn()) {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe {
            libc::atexit(run_exit_hooks);
        }
    });
    if let Ok(mut g) = EXIT_HOOKS.lock() {
        g.push(hook);
    }
}

#!/usr/bin/env python3
"""Run the workspace's built test binaries on a few runners at once (ci/test's test step).

Why: every broker-bound suite serializes its own cases (one cluster, one fixture, one pause at
a time) and leaves the 2 cores partly idle while it waits for brokers, so `cargo test
--workspace`, which runs binary after binary, took ≈1450 s in CI; two fixed lanes took
1000–1180 s for the longer one. Now the jobs — each test binary, and the two fixtures suites
cut in halves by test name — wait in one queue, longest first, and each of `--lanes N`
runners (default 3; env KAFKA_HARNESS_CI_LANES) takes the next one when it is free (longest
processing time first: the lanes end close together without a hand-balanced table).

Input: the JSON lines of `cargo test --workspace --no-run --message-format=json` on stdin, read
while cargo writes them: a binary's jobs are queued as soon as cargo says it is built, so the
first suites (and their brokers' start) run beside the rest of the build; cargo's
`build-finished` message with `success: false` stops the queue.
Each binary runs as `cargo test` would run it (working directory and CARGO_MANIFEST_DIR = its
package's directory, CARGO_PKG_NAME its package), its output in target/ci-logs/<job>.log; a
failing job's output from libtest's `failures:` section on (or its last 200 lines) is printed.
A binary the weight table does not name runs too (at a middling weight): a new test binary is
never skipped. Extra runs (the fixtures suite on the embedded mock) are listed in EXTRA. The
CPU's busy share while the jobs ran is sampled from /proc/stat (target/ci-logs/cpu.log).

Spare runners (`--spare N`, env KAFKA_HARNESS_CI_SPARE_LANES, default 1) take a job only while
the CPU is mostly idle (the last 10 s sample under SPARE_BELOW % busy, niced processes not
counted): how much CPU the suites leave idle depends on the machine (37 % busy on one run's
machine, 79 % on another's with the same commit), and a runner more helps only on the first kind.
Exit status: 0 when every job passed.
"""

import json
import os
import subprocess
import sys
import threading
import time

# Seconds each job took in CI (three runners and a spare, 2026-12-02, ade34be; the split
# suites as whole binaries): only the queue's order comes from them, so drift costs balance,
# never coverage. A split binary's parts get a share each. How long a job takes depends on the
# machine: the same commit's jobs took 10–70 % longer on a day the machine was CPU-bound.
WEIGHT = {
    "kafka-harness-properties:fixtures": 573,
    "embedded:fixtures": 486,
    "kafka-harness-properties:brokers": 309,
    "kafka-harness:cluster": 169,
    "kafka-harness-properties:oracle": 83,
    "kafka-harness-properties:blind": 70,
    "kafka-harness-properties:blind2": 53,
    "kafka-harness-properties:blind3": 60,
    "kafka-harness-properties:pauses": 45,
    "kafka-harness:offsets": 35,
    "kafka-harness:engine": 30,
    "kafka-harness-properties:reports": 23,
    "kafka-harness-properties:unchanged": 10,
}
# A binary the table does not name: somewhere in the middle of the queue.
UNKNOWN_WEIGHT = 30
# Binaries cut into parts by test name (each part a process of its own, with its own cluster):
# the two fixtures suites are more than half the work, too long for one runner. The embedded
# suite's parts were uneven in halves (201 and 285 s: one holds the slow wedged fixture); an
# embedded mock costs nothing to start, so it is cut in three.
SPLIT = {
    "kafka-harness-properties:fixtures": 2,
    "embedded:fixtures": 3,
}

# Runs of a binary beyond its plain run: key -> (binary key, extra environment, log name).
EXTRA = {
    "embedded:fixtures": (
        "kafka-harness-properties:fixtures",
        {
            "KAFKA_HARNESS_BACKEND": "embedded",
            "KAFKA_HARNESS_REPORT_DIR": "{target}/kafka-harness/embedded",
            "KAFKA_HARNESS_FAILURE_DIR": "{target}/kafka-harness/embedded/failures",
        },
        "fixtures-embedded",
    ),
}

LOCK = threading.Lock()

# A spare runner takes its next job only when the CPU was less busy than this (percent, niced
# processes not counted) over the last sample.
SPARE_BELOW = 60


def say(line):
    with LOCK:
        print(line, flush=True)


def package_name(package_id):
    """The package's name from cargo's package id: "path+file:///dir/name#0.1.0" (the name is
    the directory's), "path+file:///dir#name@0.1.0", or "name 0.1.0 (path+file://...)"."""
    if "#" in package_id:
        url, fragment = package_id.split("#", 1)
        if "@" in fragment:
            return fragment.split("@")[0]
        return url.rstrip("/").split("/")[-1]
    return package_id.split()[0]


def message(line):
    """One of cargo's JSON messages, or None for a line that is not one."""
    line = line.strip()
    return json.loads(line) if line.startswith("{") else None


def binary(m):
    """(package:target, (executable, package dir, package)) when `m` is cargo's message for a
    test binary it built; None for any other message."""
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        return None
    if not m.get("profile", {}).get("test"):
        return None
    target = m["target"]
    name = package_name(m["package_id"])
    kind = "lib" if "lib" in target["kind"] else target["name"]
    return f"{name}:{kind}", (m["executable"], os.path.dirname(m["manifest_path"]), name)


class Queue:
    """The jobs not started yet, longest first, filled while cargo still builds: a runner takes
    the longest job whose binary exists, and waits while the build may bring more."""

    def __init__(self, expected):
        self.jobs, self.done = [], False
        # Weight of each job expected from a binary not built yet (the WEIGHT table): a
        # runner does not start a job while a longer one is still being built (the build's
        # binaries come within ≈40 s of each other; longest first is what ends the runners
        # together).
        self.expected = dict(expected)
        self.cond = threading.Condition(LOCK)

    def built(self, keys):
        with self.cond:
            for k in keys:
                self.expected.pop(k, None)
            self.cond.notify_all()

    def _ready(self):
        if not self.jobs:
            return False
        longest_coming = max(self.expected.values(), default=0)
        return self.done or self.jobs[0].weight >= longest_coming

    def add(self, jobs):
        with self.cond:
            self.jobs += jobs
            # Longest first; a tie keeps the order the jobs came in.
            self.jobs.sort(key=lambda j: -j.weight)
            self.cond.notify_all()

    def close(self, failed=False):
        with self.cond:
            self.done = True
            self.expected.clear()
            if failed:
                self.jobs.clear()
            self.cond.notify_all()

    def take(self, wait=True):
        """The next job; None when there is none and none can come (or, with `wait` false,
        none right now)."""
        with self.cond:
            while not self._ready() and not (self.done and not self.jobs) and wait:
                self.cond.wait()
            return self.jobs.pop(0) if self._ready() else None

    def finished(self):
        with self.cond:
            return self.done and not self.jobs


def environment(cwd, package, env_extra, target):
    env = dict(os.environ)
    # What `cargo test` sets when it runs a test binary (the harness's replay commands name
    # the package from CARGO_PKG_NAME).
    env["CARGO_MANIFEST_DIR"] = cwd
    env["CARGO_PKG_NAME"] = package
    for k, v in env_extra.items():
        env[k] = v.format(target=target)
        if k.endswith("_DIR"):
            os.makedirs(env[k], exist_ok=True)
    return env


def test_names(exe, cwd, env):
    """The binary's tests, as libtest lists them (`--list --format terse`: "name: test")."""
    out = subprocess.run(
        [exe, "--list", "--format", "terse"], cwd=cwd, env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"{exe} --list failed (exit {out.returncode}): {out.stderr[-2000:]}")
    return [l[: -len(": test")] for l in out.stdout.splitlines() if l.endswith(": test")]


class Job:
    def __init__(self, key, exe, cwd, env, log_name, weight, tests=None):
        self.key, self.exe, self.cwd, self.env = key, exe, cwd, env
        self.log_name, self.weight, self.tests = log_name, weight, tests


def jobs_for(key, found, target):
    """The jobs of one lane-table key: one, or SPLIT[key] parts of its tests."""
    if key in EXTRA:
        base, env_extra, log_name = EXTRA[key]
    else:
        base, env_extra, log_name = key, {}, key.replace(":", "-")
    exe, cwd, package = found[base]
    env = environment(cwd, package, env_extra, target)
    weight = WEIGHT.get(key, UNKNOWN_WEIGHT)
    parts = SPLIT.get(key, 1)
    if parts == 1:
        return [Job(key, exe, cwd, env, log_name, weight)]
    names = test_names(exe, cwd, env)
    # Every part gets every parts-th test, in libtest's order; a test the listing shows is in
    # exactly one part.
    return [
        Job(f"{key}[{i + 1}/{parts}]", exe, cwd, env, f"{log_name}-{i + 1}", weight / parts,
            names[i::parts])
        for i in range(parts)
        if names[i::parts]
    ]


def run(job, lane_name, logs, results):
    log = os.path.join(logs, f"{job.log_name}.log")
    say(f"    [{lane_name}] {job.key}: started ({os.path.relpath(job.exe)})")
    t = time.time()
    # --show-output: the passing tests' output (their MEASURE lines) stays in the log too.
    args = [job.exe, "--show-output"]
    if job.tests is not None:
        args += ["--exact"] + job.tests
    with open(log, "wb") as f:
        rc = subprocess.call(args, cwd=job.cwd, env=job.env, stdout=f, stderr=subprocess.STDOUT)
    secs = time.time() - t
    with open(log, "r", errors="replace") as f:
        text = f.read().splitlines()
    summary = [l for l in text if l.startswith("test result:")]
    status = "ok" if rc == 0 else f"FAILED (exit {rc})"
    say(f"    [{lane_name}] {job.key}: {status} in {secs:.0f} s; {' | '.join(summary) or 'no libtest summary'}")
    if rc != 0:
        # Why it failed, first: a viewer that shows only the head of a long output still sees
        # each panic's message (the lines from "panicked at" to the next blank line).
        for i, l in enumerate(text):
            if " panicked at " in l:
                end = next((j for j in range(i + 1, len(text)) if not text[j].strip()), len(text))
                say(f"    [{lane_name}] {job.key}: " + " / ".join(text[i:min(end, i + 8)]))
        start = next((i for i, l in enumerate(text) if l == "failures:"), max(0, len(text) - 200))
        say(f"---- {job.key}: output from line {start + 1} of {log} ----")
        say("\n".join(text[start:]))
        say(f"---- end of {job.key} ----")
    results.append((job.key, rc, secs))


def lane(name, queue, logs, results, samples=None):
    """Take jobs from the queue until it is empty and the build is over. With `samples` (a
    spare runner), take one only when the latest CPU sample is under SPARE_BELOW % busy."""
    t = time.time()
    ran = []
    while True:
        if samples is not None:
            if queue.finished():
                break
            with LOCK:
                latest = samples[-1] if samples else None
            if latest is None or latest[0] - latest[1] >= SPARE_BELOW:
                time.sleep(5)
                continue
            job = queue.take(wait=False)
            if job is None:
                time.sleep(5)
                continue
        else:
            job = queue.take()
        if job is None:
            break
        ran.append(job.key)
        run(job, name, logs, results)
    say(f"<== lane {name}: {time.time() - t:.0f} s ({', '.join(ran)})")


def cpu_times():
    """(all, idle, niced) jiffies of all cores so far (/proc/stat's first line)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    return sum(fields[:8]), fields[3] + fields[4], fields[1]


def sample_cpu(path, stop, samples):
    """Busy share of all cores every 10 s, until `stop` is set: all of it, and the share of
    processes at a positive nice (clippy and the doc tests beside the tests run at nice 19,
    so busy minus niced is what the tests themselves, the brokers and dockerd used)."""
    last = cpu_times()
    t0 = time.time()
    with open(path, "w") as f:
        f.write("seconds busy% niced%\n")
        while not stop.wait(10):
            now = cpu_times()
            total, idle, niced = (now[i] - last[i] for i in range(3))
            last = now
            if total > 0:
                busy, nice = 100.0 * (total - idle) / total, 100.0 * niced / total
                with LOCK:
                    samples.append((busy, nice))
                f.write(f"{time.time() - t0:.0f} {busy:.0f} {nice:.0f}\n")
                f.flush()


def main():
    target = os.path.abspath(os.environ.get("CARGO_TARGET_DIR", "target"))
    logs = os.path.join(target, "ci-logs")
    os.makedirs(logs, exist_ok=True)
    args = sys.argv[1:]
    lanes = int(os.environ.get("KAFKA_HARNESS_CI_LANES", "3"))
    spare = int(os.environ.get("KAFKA_HARNESS_CI_SPARE_LANES", "1"))
    only = None
    while args:
        if args[0] == "--lanes" and len(args) > 1:
            lanes, args = int(args[1]), args[2:]
        elif args[0] == "--spare" and len(args) > 1:
            spare, args = int(args[1]), args[2:]
        elif args[0] == "--only" and len(args) > 1:
            # `ci/lanes.py --only KEY,KEY < artifacts`: run just those (to try the runner).
            only, args = args[1].split(","), args[2:]
        else:
            print(f"ci/lanes.py: unknown argument {args[0]!r} (use --lanes N, --spare N, --only KEY,KEY)",
                  file=sys.stderr)
            return 2
    # The jobs the WEIGHT table expects, by binary key (a split binary's parts, and the extra
    # runs of a binary, come with it).
    expected = {}
    for key, weight in WEIGHT.items():
        if only is not None and key not in only:
            continue
        base = EXTRA[key][0] if key in EXTRA else key
        expected[base] = max(expected.get(base, 0), weight / SPLIT.get(key, 1))
    queue = Queue(expected)
    found = {}
    problems = []
    t0 = time.time()

    def read_cargo():
        """Queue each test binary's jobs as cargo's message for it arrives (the build goes on
        beside the first jobs: their brokers wait, the compiler uses the CPU they leave)."""
        failed = False
        try:
            for line in sys.stdin:
                m = message(line)
                if m is None:
                    continue
                if m.get("reason") == "build-finished" and m.get("success") is False:
                    failed = True
                    continue
                got = binary(m)
                if got is None:
                    continue
                key, built = got
                found[key] = built
                keys = [key] + sorted(k for k, v in EXTRA.items() if v[0] == key)
                jobs = []
                for k in keys:
                    if only is None or k in only:
                        jobs += jobs_for(k, found, target)
                if jobs:
                    say(f"    queued after {time.time() - t0:.0f} s: "
                        f"{', '.join(j.key for j in jobs)}")
                    queue.add(jobs)
                queue.built([key])
        except Exception as e:  # a broken listing or message: no job may be left out silently
            problems.append(f"reading cargo's output: {e}")
            failed = True
        wanted = set(only) if only is not None else set(EXTRA)
        for k in sorted(wanted):
            base = EXTRA[k][0] if k in EXTRA else k
            if base not in found:
                problems.append(f"{k}: no such test binary was built")
        if not found:
            problems.append("no test binaries in cargo's output")
        if failed:
            problems.append("the build failed: no more jobs are started")
        say(f"    the build is over after {time.time() - t0:.0f} s ({len(found)} test binaries)")
        queue.close(failed=failed)

    say(f"==> jobs on {lanes} runners (and {spare} spare while the CPU is under {SPARE_BELOW} % "
        "busy), each as soon as cargo has built its binary, the longest of those first")
    reader = threading.Thread(target=read_cargo)
    reader.start()
    results = []
    stop, samples = threading.Event(), []
    sampler = threading.Thread(target=sample_cpu, args=(os.path.join(logs, "cpu.log"), stop, samples))
    sampler.start()
    names = "ABCDEFGH"
    threads = [
        threading.Thread(target=lane, args=(names[i % len(names)], queue, logs, results))
        for i in range(max(1, lanes))
    ] + [
        threading.Thread(target=lane, args=(names[(max(1, lanes) + i) % len(names)], queue, logs,
                                            results, samples))
        for i in range(max(0, spare))
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    reader.join()
    stop.set()
    sampler.join()
    if samples:
        busy = sum(b for b, _ in samples) / len(samples)
        nice = sum(n for _, n in samples) / len(samples)
        say(f"    CPU busy while the jobs ran: {busy:.0f} % on average, {busy - nice:.0f} % "
            f"without the niced clippy and doc tests ({len(samples)} samples of 10 s; "
            "target/ci-logs/cpu.log)")
    failed = [k for k, rc, _ in results if rc != 0]
    for key, rc, secs in sorted(results, key=lambda r: -r[2]):
        say(f"    {secs:7.1f} s  {'ok    ' if rc == 0 else 'FAILED'}  {key}")
    for p in problems:
        say(f"ci/lanes.py: {p}")
    if failed:
        say(f"ci/lanes.py: failed: {', '.join(failed)}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Run the workspace's built test binaries in two lanes at once (ci/test's test step).

Why: every broker-backed suite serializes its own cases (one cluster, one fixture, one pause
at a time) and leaves the 2 cores mostly idle while it waits for brokers, so `cargo test
--workspace`, which runs binary after binary, took ≈1450 s in CI. Two lanes — each a list of
binaries run one after another — keep the concurrency at two suites (what CI already ran: the
embedded-mock fixtures suite beside the workspace tests) and balance the lanes' lengths.

Input: the JSON lines of `cargo test --workspace --no-run --message-format=json` on stdin.
Each binary runs as `cargo test` would run it (working directory and CARGO_MANIFEST_DIR = its
package's directory, CARGO_PKG_NAME its package), its output in target/ci-logs/<binary>.log;
a failing binary's output from libtest's `failures:` section on (or its last 200 lines) is
printed. A binary the lane table does not name runs in lane A: a new test binary is never
skipped. Extra runs (the fixtures suite on the embedded mock) are listed in EXTRA. Exit status:
0 when every binary passed.
"""

import json
import os
import subprocess
import sys
import threading
import time

# Lane of each test binary, by "<package>:<target>" (unit tests of a library: "<package>:lib").
# Measured in CI, run one after another (2026-12-02): containers fixtures 502 s, brokers
# 447 s, backend conformance 260 s, embedded fixtures 367 s, pauses 49 s, the rest ≈200 s
# together; in two lanes (same day) each takes 10–30 % longer: lane A 1213 s and lane B 1014 s
# before the oracle moved to lane B and the brokers suite began to share one 3-broker cluster
# (586 → 374 s in its lane), then lane A ≈1000 s and lane B ≈880 s before the engine moved.
# Lane B starts with the suites whose cases race broker timeouts (pauses, then the 3-broker
# faults) while lane A runs its quickest binaries.
LANE_B = [
    "kafka-harness-properties:pauses",
    "kafka-harness-properties:brokers",
    "embedded:fixtures",
    "kafka-harness-properties:oracle",
    "kafka-harness:engine",
]
# Lane A order: the quick binaries first (a broken build of the basics fails fast), then the
# conformance tests, then the containers fixtures suite.
LANE_A_FIRST = [
    "kafka-harness:lib",
    "kafka-harness-fixtures:lib",
    "kafka-harness-cli:kafka-harness",
    "kafka-harness-cli:cli",
    "kafka-harness:selection",
    "kafka-harness:offsets",
    "kafka-harness-properties:reports",
    "kafka-harness-properties:unchanged",
    "kafka-harness:cluster",
]
LANE_A_LAST = ["kafka-harness-properties:fixtures"]

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


def binaries(lines):
    """(package:target) -> (executable, package dir, package) for every test binary cargo built."""
    out = {}
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        m = json.loads(line)
        if m.get("reason") != "compiler-artifact" or not m.get("executable"):
            continue
        if not m.get("profile", {}).get("test"):
            continue
        target = m["target"]
        name = package_name(m["package_id"])
        kind = "lib" if "lib" in target["kind"] else target["name"]
        out[f"{name}:{kind}"] = (m["executable"], os.path.dirname(m["manifest_path"]), name)
    return out


def run(key, exe, cwd, package, env_extra, log_name, logs, target, results):
    env = dict(os.environ)
    # What `cargo test` sets when it runs a test binary (the harness's replay commands name
    # the package from CARGO_PKG_NAME).
    env["CARGO_MANIFEST_DIR"] = cwd
    env["CARGO_PKG_NAME"] = package
    for k, v in env_extra.items():
        env[k] = v.format(target=target)
        if k.endswith("_DIR"):
            os.makedirs(env[k], exist_ok=True)
    log = os.path.join(logs, f"{log_name}.log")
    say(f"    {key}: started ({os.path.relpath(exe)})")
    t = time.time()
    with open(log, "wb") as f:
        # --show-output: the passing tests' output (their MEASURE lines) stays in the log too.
        rc = subprocess.call([exe, "--show-output"], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    secs = time.time() - t
    with open(log, "r", errors="replace") as f:
        text = f.read().splitlines()
    summary = [l for l in text if l.startswith("test result:")]
    status = "ok" if rc == 0 else f"FAILED (exit {rc})"
    say(f"    {key}: {status} in {secs:.0f} s; {' | '.join(summary) or 'no libtest summary'}")
    if rc != 0:
        start = next((i for i, l in enumerate(text) if l == "failures:"), max(0, len(text) - 200))
        say(f"---- {key}: output from line {start + 1} of {log} ----")
        say("\n".join(text[start:]))
        say(f"---- end of {key} ----")
    results.append((key, rc, secs))


def lane(name, keys, found, logs, target, results):
    t = time.time()
    for key in keys:
        if key in EXTRA:
            base, env_extra, log_name = EXTRA[key]
        else:
            base, env_extra, log_name = key, {}, key.replace(":", "-")
        if base not in found:
            say(f"    {key}: no such test binary was built")
            results.append((key, 1, 0.0))
            continue
        exe, cwd, package = found[base]
        run(key, exe, cwd, package, env_extra, log_name, logs, target, results)
    say(f"<== lane {name}: {time.time() - t:.0f} s")


def main():
    target = os.path.abspath(os.environ.get("CARGO_TARGET_DIR", "target"))
    logs = os.path.join(target, "ci-logs")
    os.makedirs(logs, exist_ok=True)
    found = binaries(sys.stdin)
    if not found:
        print("ci/lanes.py: no test binaries in cargo's output", file=sys.stderr)
        return 1
    named = set(LANE_B) | set(LANE_A_FIRST) | set(LANE_A_LAST)
    unnamed = sorted(k for k in found if k not in named and k != EXTRA["embedded:fixtures"][0])
    lane_a = LANE_A_FIRST + unnamed + LANE_A_LAST
    lane_b = list(LANE_B)
    # `ci/lanes.py --only KEY,KEY < artifacts`: run just those (to try the runner itself).
    if len(sys.argv) == 3 and sys.argv[1] == "--only":
        only = sys.argv[2].split(",")
        lane_a = [k for k in lane_a if k in only]
        lane_b = [k for k in lane_b if k in only]
    say(f"==> lane A: {', '.join(lane_a)}")
    say(f"==> lane B: {', '.join(lane_b)}")
    results = []
    threads = [
        threading.Thread(target=lane, args=("A", lane_a, found, logs, target, results)),
        threading.Thread(target=lane, args=("B", lane_b, found, logs, target, results)),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    failed = [k for k, rc, _ in results if rc != 0]
    for key, rc, secs in sorted(results, key=lambda r: -r[2]):
        say(f"    {secs:7.1f} s  {'ok    ' if rc == 0 else 'FAILED'}  {key}")
    if failed:
        say(f"ci/lanes.py: failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

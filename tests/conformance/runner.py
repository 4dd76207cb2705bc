#!/usr/bin/env python3
"""Runs Mosquitto's test/broker suite one test at a time and compares the
results with the expected list (tests/conformance/expected.txt).

Started by tests/conformance/run.sh as an unprivileged user inside private
network, mount and PID namespaces: this process is the namespace's init, so
it reaps orphans, and after every test it kills whatever the test left
running (brokers included) and removes the files the test left behind.

The expected list has one line per test of test/broker/test.py:

    <name> pass
    <name> skip <reason>
    <name> fail <reason>

`fail` marks a known failure of midge: it is reported, and does not fail the
run; if it passes, a note asks to update the list (unless its reason starts
with "flaky", for a test that fails only some of the time). The run fails
when a test listed `pass` fails, or when the suite has a test the list does
not name.
Against another broker (--broker other than midge), the reference, every
test that can run is expected to pass, the deviations of midge included,
except those in REFERENCE_FAILS.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time

# What a test needs from Mosquitto's tree that the source package does not
# build here: a plugin (.so) or a test client compiled from test/broker/c
# or lib/. Each pattern is searched in the test's source.
NEEDS_BUILD = [
    (r"plugins/dynamic-security", "needs the dynamic-security plugin built from Mosquitto's tree"),
    (r"auth_plugin c/", "needs an auth plugin built from Mosquitto's tree (test/broker/c)"),
    (r"\./c/", "needs a test client built from Mosquitto's tree (test/broker/c)"),
    (r"lib/python", "needs a test client built from Mosquitto's tree (lib)"),
]

BASE_PORT = 1888

# Tests whose TLS clients are held to TLS 1.2 (see sitecustomize.py).
CLIENT_TLS12 = {"08-ssl-connect-cert-auth-expired", "08-ssl-connect-cert-auth-revoked"}
HOOKS = os.path.dirname(os.path.abspath(__file__))

# Tests that take longer than the default timeout when they pass, and how
# long they may take (seconds).
SLOW = {
    # Six bridge set-ups, each waiting 10 s twice for a reconnection: about
    # 135 s against Mosquitto.
    "06-bridge-clean-session": 300,
}

# Tests that Mosquitto 2.0.11 itself fails here, with the reason: a run
# against another broker (the reference) reports them without failing.
REFERENCE_FAILS = {
    "06-bridge-b2br-late-connection-retain":
        "Mosquitto 2.0.11 resends the queued messages out of order (upstream's "
        "Makefile for 2.0.11 leaves this test out)",
    "06-bridge-clean-session":
        "flaky: the test waits fixed times (10 s) for bridge reconnections; "
        "on a loaded machine a queued message can arrive before the PUBACK it expects",
}


def parse_suite(broker_dir):
    """The (ports, name) pairs of test.py's list, in order, minus the
    commented-out entries."""
    src = open(os.path.join(broker_dir, "test.py")).read()
    body = src.split("tests = [", 1)[1].split("\n    ]", 1)[0]
    tests = []
    for line in body.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"\((\d+),\s*'\./([^']+)\.py'\),?$", line)
        if not m:
            sys.exit("runner: cannot read test.py line: %r" % line)
        tests.append((int(m.group(1)), m.group(2)))
    return tests


def parse_expected(path):
    expected = {}
    for n, line in enumerate(open(path), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 2 or parts[1] not in ("pass", "fail", "skip"):
            sys.exit("runner: %s:%d: expected '<test> pass|fail|skip [reason]'" % (path, n))
        if parts[1] != "pass" and len(parts) < 3:
            sys.exit("runner: %s:%d: %s needs a reason" % (path, n, parts[1]))
        expected[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return expected


def build_skip(broker_dir, name):
    path = os.path.join(broker_dir, name + ".py")
    if not os.path.exists(path):
        return "not in Debian's source package (listed in test.py, file missing)"
    src = open(path).read()
    for pattern, reason in NEEDS_BUILD:
        if re.search(pattern, src):
            return reason
    return None


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_leftovers():
    """Kills every process of the namespace but this one; returns their
    command lines."""
    me = os.getpid()
    left = []
    for _ in range(50):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]
        alive = []
        for pid in pids:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
                if state == "Z":
                    continue
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                os.kill(pid, signal.SIGKILL)
                alive.append(pid)
                if cmd not in left:
                    left.append(cmd)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        reap()
        if not alive:
            break
        time.sleep(0.05)
    reap()
    return left


def snapshot(top):
    found = set()
    for d, dirs, files in os.walk(top):
        for x in dirs + files:
            found.add(os.path.join(d, x))
    return found


def remove_new(top, before):
    for path in sorted(snapshot(top) - before, key=len, reverse=True):
        if path in before:
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            pass


def clear_tmp(keep):
    for x in os.listdir("/tmp"):
        path = os.path.join("/tmp", x)
        if os.path.realpath(path) == keep or x == "conformance":
            continue
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except OSError:
            pass


def run_one(broker_dir, name, nports, timeout, log_path):
    ports = [str(BASE_PORT + i) for i in range(nports)]
    t0 = time.monotonic()
    env = dict(os.environ, PYTHONPATH=HOOKS)
    if name in CLIENT_TLS12:
        env["CONFORMANCE_CLIENT_TLS_MAX"] = "1.2"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "./%s.py" % name] + ports,
            cwd=broker_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            rc = proc.wait()
            timed_out = True
    return rc, timed_out, time.monotonic() - t0


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", required=True)
    ap.add_argument("--expected", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--broker", default="midge")
    ap.add_argument("--shown-results", default=None, help="the results folder as the user sees it")
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--only", default="", help="regular expression: run only the tests it matches")
    args = ap.parse_args()

    broker_dir = os.path.abspath(os.path.join(args.tree, "test", "broker"))
    results = os.path.abspath(args.results)
    os.makedirs(results, exist_ok=True)
    tests = parse_suite(broker_dir)
    expected = parse_expected(args.expected)
    reference = args.broker != "midge"
    shown = args.shown_results or results
    only = re.compile(args.only) if args.only else None

    counts = {"pass": 0, "fail": 0, "skip": 0}
    problems = []  # make the run fail
    notes = []  # do not
    summary = []
    t_start = time.monotonic()
    width = max(len(n) for _, n in tests)
    before = snapshot(os.path.abspath(args.tree))

    for nports, name in tests:
        if only and not only.search(name):
            continue
        want, why = expected.get(name, (None, ""))
        if want is None:
            problems.append("%s: not in expected.txt (add it)" % name)
        skip = build_skip(broker_dir, name)
        if skip is None and want == "skip" and not reference:
            skip = why
        if skip is not None:
            counts["skip"] += 1
            print("%-*s  skip  (%s)" % (width, name, skip), flush=True)
            summary.append("%s\tskip\t0\t%s" % (name, skip))
            if want not in (None, "skip"):
                problems.append("%s: skipped (%s) but listed %s" % (name, skip, want))
            continue

        log_path = os.path.join(results, name + ".log")
        timeout = max(args.timeout, SLOW.get(name, 0))
        rc, timed_out, secs = run_one(broker_dir, name, nports, timeout, log_path)
        left = kill_leftovers()
        remove_new(os.path.abspath(args.tree), before)
        clear_tmp(os.path.realpath(os.getcwd()))
        got = "pass" if rc == 0 and not timed_out else "fail"
        counts[got] += 1

        detail = ""
        if timed_out:
            detail = "timed out after %ds" % timeout
        elif rc != 0:
            detail = "exit %d" % rc
        if left:
            with open(log_path, "a") as log:
                log.write("runner: killed what the test left running: %s\n" % "; ".join(left))

        if reference:
            want_here = "fail" if name in REFERENCE_FAILS else "pass"
            why = REFERENCE_FAILS.get(name, "")
        else:
            want_here = want
        if got == "pass":
            if want_here == "fail" and why.startswith("flaky"):
                status = "pass  (known %s)" % why
            elif want_here == "fail":
                where = "REFERENCE_FAILS in tests/conformance/runner.py" if reference else "tests/conformance/expected.txt"
                status = "pass  (known failure: %s; now passes, update %s)" % (why, where)
                notes.append("%s passes now: update its entry in %s" % (name, where))
            else:
                status = "pass"
        else:
            if want_here == "fail":
                status = "fail  (known: %s)" % why
            else:
                status = "FAIL  (%s%s)" % (detail, "; listed pass" if want_here == "pass" else "")
                problems.append("%s: failed (%s), log: %s/%s.log" % (name, detail, shown, name))
                for line in tail(log_path):
                    print("    | " + line)
        print("%-*s  %s  [%.1fs]" % (width, name, status, secs), flush=True)
        summary.append("%s\t%s\t%.1f\t%s" % (name, got, secs, detail))

    if not only:
        names = {n for _, n in tests}
        for name in expected:
            if name not in names:
                notes.append("%s is listed in expected.txt but not in the suite" % name)

    with open(os.path.join(results, "summary.tsv"), "w") as f:
        f.write("\n".join(summary) + "\n")

    print()
    for n in notes:
        print("note: " + n)
    for p in problems:
        print("unexpected: " + p)
    print("broker: %s; %.0f s" % (args.broker, time.monotonic() - t_start))
    print("%d passed, %d failed, %d skipped" % (counts["pass"], counts["fail"], counts["skip"]), flush=True)
    kill_leftovers()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

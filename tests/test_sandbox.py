"""The local executor's sandbox, tried as a hostile job would: real bubblewrap, real cgroups, real uids.

A job must not read the node's data directory, keys or database, change its
own metering, make the node read or write through a link, reach another
running job, outlive its walltime, use more memory, processes or disk than it
was given, reach the network (unless the centre allows it) or the node's
daemons through their sockets or vsock, widen its sandbox (user namespaces,
real-time priority), or leave anything for the next job of its uid.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.jobs.executor import (
    DEFAULT_JOB_UIDS,
    ExecutorError,
    ExecutorFailure,
    Limits,
    LocalExecutor,
    PreparedJob,
    Sandbox,
    UidPool,
    finish_job,
    prepare_job,
    read_tail,
)

PY = "/usr/bin/python3"  # the system's: a job's uid cannot reach an interpreter under /root
SECRET = "enrolment-secret-0123456789abcdef"
RECORDS = "world-readable-gateway-records"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None or not Path(PY).exists(),
    reason="the sandbox needs root, bubblewrap (apt-get install bubblewrap) and /usr/bin/python3",
)


@pytest.fixture
def outside_tmp():
    """A folder outside /tmp (which every sandbox replaces by its own), so only hiding can protect it."""
    folder = Path(tempfile.mkdtemp(prefix="xcentre-sandbox-", dir="/var/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def node(outside_tmp: Path) -> tuple[Path, LocalExecutor]:
    """A node's data directory as build_node lays it out, world-readable on purpose, and its executor."""
    data = outside_tmp / "var"
    data.mkdir(mode=0o755)
    (data / "enrolment.secret").write_text(SECRET)
    (data / "enrolment.secret").chmod(0o600)
    (data / "gateway.db").write_text(RECORDS)
    (data / "gateway.db").chmod(0o644)
    return data, LocalExecutor(data / "jobs", hide=(data,), grace=0.5)


def _sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def _processes_named(marker: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        found.append(int(name))
            except OSError:
                pass
    return found


def _gone(marker: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _processes_named(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _processes_named(marker)
    for pid in left:  # leave nothing behind on this machine, whatever the verdict
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return not left


# -- finding 1: the job and the node ------------------------------------------------------


def test_a_job_cannot_read_the_nodes_data_directory_keys_or_database(node) -> None:
    data, executor = node
    ex = executor.run(
        _sh(
            f"cat ../../enrolment.secret ../../../enrolment.secret {data}/enrolment.secret {data}/gateway.db;"
            f"for f in enrolment.secret gateway.db; do test -e {data}/$f && echo visible:$f || echo hidden:$f; done"
        ),
        walltime=10,
    )
    assert SECRET not in ex.stdout_tail and RECORDS not in ex.stdout_tail
    assert "hidden:enrolment.secret" in ex.stdout_tail and "hidden:gateway.db" in ex.stdout_tail


def test_a_job_cannot_forge_its_metering(node) -> None:
    _, executor = node
    forged = (
        '{"started_at": 0, "ended_at": 0, "wall_millis": 0, "cpu_millis": 0, "max_rss_kib": 0, '
        '"timed_out": false, "status": 0, "failure": null, "error": null}'
    )
    script = (
        "import os, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.4: pass\n"
        "for path in ('/proc/%d/fd/1' % os.getppid(),):\n"
        "    try:\n"
        f"        with open(path, 'w') as f: f.write({forged!r} + '\\n')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.strerror)\n"
        "for line in open('/proc/self/cgroup'):\n"  # and reset the kernel's counters, if it could
        "    _, names, path = line.strip().split(':', 2)\n"
        "    for name, counter in (('cpuacct', 'cpuacct.usage'), ('memory', 'memory.max_usage_in_bytes')):\n"
        "        if name in names.split(','):\n"
        "            try:\n"
        "                open(f'/sys/fs/cgroup/{name}{path}/{counter}', 'w').write('0')\n"
        "                print('reset', counter)\n"
        "            except OSError as exc:\n"
        "                print('refused', counter, exc.strerror)\n"
        "raise SystemExit(3)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=20)
    assert "reset" not in ex.stdout_tail and ex.stdout_tail.count("refused") == 3
    assert ex.exit_code == 3  # not the forged status 0
    assert ex.cpu_millis >= 350  # not the forged 0
    assert ex.max_rss_kib > 0 and ex.wall_millis >= 400


def test_children_the_kernel_reaps_are_still_metered(node) -> None:
    """Ignoring SIGCHLD makes rusage forget the children's CPU time; the job's cgroup does not."""
    _, executor = node
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGCHLD, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        "    t = time.process_time()\n"
        "    while time.process_time() - t < 0.5: pass\n"
        "    os._exit(0)\n"
        "time.sleep(0.9)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=20)
    assert ex.exit_code == 0
    assert ex.cpu_millis >= 450


def test_a_job_runs_as_its_own_uid_without_privileges(node) -> None:
    _, executor = node
    ex = executor.run(["/bin/cat", "/proc/self/status"], walltime=10)
    status = dict(line.split(":", 1) for line in ex.stdout_tail.splitlines() if ":" in line)
    uids = {int(u) for u in status["Uid"].split()}
    gids = {int(g) for g in status["Gid"].split()}
    assert len(uids) == 1 and len(gids) == 1
    (uid,) = uids
    assert uid != 0 and uid != os.geteuid() and DEFAULT_JOB_UIDS[0] <= uid <= DEFAULT_JOB_UIDS[1]
    assert gids == {uid} and status["Groups"].strip() == ""
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, caps
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"  # filtered: see the user-namespace, keyring and vsock tests


def test_running_jobs_have_distinct_uids(node) -> None:
    _, executor = node
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(executor.run, _sh("id -u; sleep 0.5"), 10) for _ in range(3)]
        uids = [int(r.result().stdout_tail) for r in runs]
    assert len(set(uids)) == 3


def test_centres_on_one_machine_never_share_a_uid(outside_tmp: Path) -> None:
    """Each centre has its own executor (and pool) with the same default uids: the pools still agree."""
    a = LocalExecutor(outside_tmp / "a" / "jobs")
    b = LocalExecutor(outside_tmp / "b" / "jobs")
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = [pool.submit(e.run, _sh("id -u; sleep 0.5"), 10) for e in (a, b, a, b)]
        uids = [int(r.result().stdout_tail) for r in runs]
    assert len(set(uids)) == 4


def test_uid_pools_exclude_each_other_through_their_lock_files(tmp_path: Path) -> None:
    first = UidPool(1_900_000_500, 1_900_000_501, lock_dir=tmp_path / "locks")
    second = UidPool(1_900_000_500, 1_900_000_501, lock_dir=tmp_path / "locks")
    mine, theirs = first.acquire(), second.acquire()
    assert {mine, theirs} == {1_900_000_500, 1_900_000_501}
    with pytest.raises(ExecutorFailure, match="every job uid"):
        first.acquire()
    second.release(theirs)
    assert first.acquire() == theirs
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(ExecutorError, match="no one else can write"):
        UidPool(1_900_000_500, 1_900_000_501, lock_dir=tmp_path / "open")


def test_the_system_is_read_only_and_tmp_and_the_workdir_are_private(node) -> None:
    _, executor = node
    ex = executor.run(
        _sh(
            "touch /usr/xcentre-probe 2>/dev/null && echo system-writable || echo system-read-only;"
            "ls -A /tmp | wc -l; echo x > /tmp/t && echo tmp-writable;"
            "echo y > ./file && echo workdir-writable; pwd"
        ),
        walltime=10,
    )
    lines = ex.stdout_tail.split()
    assert lines[:4] == ["system-read-only", "0", "tmp-writable", "workdir-writable"]
    assert lines[4] == ex.workdir
    assert not Path(ex.workdir).exists() and not Path(ex.workdir).parent.exists()  # removed after the job


# -- finding 2: output files and links ---------------------------------------------------------


def test_the_node_does_not_read_through_a_link_the_job_made(node, outside_tmp: Path) -> None:
    _, executor = node
    shadow = outside_tmp / "shadow"
    shadow.write_text("root-only-content")
    shadow.chmod(0o600)
    ex = executor.run(
        _sh(
            f'for f in stdout ../stdout "$HOME/stdout"; do rm -f "$f" 2>/dev/null; '
            f'ln -sf {shadow} "$f" 2>/dev/null; done;'
            "echo done"
        ),
        walltime=10,
    )
    assert "root-only-content" not in ex.stdout_tail
    assert ex.stdout_tail.endswith("done\n")
    assert shadow.read_text() == "root-only-content"


def test_a_racing_job_cannot_make_the_node_write_through_a_link(node, outside_tmp: Path) -> None:
    """One job keeps swapping other jobs' stderr for a link to a root-only file, while jobs fail to start
    (which is when the node used to append its "command not found" to their stderr)."""
    data, executor = node
    target = outside_tmp / "crontab"
    target.write_text("original\n")
    target.chmod(0o600)
    swap = (
        f"end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do "
        f'for d in ../../job-*/ ../job-*/ {data}/jobs/job-*/; do ln -sf {target} "$d/stderr" 2>/dev/null; done; '
        "done; echo swapped"
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        swapper = pool.submit(executor.run, _sh(swap), 20)
        time.sleep(0.3)
        for _ in range(10):
            assert executor.run(["no-such-command-xcentre"], walltime=5).exit_code == 127
        swapper.result()
    assert target.read_text() == "original\n"


def test_a_job_cannot_read_another_running_jobs_files_or_processes(node) -> None:
    data, executor = node
    marker = f"private-{uuid.uuid4().hex}"
    with ThreadPoolExecutor(max_workers=2) as pool:
        victim = pool.submit(executor.run, _sh(f"echo {marker} > secret; exec sleep 2 # {marker}"), 10)
        time.sleep(0.5)
        spy = executor.run(
            _sh(
                f"cat ../*/secret ../../*/work/secret {data}/jobs/*/work/secret 2>&1;"
                f"grep -l {marker} /proc/[0-9]*/cmdline 2>/dev/null | grep -v self;"
                "ls /proc | grep -c '^[0-9]'"
            ),
            walltime=10,
        )
        victim.result()
    assert marker not in spy.stdout_tail
    assert int(spy.stdout_tail.split()[-1]) <= 6  # the spy sees its own few processes only


def test_a_job_writes_to_dev_stdout_and_dev_stderr(node) -> None:
    """Scripts name them (`tee /dev/stderr`): reopening the job's own output must work, and add to it."""
    _, executor = node
    ex = executor.run(
        _sh("echo one; echo two >> /dev/stdout; echo err | tee -a /dev/stderr >/dev/null; echo three"), walltime=10
    )
    assert (ex.stdout_tail, ex.stderr_tail) == ("one\ntwo\nthree\n", "err\n")


def test_output_tails_are_read_from_regular_files_only(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_text("secret")
    link = tmp_path / "stdout"
    link.symlink_to(target)
    fifo = tmp_path / "stderr"
    os.mkfifo(fifo)
    with pytest.raises(ExecutorFailure, match="refusing"):
        read_tail(link)
    with pytest.raises(ExecutorFailure, match="not a regular file"):
        read_tail(fifo)  # and without blocking on it
    assert read_tail(tmp_path / "missing") == ""


def test_a_job_whose_output_cannot_be_read_is_still_billed(tmp_path: Path) -> None:
    """Its output files are the job's (it can chmod them; a gateway without CAP_DAC_OVERRIDE would then be
    refused): what becomes of them must never turn a metered job into a lost, unbilled one."""
    job = prepare_job(["true"], 10, limits=Limits(), jobs_dir=tmp_path, sandbox=Sandbox(kind="none"), uids=None)
    os.mkfifo(job.stdout)  # unreadable as output, as a chmod 000 file would be
    job.stderr.write_text("last words\n")
    ex = finish_job(
        job,
        {
            "started_at": 100,
            "ended_at": 102,
            "wall_millis": 1500,
            "cpu_millis": 700,
            "max_rss_kib": 2048,
            "timed_out": False,
            "status": 0,
            "failure": None,
            "error": None,
        },
    )
    assert (ex.exit_code, ex.cpu_millis, ex.max_rss_kib, ex.stdout_tail) == (0, 700, 2048, "")
    assert ex.stderr_tail.startswith("last words\n") and "could not read the job's stdout" in ex.stderr_tail
    assert not job.folder.exists()


# -- walltime, limits, network ----------------------------------------------------------------------


def test_walltime_kills_every_process_of_the_job_even_those_that_left_its_session(node) -> None:
    _, executor = node
    marker = f"xcentre-escapee-{uuid.uuid4().hex}"
    script = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', [{marker!r}, '300'])\n"
        "    os._exit(0)\n"
        "time.sleep(300)\n"
    )
    t0 = time.monotonic()
    ex = executor.run([PY, "-c", script], walltime=1)
    assert ex.timed_out and ex.exit_code is None
    assert time.monotonic() - t0 < 10
    assert _gone(marker)


def test_a_job_ends_with_its_main_process_and_takes_its_daemons_along(node) -> None:
    _, executor = node
    marker = f"xcentre-daemon-{uuid.uuid4().hex}"
    script = (
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv('/bin/sleep', [{marker!r}, '300'])\n"
        "    os._exit(0)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=30)
    assert ex.exit_code == 0 and not ex.timed_out
    assert _gone(marker)


def test_memory_is_limited_by_the_kernel(node) -> None:
    _, executor = node
    allocate = "b = bytearray({n} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('allocated')"
    fits = executor.run([PY, "-c", allocate.format(n=20)], walltime=20, limits=Limits(memory_mib=64))
    assert fits.exit_code == 0 and fits.stdout_tail == "allocated\n"
    assert fits.max_rss_kib >= 20 * 1024
    over = executor.run([PY, "-c", allocate.format(n=200)], walltime=20, limits=Limits(memory_mib=64))
    assert not over.succeeded and over.stdout_tail == ""
    assert "exceeded its memory limit (64 MiB)" in over.stderr_tail
    assert over.max_rss_kib <= 64 * 1024 + 1024


def test_processes_are_limited(outside_tmp: Path) -> None:
    executor = LocalExecutor(outside_tmp / "jobs", max_processes=16, grace=0.5)
    script = (
        "import os, time\n"
        "n = 0\n"
        "for i in range(60):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(1); os._exit(0)\n"
        "        n += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print(n)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=10)
    assert ex.exit_code == 0
    assert 5 <= int(ex.stdout_tail) < 16


def test_a_job_gets_no_realtime_or_higher_priority_whatever_the_gateways_limits(node) -> None:
    """A real-time busy loop is outside the CPU quota and starves the node; a gateway run with raised
    RLIMIT_RTPRIO or RLIMIT_NICE (a service manager's setting) must not hand that on to its jobs."""
    import resource

    _, executor = node
    saved = {name: resource.getrlimit(name) for name in (resource.RLIMIT_RTPRIO, resource.RLIMIT_NICE)}
    try:
        resource.setrlimit(resource.RLIMIT_RTPRIO, (50, 50))
        resource.setrlimit(resource.RLIMIT_NICE, (40, 40))
    except (ValueError, OSError):
        for name, value in saved.items():
            resource.setrlimit(name, value)
        pytest.skip("cannot raise this process's limits here (no CAP_SYS_RESOURCE)")
    try:
        ex = executor.run(
            _sh("chrt -f 10 echo got-realtime; nice -n -5 sh -c 'echo niceness $(cut -d\" \" -f19 /proc/self/stat)'"),
            walltime=10,
        )
    finally:
        for name, value in saved.items():
            resource.setrlimit(name, value)
    assert "got-realtime" not in ex.stdout_tail and "niceness -5" not in ex.stdout_tail, ex.stdout_tail


def test_file_size_is_limited(outside_tmp: Path) -> None:
    executor = LocalExecutor(outside_tmp / "jobs", max_file_mib=1, grace=0.5)
    ex = executor.run(_sh("head -c 3000000 /dev/zero > big; echo $?; wc -c < big"), walltime=10)
    status, size = ex.stdout_tail.split()
    assert status != "0" and int(size) <= 1024 * 1024


def _listener() -> socket.socket:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server


CONNECT = (
    "import socket, sys\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2).close(); print('connected')\n"
    "except OSError as exc:\n"
    "    print('no network:', exc)\n"
)


def test_a_job_has_no_network_by_default(node) -> None:
    _, executor = node
    with _listener() as server:
        ex = executor.run([PY, "-c", CONNECT, str(server.getsockname()[1])], walltime=10)
    assert ex.stdout_tail.startswith("no network")


def test_a_centre_can_give_jobs_the_network(outside_tmp: Path) -> None:
    executor = LocalExecutor(outside_tmp / "jobs", network=True)
    with _listener() as server:
        ex = executor.run([PY, "-c", CONNECT, str(server.getsockname()[1])], walltime=10)
    assert ex.stdout_tail == "connected\n"


# -- what outlives a job or reaches past its namespaces --------------------------------------------

KEY_SYSCALLS = {"x86_64": (248, 250), "aarch64": (217, 219)}  # add_key, keyctl: no Python binding
LONE_UID = 1_900_000_977
"""A pool of this one uid, so that two jobs in a row surely share it (the default pools start at the other end)."""


def _key_script(action: str, marker: str) -> str:
    """Job A leaves a key named marker in its uid's user keyring (-4), which the kernel keeps after the job;
    job B lists the keys it can see (/proc/keys) and looks marker up."""
    return (
        "import ctypes, os\n"
        f"ADD_KEY, KEYCTL = {KEY_SYSCALLS!r}[os.uname().machine]\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('uid', os.getuid())\n"
        f"if {action == 'leave'}:\n"
        f"    key = libc.syscall(ADD_KEY, b'user', b'{marker}', b'payload', 7, -4)\n"
        "else:\n"
        "    print(open('/proc/keys').read())\n"
        f"    key = libc.syscall(KEYCTL, 10, -4, b'user', b'{marker}', 0)\n"  # KEYCTL_SEARCH
        "print('key' if key > 0 else 'refused', os.strerror(ctypes.get_errno()))\n"
    )


def _clear_keyring(uid: int) -> None:
    """Empty uid's user keyring (what a job of a pre-fix launcher could leave there)."""
    pid = os.fork()
    if pid == 0:
        try:
            import ctypes

            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            ctypes.CDLL(None).syscall(KEY_SYSCALLS[os.uname().machine][1], 7, -4)  # KEYCTL_CLEAR
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.skipif(os.uname().machine not in KEY_SYSCALLS, reason="syscall numbers known for x86_64 and aarch64")
def test_nothing_of_a_job_waits_in_the_kernels_keyrings_for_the_next_job_of_its_uid(outside_tmp: Path) -> None:
    """Keyrings are per uid and outlive every process: job B would read what job A left (or a Kerberos ticket)."""
    executor = LocalExecutor(outside_tmp / "jobs", uids=(LONE_UID, LONE_UID), grace=0.5)
    marker = f"left-by-job-a-{uuid.uuid4().hex[:12]}"
    try:
        first = executor.run([PY, "-c", _key_script("leave", marker)], walltime=10)
        second = executor.run([PY, "-c", _key_script("find", marker)], walltime=10)
    finally:
        _clear_keyring(LONE_UID)
    assert first.stdout_tail.split()[:2] == second.stdout_tail.split()[:2] == ["uid", str(LONE_UID)]
    assert marker not in second.stdout_tail
    assert "refused" in first.stdout_tail and "refused" in second.stdout_tail


USERNS = (
    "import ctypes, os, struct, subprocess, threading\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "NEWUSER, NR_CLONE = 0x10000000, {'x86_64': 56, 'aarch64': 220}[os.uname().machine]\n"
    "def attempt(name, result):\n"
    "    print(name, 'created' if result >= 0 else 'refused', ctypes.get_errno(), flush=True)\n"
    "def forked(name, result):\n"
    "    if result == 0:\n"
    "        os._exit(0)\n"  # the child of a clone() that worked: gone at once
    "    attempt(name, result)\n"
    "run = lambda *argv: subprocess.run(argv, capture_output=True, text=True).stdout.strip()\n"
    "print(run('unshare', '-Ur', 'id', '-u') or 'no-unshare')\n"
    # what a job needs of clone still works: threads, processes
    "t = threading.Thread(target=lambda: print('thread-ok')); t.start(); t.join()\n"
    "print(run('/bin/echo', 'child-ok'), flush=True)\n"
    "forked('clone', libc.syscall(NR_CLONE, NEWUSER | 17, 0, 0, 0, 0))\n"
    "args = ctypes.create_string_buffer(struct.pack('=QQQQQQQQ', NEWUSER, 0, 0, 0, 17, 0, 0, 0))\n"
    "forked('clone3', libc.syscall(435, args, 64))\n"
    "attempt('unshare', libc.unshare(NEWUSER))\n"  # last: it would leave this process in the new namespace
)


@pytest.mark.skipif(os.uname().machine not in KEY_SYSCALLS, reason="syscall numbers known for x86_64 and aarch64")
def test_a_job_cannot_create_user_namespaces(node) -> None:
    """A user namespace gives a job root's powers over new namespaces: the kernel's largest attack surface."""
    _, executor = node
    ex = executor.run([PY, "-c", USERNS], walltime=10)
    lines = ex.stdout_tail.splitlines()
    assert ex.exit_code == 0, ex.stderr_tail
    assert lines[:3] == ["no-unshare", "thread-ok", "child-ok"]
    assert [line.split()[:2] for line in lines[3:]] == [
        ["clone", "refused"],
        ["clone3", "refused"],
        ["unshare", "refused"],
    ], lines


def test_a_job_cannot_reach_the_nodes_unix_sockets(node) -> None:
    """Daemons listen under /run (slapd's ldapi, munge, dbus…): a read-only root still lets a job connect()."""
    _, executor = node
    folder = Path("/run") / f"xcentre-test-{uuid.uuid4().hex[:12]}"
    folder.mkdir(mode=0o755)
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(folder / "ldapi"))
        (folder / "ldapi").chmod(0o777)
        server.listen(4)
        script = (
            "import socket, sys\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n"
            "        socket.socket(socket.AF_UNIX).connect(path); print('connected', path)\n"
            "    except OSError as exc:\n"
            "        print('refused', path, exc.strerror)\n"
        )
        ex = executor.run([PY, "-c", script, str(folder / "ldapi"), f"/var/run/{folder.name}/ldapi"], walltime=10)
    finally:
        server.close()
        shutil.rmtree(folder)
    assert ex.exit_code == 0 and ex.stdout_tail.count("refused") == 2, ex.stdout_tail


def _vsock_available() -> bool:
    try:
        socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM).close()
        return True
    except (OSError, AttributeError):
        return False


@pytest.mark.skipif(not _vsock_available(), reason="this machine has no vsock")
def test_a_job_without_network_gets_no_vsock(node) -> None:
    """vsock (to the hypervisor and the node's own vsock services) is not confined by network namespaces."""
    _, executor = node
    script = (
        "import socket\n"
        "try:\n"
        "    socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); print('vsock')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.strerror)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=10)
    assert ex.stdout_tail.startswith("refused"), ex.stdout_tail


def test_a_job_cannot_fill_the_nodes_disk(node) -> None:
    """Each file is below the file-size limit, but together they would fill the disk the node's database is on."""
    _, executor = node
    script = (
        "import os\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(12):\n"
        "        with open(f'part-{i}', 'wb') as f:\n"
        "            for _ in range(16):\n"
        "                f.write(b'x' * 1024 * 1024)\n"
        "                written += 1\n"
        "except OSError as exc:\n"
        "    print('stopped:', exc.strerror)\n"
        "print(written)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=30, limits=Limits(memory_mib=64))
    lines = ex.stdout_tail.split("\n")
    assert not (ex.exit_code == 0 and lines[-2:] == ["192", ""]), ex.stdout_tail  # 192 MiB would be on disk
    assert ex.exit_code != 0 or int(lines[-2]) <= 64
    small = executor.run(_sh("head -c 8000000 /dev/zero > f && wc -c < f"), walltime=10, limits=Limits(memory_mib=64))
    assert small.exit_code == 0 and small.stdout_tail == "8000000\n"  # scratch within the limit works


def test_the_nodes_cleanup_never_follows_a_link_a_live_job_swaps_in(node, outside_tmp: Path) -> None:
    """Should a process of the job still run while the node removes its folder (its launcher was killed, a
    Slurm node failed), swapping a folder for a link must not make root change anything outside it."""
    _, executor = node
    victim = outside_tmp / "etc"
    victim.mkdir(mode=0o755)
    victim.chmod(0o755)
    job = prepare_job(
        ["true"], 5, limits=Limits(), jobs_dir=executor.jobs_dir, sandbox=executor.sandbox, uids=executor.uids
    )
    inner = job.workdir / "a"
    inner.mkdir()
    for i in range(5_000):
        (inner / f"f{i}").touch()
    for path in (inner, *inner.iterdir()):
        os.chown(path, job.uid, job.uid)
    racer = os.fork()
    if racer == 0:  # the job's leftover process
        try:
            os.setgroups([])
            os.setresgid(job.uid, job.uid, job.uid)
            os.setresuid(job.uid, job.uid, job.uid)
            first = next(os.scandir(inner)).name  # the node removes a/'s files in this same order
            deadline = time.monotonic() + 10
            while os.path.lexists(inner / first) and time.monotonic() < deadline:
                pass  # until the node has started on a/
            os.rename(inner, job.workdir / "b")
            os.symlink(victim, inner)
            for name in reversed(os.listdir(job.workdir / "b")):  # from the end: the node's next unlinks fail
                try:
                    os.unlink(job.workdir / "b" / name)
                except FileNotFoundError:
                    pass
        finally:
            os._exit(0)
    try:
        time.sleep(0.05)
        job.cleanup()
    finally:
        os.waitpid(racer, 0)
    assert victim.stat().st_mode & 0o777 == 0o755


# -- configuration ----------------------------------------------------------------------------------


def test_bwrap_missing_or_not_root_refuses_to_start(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ExecutorError, match="apt-get install bubblewrap"):
        LocalExecutor(tmp_path / "jobs", bwrap="/nonexistent/bwrap")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ExecutorError, match="needs the gateway to start as root"):
        LocalExecutor(tmp_path / "jobs")


def test_a_bubblewrap_too_old_for_a_sized_job_folder_refuses_to_start(tmp_path: Path) -> None:
    old = tmp_path / "bwrap"
    old.write_text(
        f'#!/bin/sh\ncase " $* " in *" --size "*) echo "bwrap: Unknown option --size" >&2; exit 1;; esac\n'
        f'exec {shutil.which("bwrap")} "$@"\n'
    )
    old.chmod(0o755)
    with pytest.raises(ExecutorError, match=r"Unknown option --size.*0\.8 or later"):
        LocalExecutor(tmp_path / "jobs", bwrap=str(old))


def test_unsandboxed_is_explicit_and_loud(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.jobs.executor"):
        executor = LocalExecutor(tmp_path / "jobs", sandbox="none")
    assert "UNSANDBOXED" in caplog.text
    ex = executor.run(_sh("id -u"), walltime=10)
    assert int(ex.stdout_tail) != 0  # as root, even unsandboxed jobs run as a pool uid


@pytest.mark.parametrize(
    "uids, message",
    [
        ((0, 10), "range"),
        ((5, 2), "range"),
        ((1, 2**32), "range"),
        ((1, 10), "include the account 'daemon'"),
        ((1_900_000_000, 1_900_000_000.5), "integers"),
    ],
)
def test_bad_uid_ranges_are_refused(tmp_path: Path, uids, message) -> None:
    with pytest.raises(ExecutorError, match=message):
        LocalExecutor(tmp_path / "jobs", uids=uids)


def test_the_gateways_own_uid_is_never_a_job_uid(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1_900_000_005)
    with pytest.raises(ExecutorError, match="the gateway's own uid"):
        UidPool(1_900_000_000, 1_900_000_999)


def test_capacity_counts_the_cores_of_running_jobs(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "jobs", cpus=8)
    assert (executor.capacity().total_cpus, executor.capacity().free_cpus) == (8, 8)
    started = threading.Event()

    def job() -> None:
        started.set()
        executor.run(["sleep", "1"], walltime=10, limits=Limits(cores=3))

    thread = threading.Thread(target=job)
    thread.start()
    started.wait()
    deadline = time.monotonic() + 5
    while executor.capacity().free_cpus != 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert executor.capacity().free_cpus == 5
    thread.join()
    assert executor.capacity().free_cpus == 8


def test_a_prepared_job_cleans_up_once(tmp_path: Path) -> None:
    executor = LocalExecutor(tmp_path / "jobs")
    job = prepare_job(
        ["true"], 5, limits=Limits(), jobs_dir=executor.jobs_dir, sandbox=executor.sandbox, uids=executor.uids
    )
    assert isinstance(job, PreparedJob) and job.workdir.stat().st_uid == job.uid
    (job.workdir / "link").symlink_to("/etc")
    job.cleanup()
    job.cleanup()
    assert not job.folder.exists() and Path("/etc/passwd").exists()


def _config(folder: Path, **settings: object) -> Path:
    lines = {
        "centre": "hpc-a",
        "data_dir": "var",
        "chain_url": "http://127.0.0.1:1",
        "deployment": "d.json",
        "chain_key_file": "keys/chain.key",
        "token_key_file": "keys/token.pem",
        "issuer_key_file": "keys/issuer.key",
        "credential_schema": "schema.toml",
        "operator_key": "op",
        "policy_file": "policy.cedar",
        "ldap_url": "ldap://127.0.0.1:1",
        "ldap_base_dn": "dc=x",
    } | settings
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "centre.toml"
    path.write_text("".join(f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n" for k, v in lines.items()))
    return path


def test_a_centre_without_bubblewrap_refuses_to_start_and_says_what_to_do(tmp_path: Path, monkeypatch, capsys) -> None:
    from gateway.client.cli import main

    monkeypatch.setattr(shutil, "which", lambda *_: None)
    assert main(["gateway", "--config", str(_config(tmp_path))]) == 1
    error = capsys.readouterr().err
    assert "needs bubblewrap" in error and "apt-get install bubblewrap" in error and 'sandbox = "none"' in error


def test_a_centres_executor_hides_its_data_directory_and_keys(outside_tmp: Path) -> None:
    from gateway.node.assemble import local_executor
    from gateway.node.config import load_config

    config = load_config(_config(outside_tmp / "centre", job_cpus=3))
    keys = outside_tmp / "centre" / "keys"
    keys.mkdir()
    (keys / "chain.key").write_text("0xkey")
    (keys / "chain.key").chmod(0o644)
    executor = local_executor(config)
    assert executor.capacity().total_cpus == 3
    assert {config.data_dir, config.chain_key_file, config.issuer_key_file} <= set(executor.sandbox.hide)
    ex = executor.run(_sh(f"cat {keys}/chain.key; ls -A {config.data_dir} | grep -v jobs; echo end"), walltime=10)
    assert "0xkey" not in ex.stdout_tail and ex.stdout_tail.endswith("end\n")


def test_the_local_consortium_sandboxes_when_it_can_and_says_so_when_it_cannot(monkeypatch, capsys) -> None:
    from gateway.demo.local import job_sandbox

    assert job_sandbox.__wrapped__() == "bwrap"  # root, with bubblewrap: as here
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert job_sandbox.__wrapped__() == "none"
    warning = " ".join(capsys.readouterr().err.split())  # wrapped to the terminal
    assert "UNSANDBOXED (a sandbox needs the gateway to start as root" in warning


def test_a_nodes_jobs_run_under_their_limits_and_cannot_see_its_data(consortium) -> None:
    """Through a real gateway: the node passes the job's resources as limits, and hides its data folder."""
    from gateway.client.dispatch import finish, submit_anywhere, with_home_session
    from gateway.client.http import GatewayClient
    from gateway.client.wallet import PaymentKeys
    from tests.fixtures.consortium import PASSWORDS

    data = consortium.data_dir / "hpc-a"
    allocate = "b = bytearray(200 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"
    spy = f"cat {data}/enrolment.secret ../../../enrolment.secret 2>/dev/null | wc -c; ls -A {data}"
    keys = PaymentKeys()
    with GatewayClient(consortium.url("hpc-a")) as home:
        home.login("alice", PASSWORDS["alice"])
        submitted = [
            submit_anywhere(consortium.url("hpc-a"), job, with_home_session(home), centre="hpc-a", keys=keys)
            for job in (
                {"command": ["python3", "-c", allocate], "walltime": 30, "resources": {"memory_mib": 64}},
                {"command": ["/bin/sh", "-c", spy], "walltime": 30},
            )
        ]
    big, nosy = (finish(submission, keys) for submission in submitted)  # the outputs, opened by the receipt's key
    for submission in submitted:
        submission.client.close()
    assert (data / "enrolment.secret").exists()
    assert big.view["status"] == "failed" and "exceeded its memory limit (64 MiB)" in big.stderr
    assert (data / "gateway.db").exists()
    # nothing read; of the data folder, only the path down to the job's own folder
    assert nosy.view["status"] == "succeeded" and nosy.stdout.split() == ["0", "jobs"]


def test_a_launcher_told_to_stop_kills_its_job_and_leaves_nothing_behind(node) -> None:
    """As when Slurm cancels a batch job: SIGTERM to the launcher ends the sandbox and removes the job's cgroups."""
    import json
    import subprocess
    import sys

    from gateway.jobs.executor import LAUNCHER

    _, executor = node
    marker = f"xcentre-cancelled-{uuid.uuid4().hex}"
    job = prepare_job(
        [PY, "-c", f"import os; os.execv('/bin/sleep', [{marker!r}, '300'])"],
        60,
        limits=Limits(),
        jobs_dir=executor.jobs_dir,
        sandbox=executor.sandbox,
        uids=executor.uids,
    )
    launcher = subprocess.Popen(
        [sys.executable, "-I", "-S", str(LAUNCHER)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        launcher.stdin.write(json.dumps(job.spec).encode())
        launcher.stdin.close()
        assert "pid" in json.loads(launcher.stdout.readline())
        deadline = time.monotonic() + 20  # bwrap under a loaded machine
        while not _processes_named(marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _processes_named(marker)
        launcher.terminate()
        assert launcher.wait(timeout=15) != 0
    finally:
        launcher.kill()
        job.cleanup()
    assert _gone(marker, timeout=2)
    groups = [
        name
        for folder in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu")
        if os.path.isdir(folder)
        for name in os.listdir(folder)
        if name.startswith(f"xcentre-{launcher.pid}-")
    ]
    assert groups == []


# -- where the node's code lives -----------------------------------------------------------


def test_jobs_run_when_the_nodes_code_and_interpreter_live_in_a_folder_the_sandbox_hides(tmp_path, monkeypatch) -> None:
    """A checkout under /tmp (as CI's may be): the sandbox replaces /tmp, yet its init must start."""
    import sys

    import gateway.jobs.executor as executor_module

    code = tmp_path / "checkout"
    code.mkdir()
    launcher = code / "launcher.py"
    shutil.copy(executor_module.LAUNCHER, launcher)
    python = code / "python3"  # a virtualenv's interpreter: a link under the hidden folder
    python.symlink_to(os.path.realpath(sys.executable))
    monkeypatch.setattr(executor_module, "LAUNCHER", launcher)
    executor = LocalExecutor(tmp_path / "jobs", grace=0.5, python=str(python))
    ex = executor.run(_sh("echo started"), walltime=10)
    assert ex.exit_code == 0 and ex.stdout_tail == "started\n", ex.stderr_tail

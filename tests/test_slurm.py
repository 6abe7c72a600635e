"""gateway.jobs.slurm: parsing Slurm's answers, its commands on a real single-node Slurm, and the Slurm executor."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gateway.jobs.executor import ExecutorError, ExecutorFailure, Limits
from gateway.jobs.slurm import (
    LAUNCHER_MEMORY_MIB,
    SlurmClient,
    SlurmCommandError,
    SlurmExecutor,
    batch_script,
    parse_cpus,
    parse_job,
    parse_job_id,
    parse_queue,
    sbatch_options,
    time_limit_minutes,
)

PY = "/usr/bin/python3"  # the system's: a job's uid cannot reach an interpreter under /root
SECRET = "enrolment-secret-0123456789abcdef"
UIDS = (1_900_500_000, 1_900_500_099)  # not the default range, which other executors on this machine may use
BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"

# A real line of `scontrol show job -o` (Slurm 22.05), with a working directory holding a space.
SCONTROL_LINE = (
    "JobId=17 JobName=xcentre UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=4294901759 Nice=0 "
    "Account=(null) QOS=(null) JobState=NODE_FAIL Reason=NodeDown Dependency=(null) Requeue=0 Restarts=0 "
    "BatchFlag=1 Reboot=0 ExitCode=0:15 RunTime=00:00:01 TimeLimit=00:02:00 TimeMin=N/A "
    "Partition=batch AllocNode:Sid=localhost:3646 NodeList=localhost NumNodes=1 NumCPUs=2 NumTasks=1 "
    "CPUs/Task=2 ReqB:S:C:T=0:0:*:* TRES=cpu=2,mem=100M,node=1,billing=2 MinMemoryNode=100M "
    "WorkDir=/srv/my jobs/x StdOut=/dev/null Power="
)


def until(predicate, timeout: float = 20.0, step: float = 0.02):
    """Poll predicate until it returns something true; that value (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    pytest.fail(f"condition not met within {timeout} s")


# --- pure parsing -----------------------------------------------------------------------------------


def test_time_limit_is_an_outer_bound_in_whole_minutes() -> None:
    assert time_limit_minutes(1, 2.0) == 1
    assert time_limit_minutes(28, 2.0) == 1  # 28 + 2 + 30 s start-up slack = 60 s
    assert time_limit_minutes(29, 2.0) == 2
    assert time_limit_minutes(3600, 2.0) == 61
    for walltime in (1, 59, 60, 61, 7199, 86_400):
        assert time_limit_minutes(walltime, 2.0) * 60 >= walltime + 2


def test_parse_job_reads_state_reason_and_exit_code() -> None:
    job = parse_job(SCONTROL_LINE)
    assert (job.job_id, job.state, job.reason, job.exit_code) == ("17", "NODE_FAIL", "NodeDown", "0:15")
    assert job.finished and job.ended_by_slurm
    assert job.fields["TRES"] == "cpu=2,mem=100M,node=1,billing=2"
    assert job.fields["WorkDir"] == "/srv/my jobs/x"  # a value with a space stays whole
    assert job.fields["CPUs/Task"] == "2" and job.fields["MinMemoryNode"] == "100M"
    assert job.fields["Power"] == ""
    assert "node failure" in job.describe() and "NodeDown" in job.describe() and "17" in job.describe()


@pytest.mark.parametrize(
    "state,finished",
    [
        ("PENDING", False),
        ("RUNNING", False),
        ("COMPLETING", False),
        ("CONFIGURING", False),
        ("COMPLETED", True),
        ("FAILED", True),
        ("CANCELLED", True),
        ("TIMEOUT", True),
        ("OUT_OF_MEMORY", True),
    ],
)
def test_finished_states(state: str, finished: bool) -> None:
    assert parse_job(f"JobId=3 JobState={state} Reason=None ExitCode=0:0").finished is finished


def test_pending_reasons_that_never_resolve() -> None:
    def pending(reason: str):
        return parse_job(f"JobId=3 JobState=PENDING Reason={reason} ExitCode=0:0")

    for reason in ("PartitionConfig", "PartitionNodeLimit", "QOSMaxCpuPerJobLimit", "AssocMaxNodesPerJobLimit"):
        assert pending(reason).never_starts, reason
    for reason in ("None", "Resources", "Priority", "ReqNodeNotAvail", "JobHeldAdmin", "QOSMaxJobsPerUserLimit"):
        assert not pending(reason).never_starts, reason
    assert not parse_job("JobId=3 JobState=RUNNING Reason=PartitionConfig ExitCode=0:0").never_starts


@pytest.mark.parametrize("text", ["", "slurm_load_jobs error: Invalid job id specified", "JobId=3 Reason=None"])
def test_parse_job_refuses_what_is_not_a_job(text: str) -> None:
    with pytest.raises(ValueError, match="not a job description"):
        parse_job(text)


def test_parse_job_id() -> None:
    assert parse_job_id("42\n") == "42"
    assert parse_job_id("42;cluster-b\n") == "42"
    for bad in ("", "Submitted batch job 42", "x;y"):
        with pytest.raises(ValueError, match="no job id"):
            parse_job_id(bad)


def test_parse_cpus_counts_each_node_once() -> None:
    # a node in two partitions is listed twice by `sinfo -N`
    out = "n1|2/6/0/8\nn2|0/0/8/8\nn1|2/6/0/8\n\n"
    assert parse_cpus(out) == (16, 6)
    assert parse_cpus("") == (0, 0)
    for bad in ("n1|2/6/8", "n1 2/6/0/8", "n1|a/b/c/d"):
        with pytest.raises(ValueError, match="not a sinfo node line"):
            parse_cpus(bad)


def test_sbatch_options_carry_cores_memory_time_and_gpus(tmp_path: Path) -> None:
    options = sbatch_options(
        name="xcentre-job-1",
        walltime=100,
        grace=2.0,
        limits=Limits(cores=3, memory_mib=512),
        folder=tmp_path,
        partition="gpu",
    )
    assert "--cpus-per-task=3" in options and "--ntasks=1" in options and "--nodes=1" in options
    assert f"--mem={512 + LAUNCHER_MEMORY_MIB}M" in options
    assert "--time=3" in options  # 100 + 2 + 30 s, in whole minutes, rounded up
    assert "--no-requeue" in options and "--propagate=NONE" in options and "--partition=gpu" in options
    assert f"--output={tmp_path}/slurm.log" in options and f"--chdir={tmp_path}" in options
    assert not any(o.startswith("--gres") for o in options)
    assert "--gres=gpu:2" in sbatch_options(name="x", walltime=1, grace=0, limits=Limits(gpus=2), folder=tmp_path)
    assert not any(
        o.startswith("--partition")
        for o in sbatch_options(name="x", walltime=1, grace=0, limits=Limits(), folder=tmp_path)
    )


def test_parse_queue() -> None:
    assert parse_queue("12|xcentre-job-ab_1\n13|my job|x\n\n") == {"12": "xcentre-job-ab_1", "13": "my job|x"}
    assert parse_queue("") == {}
    for bad in ("12", "x|name"):
        with pytest.raises(ValueError, match="not a squeue line"):
            parse_queue(bad)


def test_batch_script_quotes_every_path() -> None:
    script = batch_script(
        "/opt/py 3/bin/python", Path("/srv/x'c/launcher.py"), Path("/srv/c d/spec.json"), Path("/srv/c d/result.json")
    )
    assert script.startswith("#!/bin/sh\n")
    assert (
        "exec '/opt/py 3/bin/python' -I -S '/srv/x'\"'\"'c/launcher.py' < '/srv/c d/spec.json' "
        "> '/srv/c d/result.json'" in script
    )


def test_command_errors_say_whether_slurm_was_unreachable() -> None:
    down = SlurmCommandError(
        "sbatch",
        1,
        "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n",
    )
    refused = SlurmCommandError("sbatch", 1, "sbatch: error: invalid partition specified: nope\n")
    assert down.transient and not refused.transient
    assert "invalid partition specified: nope" in str(refused)


# --- the Slurm commands, on the real single-node cluster --------------------------------------------


@pytest.fixture
def client(slurm) -> SlurmClient:
    slurm.wait_idle()
    yield SlurmClient(slurm.conf)
    slurm.wait_idle()


def test_submit_state_capacity_and_cancel(slurm, client: SlurmClient, tmp_path) -> None:
    assert client.cpus() == (slurm.cpus, slurm.cpus)
    assert client.cpus(slurm.partition) == (slurm.cpus, slurm.cpus)
    job_id = client.submit("#!/bin/sh\nsleep 60\n", ["-c", "3", "--mem=64M", f"--output={tmp_path}/out"])
    assert until(lambda: client.job(job_id).state == "RUNNING")
    assert client.cpus() == (slurm.cpus, slurm.cpus - 3)
    client.cancel(job_id)
    job = until(lambda: (j := client.job(job_id)).finished and j)
    assert job.state == "CANCELLED" and job.ended_by_slurm and "cancelled" in job.describe()


def test_unknown_job_and_refused_submission(client: SlurmClient) -> None:
    assert client.job("999999") is None
    with pytest.raises(SlurmCommandError, match="invalid partition") as refused:
        client.submit("#!/bin/sh\ntrue\n", ["-p", "no-such-partition"])
    assert not refused.value.transient


def test_missing_commands_are_reported(tmp_path) -> None:
    client = SlurmClient(tmp_path / "slurm.conf")
    client.env["PATH"] = str(tmp_path)  # no Slurm there
    with pytest.raises(SlurmCommandError, match="not installed"):
        client.cpus()


# --- the Slurm executor: jobs sandboxed by the launcher, queued by Slurm ----------------------------

slurm_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("bwrap") is None or not Path(PY).exists(),
    reason="Slurm jobs run the sandbox: root, bubblewrap (apt-get install bubblewrap) and /usr/bin/python3",
)


@pytest.fixture
def node(slurm):
    """A node's data directory (world-readable on purpose, outside /tmp, which sandboxes replace) and its executor."""
    slurm.wait_idle()
    folder = Path(tempfile.mkdtemp(prefix="xcentre-slurm-", dir="/var/tmp"))
    folder.chmod(0o755)
    data = folder / "var"
    data.mkdir(mode=0o755)
    (data / "enrolment.secret").write_text(SECRET)
    (data / "enrolment.secret").chmod(0o644)
    executor = SlurmExecutor(
        folder / "jobs",
        slurm_conf=slurm.conf,
        partition=slurm.partition,
        hide=(data,),
        uids=UIDS,
        grace=0.5,
        poll_interval=0.1,
    )
    yield data, executor
    slurm.wait_idle()
    shutil.rmtree(folder, ignore_errors=True)


def _sh(script: str) -> list[str]:
    return ["/bin/sh", "-c", script]


def _nothing_left(executor: SlurmExecutor) -> bool:
    """No job folder, spec or result left behind."""
    return [p.name for p in executor.jobs_dir.iterdir()] == [".slurm"] and not os.listdir(executor.jobs_dir / ".slurm")


def _running_job(executor: SlurmExecutor, client: SlurmClient) -> str:
    """The Slurm id of the executor's one job, once Slurm runs it."""
    job_id = until(lambda: next(iter(executor.running()), None))
    until(lambda: client.job(job_id).state == "RUNNING")
    return job_id


@slurm_root
def test_a_job_runs_on_slurm_and_is_metered_from_the_kernel(node) -> None:
    _, executor = node
    forged = (
        '{"started_at": 0, "ended_at": 0, "wall_millis": 0, "cpu_millis": 0, "max_rss_kib": 0, '
        '"timed_out": false, "status": 0, "failure": null, "error": null}'
    )
    script = BURN.format(s=0.4) + (
        "import os\n"
        "print('uid', os.getuid(), 'slurm', os.environ.get('SLURM_JOB_ID'))\n"
        "for fd in range(3, 20):\n"  # whatever the launcher holds, the job may try to write its result there
        f"    try: os.write(fd, b{forged!r} + b'\\n')\n"
        "    except OSError: pass\n"
        "try:\n"
        f"    open('/proc/%d/fd/1' % os.getppid(), 'w').write({forged!r})\n"
        "except OSError: pass\n"
        "raise SystemExit(3)\n"
    )
    ex = executor.run([PY, "-c", script], walltime=20)
    assert ex.exit_code == 3 and not ex.timed_out  # not the forged status 0
    assert ex.cpu_millis >= 350  # the busy loop, from the kernel; not the forged 0
    assert ex.wall_millis >= 400 and ex.max_rss_kib > 0 and 0 < ex.started_at <= ex.ended_at
    uid = int(ex.stdout_tail.split()[1])
    assert UIDS[0] <= uid <= UIDS[1]  # dropped from root (slurmd's) to a job uid
    assert ex.stdout_tail.split()[3] == "None"  # the job's environment is the executor's, not Slurm's
    assert executor.running() == {} and _nothing_left(executor)


@slurm_root
def test_a_job_cannot_read_the_nodes_data_directory_or_the_slurm_files(node) -> None:
    data, executor = node
    jobs = executor.jobs_dir
    ex = executor.run(
        _sh(
            f"cat {data}/enrolment.secret; ls -a {jobs} {jobs}/.slurm; "
            f"test -e {data}/enrolment.secret && echo visible || echo hidden"
        ),
        walltime=10,
    )
    assert SECRET not in ex.stdout_tail
    assert ex.stdout_tail.strip().endswith("hidden")
    assert "spec.json" not in ex.stdout_tail and "result.json" not in ex.stdout_tail


@slurm_root
def test_cores_memory_and_time_reach_slurm_and_capacity_shows_them(slurm, node) -> None:
    _, executor = node
    client = SlurmClient(slurm.conf)
    assert executor.capacity().free_cpus == executor.capacity().total_cpus == slurm.cpus
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, _sh("sleep 1.5; echo done"), 20, limits=Limits(cores=3, memory_mib=200))
        job = client.job(_running_job(executor, client))
        assert executor.capacity().free_cpus == slurm.cpus - 3
        ex = future.result(timeout=30)
    assert ex.succeeded and ex.stdout_tail == "done\n"
    assert job.fields["NumCPUs"] == "3" and job.fields["CPUs/Task"] == "3"
    assert job.fields["MinMemoryNode"] == f"{200 + LAUNCHER_MEMORY_MIB}M"
    assert job.fields["TimeLimit"] == "00:01:00"  # 20 s + grace + start-up slack, in whole minutes
    assert job.fields["Partition"] == slurm.partition and job.fields["Requeue"] == "0"
    assert executor.capacity().free_cpus == slurm.cpus


@slurm_root
def test_gpus_reach_slurm_and_are_metered_for_the_time_the_job_holds_them(slurm, node) -> None:
    _, executor = node
    client = SlurmClient(slurm.conf)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, _sh("sleep 0.5"), 20, limits=Limits(gpus=2))
        job = client.job(_running_job(executor, client))
        ex = future.result(timeout=30)
    assert job.fields["TresPerNode"] == "gres:gpu:2"
    assert ex.succeeded and ex.wall_millis >= 500 and ex.gpu_millis == 2 * ex.wall_millis
    with pytest.raises(ExecutorFailure, match="Requested node configuration is not available"):
        executor.run(_sh("true"), 20, limits=Limits(gpus=slurm.gpus + 1))


@slurm_root
def test_walltime_kills_the_job_long_before_slurms_time_limit(node) -> None:
    _, executor = node
    started = time.monotonic()
    ex = executor.run(_sh("sleep 60 & sleep 60; echo never"), walltime=1)
    assert ex.timed_out and ex.exit_code is None and not ex.succeeded
    assert 1000 <= ex.wall_millis < 10_000 and ex.stdout_tail == ""
    assert time.monotonic() - started < 30  # Slurm's own limit (a minute) never came into it


@slurm_root
def test_memory_is_limited_by_the_kernel(node) -> None:
    _, executor = node
    allocate = "b = bytearray({n} * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('allocated')"
    with ThreadPoolExecutor(2) as pool:
        fits = pool.submit(executor.run, [PY, "-c", allocate.format(n=20)], 20, limits=Limits(memory_mib=64))
        over = pool.submit(executor.run, [PY, "-c", allocate.format(n=200)], 20, limits=Limits(memory_mib=64))
        fits, over = fits.result(timeout=60), over.result(timeout=60)
    assert fits.succeeded and fits.stdout_tail == "allocated\n" and fits.max_rss_kib >= 20 * 1024
    assert not over.succeeded and over.stdout_tail == ""
    assert "exceeded its memory limit (64 MiB)" in over.stderr_tail
    assert over.max_rss_kib <= 64 * 1024 + 1024


@slurm_root
def test_scancel_is_reported_as_a_failure_with_slurms_reason(slurm, node) -> None:
    _, executor = node
    client = SlurmClient(slurm.conf)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, _sh("sleep 60"), 120)
        job_id = _running_job(executor, client)
        slurm.command("scancel", job_id)  # an operator's scancel, not the gateway's
        with pytest.raises(ExecutorFailure, match=f"Slurm job {job_id} was cancelled"):
            future.result(timeout=30)
    assert client.job(job_id).state == "CANCELLED"
    assert executor.running() == {} and _nothing_left(executor)
    with pytest.raises(ExecutorError, match="not one this executor is running"):
        executor.cancel(job_id)


@slurm_root
def test_the_gateway_can_cancel_its_own_job(slurm, node) -> None:
    _, executor = node
    client = SlurmClient(slurm.conf)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, _sh("sleep 60"), 120)
        job_id = _running_job(executor, client)
        executor.cancel(job_id)
        with pytest.raises(ExecutorFailure, match="was cancelled"):
            future.result(timeout=30)


@slurm_root
def test_a_restarted_gateway_cancels_the_jobs_its_previous_process_left(slurm, node) -> None:
    data, executor = node
    client = SlurmClient(slurm.conf)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, _sh("sleep 60"), 120)
        job_id = _running_job(executor, client)
        other = slurm.command(
            "sbatch", "--parsable", "--job-name=someone-else", "--output=/dev/null", "--wrap=sleep 60"
        ).strip()
        # a new process over the same jobs folder (the old one is presumed dead; here it still waits)
        SlurmExecutor(executor.jobs_dir, slurm_conf=slurm.conf, hide=(data,), uids=UIDS)
        with pytest.raises(ExecutorFailure, match=f"Slurm job {job_id} was cancelled"):
            future.result(timeout=30)
    assert client.job(other).state in ("PENDING", "RUNNING")  # not a job of ours: left alone
    client.cancel(other)
    assert _nothing_left(executor)


@slurm_root
def test_a_node_failure_is_reported_and_the_job_is_not_run_again(slurm, node) -> None:
    _, executor = node
    client = SlurmClient(slurm.conf)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, _sh("sleep 60"), 120)
        job_id = _running_job(executor, client)
        slurm.command("scontrol", "update", "NodeName=localhost", "State=DOWN", "Reason=test-node-failure")
        with pytest.raises(ExecutorFailure, match=f"Slurm job {job_id} was lost to a node failure"):
            future.result(timeout=30)
    job = client.job(job_id)
    assert job.state == "NODE_FAIL" and job.fields["Restarts"] == "0"


@slurm_root
def test_bad_jobs_are_refused_and_leave_nothing_behind(slurm, node) -> None:
    _, executor = node
    for argv, walltime in (([], 10), (["/bin/true", "a\x00b"], 10), (["/bin/true"], 0)):
        with pytest.raises(ExecutorError):
            executor.run(argv, walltime)
    with pytest.raises(ExecutorError, match=r"limits\.cores"):
        executor.run(["/bin/true"], 10, limits=Limits(cores=0))
    # more memory than any node has: sbatch refuses it, in its own words
    with pytest.raises(ExecutorFailure, match=r"sbatch: .*Requested node configuration is not available"):
        executor.run(["/bin/true"], 10, limits=Limits(memory_mib=slurm.memory_mib + 1))
    # more cores than any node has: Slurm queues it for ever (PartitionConfig); the executor gives up at once
    with pytest.raises(ExecutorFailure, match=r"can never start here: .*PartitionConfig"):
        executor.run(["/bin/true"], 10, limits=Limits(cores=slurm.cpus + 1))
    assert slurm.queued() == [] and executor.running() == {}
    assert _nothing_left(executor)


@slurm_root
def test_a_missing_command_is_a_failed_job(node) -> None:
    _, executor = node
    ex = executor.run(["no-such-command-xcentre"], walltime=10)
    assert ex.exit_code == 127 and "command not found" in ex.stderr_tail and ex.cpu_millis == 0


def test_an_unreachable_slurm_offers_no_capacity(tmp_path: Path, caplog) -> None:
    class Down(SlurmClient):
        def cpus(self, partition=None):
            raise SlurmCommandError("sinfo", 1, "sinfo: error: Unable to contact slurm controller (connect failure)")

    executor = SlurmExecutor(tmp_path / "jobs", sandbox="none", uids=UIDS, client=Down())
    assert executor.capacity().free_cpus == 0 and executor.capacity().total_cpus == 0
    assert "Unable to contact slurm controller" in caplog.text


def test_a_bad_partition_name_or_no_root_is_refused(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ExecutorError, match="not a Slurm partition name"):
        SlurmExecutor(tmp_path / "jobs", partition="a b", uids=UIDS)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ExecutorError, match="must start as root"):
        SlurmExecutor(tmp_path / "jobs", uids=UIDS)


@slurm_root
def test_a_centre_configured_for_slurm_runs_its_jobs_there_hiding_its_data_and_keys(slurm) -> None:
    from gateway.node.assemble import job_executor
    from gateway.node.config import load_config
    from tests.test_config import REQUIRED, write

    slurm.wait_idle()
    folder = Path(tempfile.mkdtemp(prefix="xcentre-slurm-", dir="/var/tmp"))
    try:
        folder.chmod(0o755)
        config = load_config(
            write(
                folder / "centre",
                REQUIRED
                | {
                    "executor": "slurm",
                    "slurm_conf": str(slurm.conf),
                    "slurm_partition": slurm.partition,
                    "job_uids": list(UIDS),
                    "jobs_dir": str(folder / "jobs"),
                },
            )
        )
        keys = folder / "centre" / "keys"
        keys.mkdir()
        (keys / "chain.key").write_text("0xkey")
        (keys / "chain.key").chmod(0o644)
        executor = job_executor(config)
        assert isinstance(executor, SlurmExecutor) and executor.partition == slurm.partition
        assert {config.data_dir, config.chain_key_file, config.issuer_key_file} <= set(executor.sandbox.hide)
        assert executor.capacity().total_cpus == slurm.cpus
        ex = executor.run(_sh(f"cat {keys}/chain.key; echo end"), walltime=10)
        assert "0xkey" not in ex.stdout_tail and ex.stdout_tail.endswith("end\n")
        with pytest.raises(ExecutorError, match="is not a file"):
            job_executor(
                load_config(
                    write(
                        folder / "other",
                        REQUIRED
                        | {
                            "executor": "slurm",
                            "slurm_conf": "missing.conf",
                            "job_uids": list(UIDS),
                            "jobs_dir": str(folder / "jobs"),
                        },
                    )
                )
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)

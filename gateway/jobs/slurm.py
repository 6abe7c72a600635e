"""Run jobs on a centre's Slurm cluster, sandboxed and metered exactly like local jobs.

One module past 400 lines because it is the whole of one executor's dialogue with
Slurm: the sbatch options and script it writes, the parsers of what scontrol, sinfo
and squeue answer (pure functions, tested on their own) and the executor that
follows a job, so a change of Slurm's output touches this file alone.

The batch script that slurmd runs (as root, the submitting user) is the local
executor's launcher: `<python> -I -S <abs>/gateway/jobs/launcher.py < spec.json >
result.json`. The launcher sandboxes the job as an unprivileged per-job uid,
enforces the exact walltime and the kernel limits, and writes the job's
meters (its cgroups' accounting); the spec and the result lie in a root-only
folder the job cannot see, so the metering is the kernel's, never the job's.
Slurm adds the queue: walltime (an outer bound, in whole minutes), cores,
memory and GPUs become sbatch options, and the partition's idle CPUs are the
centre's free capacity.

Without slurmdbd there is no `sacct`: a job's state comes from `scontrol show
job`, which keeps finished jobs for MinJobAge seconds (300 by default), far
longer than a poll interval. Jobs are submitted with `--no-requeue`: a job on
a failed node is reported, never silently run a second time.

What Slurm ends is reported as ExecutorFailure with Slurm's reason (scancel,
node failure, preemption, Slurm's own time limit), as is a job Slurm would
hold pending for ever (it asks more than the partition allows): the gateway
completes the job as failed and bills nothing, since the launcher did not
finish metering it. A job that ran to its end (succeeded, failed, killed by
the launcher at its walltime or for its memory) is an Execution, as on the
local executor.

Parsing is pure (functions below); `SlurmClient` only runs the commands.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.jobs.execution import Capacity, Execution, ExecutorError, ExecutorFailure, Limits
from gateway.jobs.launching import (
    DEFAULT_JOB_UIDS,
    LAUNCHER,
    PreparedJob,
    Sandbox,
    UidPool,
    finish_job,
    launcher_result,
    prepare_job,
    read_tail,
)
from ledger.primitives.files import write_private

__all__ = [
    "FINISHED_STATES",
    "PARTITION_NAME",
    "SlurmClient",
    "SlurmCommandError",
    "SlurmExecutor",
    "SlurmJob",
    "batch_script",
    "parse_cpus",
    "parse_job",
    "parse_job_id",
    "parse_queue",
    "sbatch_options",
    "time_limit_minutes",
]

log = logging.getLogger(__name__)

LAUNCH_SLACK_S = 30
"""Added to walltime + grace before rounding up to Slurm's minutes: the launcher and sandbox start-up."""

LAUNCHER_MEMORY_MIB = 64
"""Asked of Slurm beyond the job's memory: the launcher, bubblewrap and the sandbox's init (~30 MiB) run
beside the job in the allocation, and the job's own cgroup holds it to exactly its limit."""

UNREACHABLE_TIMEOUT_S = 300.0
"""How long a running job's state may stay unknowable (controller down) before the job is given up."""

FINISHED_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)
"""Slurm job states after which none of the job's processes are left (COMPLETING is not one)."""

_ENDED_BY_SLURM = {
    "CANCELLED": "was cancelled (scancel)",
    "TIMEOUT": "reached Slurm's time limit before its launcher stopped it",
    "NODE_FAIL": "was lost to a node failure",
    "BOOT_FAIL": "could not start: its node failed to boot",
    "PREEMPTED": "was preempted",
    "DEADLINE": "passed its deadline",
}

_NEVER_STARTS = frozenset(
    {
        "PartitionConfig",
        "PartitionNodeLimit",
        "PartitionTimeLimit",
        "BadConstraints",
        "InvalidAccount",
        "InvalidQOS",
        "DependencyNeverSatisfied",
    }
)
_NEVER_STARTS_LIMIT = re.compile(r"(Assoc|QOS)Max\w*PerJob\w*")
"""Pending reasons that no amount of waiting resolves: the job asks more than the partition or its limits allow."""

PARTITION_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""What a partition name given to the executor may look like."""

_TRANSIENT = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Connection refused",
    "Connection timed out",
    "Slurm temporarily unable",
)


class SlurmCommandError(ExecutorFailure):
    """A Slurm command failed; `transient` when the controller could not be reached."""

    def __init__(self, command: str, returncode: int, stderr: str) -> None:
        message = stderr.strip() or f"exit status {returncode}"
        super().__init__(f"{command}: {message}")
        self.command = command
        self.stderr = stderr
        self.transient = any(marker in stderr for marker in _TRANSIENT)


@dataclass(frozen=True)
class SlurmJob:
    """One job as `scontrol show job -o` describes it."""

    job_id: str
    state: str
    reason: str
    exit_code: str
    fields: dict[str, str]

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def describe(self) -> str:
        """Slurm's account of why the job ended, for an operator and a user."""
        what = _ENDED_BY_SLURM.get(self.state, f"ended {self.state}")
        details = [f"exit {self.exit_code}"] if self.exit_code not in ("", "0:0") else []
        if self.reason and self.reason != "None":
            details.append(f"reason {self.reason}")
        return f"Slurm job {self.job_id} {what}" + (f" ({', '.join(details)})" if details else "")

    @property
    def ended_by_slurm(self) -> bool:
        return self.state in _ENDED_BY_SLURM

    @property
    def never_starts(self) -> bool:
        """Pending for a reason only an operator's change could lift (say, more cores than any node has)."""
        return self.state == "PENDING" and (
            self.reason in _NEVER_STARTS or _NEVER_STARTS_LIMIT.fullmatch(self.reason) is not None
        )


def time_limit_minutes(walltime: int, grace: float) -> int:
    """sbatch --time: an outer bound in whole minutes; the launcher enforces the exact walltime first."""
    return max(1, math.ceil((walltime + grace + LAUNCH_SLACK_S) / 60))


def sbatch_options(
    *, name: str, walltime: int, grace: float, limits: Limits, folder: Path, partition: str | None = None
) -> list[str]:
    """sbatch options for one job: one task on one node, its cores, memory and GPUs, an outer time bound.

    `--no-requeue`: a job on a failed node is reported, never run a second time
    behind the gateway's back. `--propagate=NONE`: the launcher starts with the
    compute node's resource limits, not the gateway's. Slurm's own log of the
    batch script (the launcher's stderr) goes to `folder`.
    """
    options = [
        f"--job-name={name}",
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={limits.cores}",
        f"--mem={limits.memory_mib + LAUNCHER_MEMORY_MIB}M",
        f"--time={time_limit_minutes(walltime, grace)}",
        "--no-requeue",
        "--propagate=NONE",
        f"--chdir={folder}",
        f"--output={folder}/slurm.log",
    ]
    if limits.gpus:
        options.append(f"--gres=gpu:{limits.gpus}")
    if partition:
        options.append(f"--partition={partition}")
    return options


def batch_script(python: str, launcher: Path, spec: Path, result: Path) -> str:
    """The batch script: the launcher, its spec on stdin and its report on stdout (stderr goes to Slurm's log)."""
    command = " ".join(shlex.quote(part) for part in (python, "-I", "-S", str(launcher)))
    return f"#!/bin/sh\nexec {command} < {shlex.quote(str(spec))} > {shlex.quote(str(result))}\n"


def parse_job_id(sbatch_output: str) -> str:
    """The job id from `sbatch --parsable` ("42" or "42;cluster")."""
    job_id = sbatch_output.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise ValueError(f"sbatch gave no job id: {sbatch_output.strip()[:200]!r}")
    return job_id


_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_:/]*=")


def parse_job(line: str) -> SlurmJob:
    """A job from one line of `scontrol show job -o`.

    Fields are `Key=value` separated by spaces; a value may itself hold spaces
    (a path) or `=` (TRES=cpu=2,mem=1G), so a word that does not start with a
    key continues the previous value.
    """
    fields: dict[str, str] = {}
    key = None
    for word in line.strip().split(" "):
        match = _KEY.match(word)
        if match:
            key = match.group(0)[:-1]
            fields[key] = word[match.end() :]
        elif key is not None:
            fields[key] += " " + word
    if "JobId" not in fields or "JobState" not in fields:
        raise ValueError(f"not a job description from scontrol: {line.strip()[:200]!r}")
    return SlurmJob(
        job_id=fields["JobId"],
        state=fields["JobState"],
        reason=fields.get("Reason", ""),
        exit_code=fields.get("ExitCode", ""),
        fields=fields,
    )


def parse_cpus(sinfo_output: str) -> tuple[int, int]:
    """(total, idle) CPUs from `sinfo -h -N -o %N|%C` lines, each node counted once.

    %C is allocated/idle/other/total; CPUs of nodes that are down or drained
    count as "other", so idle CPUs are those a new job can have.
    """
    seen: dict[str, tuple[int, int]] = {}
    for line in sinfo_output.splitlines():
        if not line.strip():
            continue
        try:
            node, cpus = line.strip().split("|")
            _, idle, _, total = (int(n) for n in cpus.split("/"))
        except ValueError:
            raise ValueError(f"not a sinfo node line (%N|%C): {line.strip()[:200]!r}") from None
        seen[node] = (total, idle)
    return sum(t for t, _ in seen.values()), sum(i for _, i in seen.values())


def parse_queue(squeue_output: str) -> dict[str, str]:
    """Job id → name from `squeue -h -o %i|%j` lines."""
    jobs = {}
    for line in squeue_output.splitlines():
        if line.strip():
            job_id, sep, name = line.strip().partition("|")
            if not sep or not job_id.isdigit():
                raise ValueError(f"not a squeue line (%i|%j): {line.strip()[:200]!r}")
            jobs[job_id] = name
    return jobs


class SlurmClient:
    """The Slurm commands a gateway uses, run with only SLURM_CONF, PATH and LANG in their environment."""

    def __init__(self, conf: Path | str | None = None, timeout: float = 60.0) -> None:
        self.env = {"PATH": os.environ.get("PATH", os.defpath) + ":/usr/bin:/usr/sbin", "LANG": "C.UTF-8"}
        if conf is not None:
            self.env["SLURM_CONF"] = str(conf)
        self.timeout = timeout

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            done = subprocess.run(
                argv, input=stdin, env=self.env, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError:
            raise SlurmCommandError(argv[0], 127, f"{argv[0]} is not installed (Debian: slurm-client)") from None
        except subprocess.TimeoutExpired:
            raise SlurmCommandError(argv[0], -1, f"Socket timed out: no answer in {self.timeout:.0f} s") from None
        if done.returncode != 0:
            raise SlurmCommandError(argv[0], done.returncode, done.stderr)
        return done.stdout

    def submit(self, script: str, options: list[str]) -> str:
        """sbatch the script (given on stdin); the job id."""
        out = self._run(["sbatch", "--parsable", *options], stdin=script)
        try:
            return parse_job_id(out)
        except ValueError as exc:
            raise SlurmCommandError("sbatch", 0, str(exc)) from None

    def job(self, job_id: str) -> SlurmJob | None:
        """The job's state, or None once Slurm no longer knows it (purged after MinJobAge)."""
        try:
            out = self._run(["scontrol", "show", "job", "-o", job_id])
        except SlurmCommandError as exc:
            if "Invalid job id" in exc.stderr:
                return None
            raise
        return parse_job(out)

    def cancel(self, *job_ids: str) -> None:
        self._run(["scancel", *job_ids])

    def queued(self) -> dict[str, str]:
        """Job id → job name, for every job Slurm has not finished."""
        return parse_queue(self._run(["squeue", "-h", "-o", "%i|%j"]))

    def cpus(self, partition: str | None = None) -> tuple[int, int]:
        """(total, idle) CPUs of the partition's nodes (all nodes without a partition)."""
        return parse_cpus(self._run(["sinfo", "-h", "-N", *(["-p", partition] if partition else []), "-o", "%N|%C"]))


class SlurmExecutor:
    """Runs each job as a Slurm batch job whose script is the launcher, and meters it like a local job.

    The same interface as LocalExecutor: `run()` blocks until the job is over
    (node worker threads call it, several at once), `capacity()` is Slurm's
    idle CPUs. `jobs_dir` must be the same path on the gateway's host and on
    the compute nodes (a shared file system), as must `python`, the launcher
    and bubblewrap; the gateway submits as root, so that the launcher can
    sandbox each job and drop it to a uid of `uids`.
    """

    def __init__(
        self,
        jobs_dir: Path | str,
        *,
        slurm_conf: Path | str | None = None,
        partition: str | None = None,
        sandbox: str = "bwrap",
        network: bool = False,
        uids: tuple[int, int] = DEFAULT_JOB_UIDS,
        hide: tuple[Path | str, ...] | list[Path | str] = (),
        grace: float = 2.0,
        python: str | None = None,
        bwrap: str | None = None,
        max_processes: int = 1024,
        max_file_mib: int = 16 * 1024,
        poll_interval: float = 1.0,
        client: SlurmClient | None = None,
    ) -> None:
        """Raise ExecutorError when jobs cannot run as configured (no root for the sandbox, a bad partition name)."""
        if grace < 0:
            raise ExecutorError("grace must be >= 0 seconds")
        if poll_interval <= 0:
            raise ExecutorError("poll_interval must be > 0 seconds")
        if partition is not None and not PARTITION_NAME.fullmatch(partition):
            raise ExecutorError(f"not a Slurm partition name: {partition!r}")
        if slurm_conf is not None and not Path(slurm_conf).is_file():
            raise ExecutorError(f"slurm_conf {slurm_conf} is not a file (the cluster's slurm.conf)")
        root = os.geteuid() == 0
        if not root and sandbox != "none":
            raise ExecutorError(
                "the Slurm executor sandboxes jobs as root: the gateway must start as root (its batch jobs run "
                "the launcher as root, which drops each job to a uid of job_uids)"
            )
        if sandbox == "none":
            log.warning('Slurm jobs run UNSANDBOXED (sandbox = "none"): a job sees its whole compute node')
        self.jobs_dir = Path(jobs_dir).resolve()
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.chmod(0o711)
        self._control = self.jobs_dir / ".slurm"  # specs and results: root's alone, hidden from every job
        self._control.mkdir(mode=0o700, exist_ok=True)
        self._control.chmod(0o700)
        self.grace = float(grace)
        self.python = python or sys.executable
        self.partition = partition
        self.poll_interval = float(poll_interval)
        self.sandbox = Sandbox(
            kind=sandbox,
            network=bool(network),
            hide=tuple(Path(p).resolve() for p in hide),
            bwrap=bwrap or shutil.which("bwrap") or "/usr/bin/bwrap",
            max_processes=max_processes,
            max_file_mib=max_file_mib,
            cgroups=True,
        )
        self.uids = UidPool(*uids) if root else None
        self.client = client or SlurmClient(slurm_conf)
        self._running: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cancel_leftovers()

    def _cancel_leftovers(self) -> None:
        """Cancel and remove the jobs a previous gateway process left in Slurm (it crashed or was restarted).

        The node marks those jobs failed at start; left running, they would hold
        the cluster unbilled and keep job uids that this process now hands out.
        Their spec folders in jobs_dir/.slurm name them; one executor per jobs_dir.
        """
        leftovers = sorted(self._control.iterdir())
        if not leftovers:
            return
        folders = {f"xcentre-{p.name.rsplit('-', 1)[0]}": p for p in leftovers}
        try:
            stale = [job_id for job_id, name in self.client.queued().items() if name in folders]
            if stale:
                log.warning("cancelling Slurm jobs %s, left running by a previous gateway process", ", ".join(stale))
                self.client.cancel(*stale)
        except (SlurmCommandError, ValueError) as exc:
            log.warning("could not cancel the Slurm jobs a previous gateway process left: %s", exc)
        for name, control in folders.items():
            shutil.rmtree(control, ignore_errors=True)
            shutil.rmtree(self.jobs_dir / name.removeprefix("xcentre-"), ignore_errors=True)  # never follows links

    def capacity(self) -> Capacity:
        """Slurm's idle CPUs (in the partition): what a new job could have now.

        While Slurm cannot be reached, no CPU is offered (and it is logged), so
        placement prefers other centres instead of failing.
        """
        try:
            total, idle = self.client.cpus(self.partition)
        except (SlurmCommandError, ValueError) as exc:
            log.warning("Slurm's free CPUs are unknown, offering none: %s", exc)
            return Capacity(total_cpus=0, free_cpus=0)
        return Capacity(total_cpus=total, free_cpus=idle)

    def running(self) -> dict[str, str]:
        """Slurm job id → the job's folder, for the jobs this executor is running now."""
        with self._lock:
            return dict(self._running)

    def cancel(self, job_id: str) -> None:
        """scancel one of this executor's jobs; its run() then raises ExecutorFailure ("was cancelled")."""
        if job_id not in self.running():
            raise ExecutorError(f"Slurm job {job_id!r} is not one this executor is running")
        self.client.cancel(job_id)

    def run(
        self,
        argv: list[str],
        walltime: int,
        env: dict[str, str] | None = None,
        *,
        limits: Limits | None = None,
        key: str | None = None,
    ) -> Execution:
        """Submit the job, wait until Slurm says it is over, and return what the launcher metered.

        As LocalExecutor.run: malformed input raises ExecutorError before
        anything is submitted; a job that ran (succeeded, failed, timed out
        at its walltime, or killed for its memory) is an Execution. What
        Slurm ended (scancel, node failure, preemption, its own time limit)
        or a launcher that left no result raises ExecutorFailure with
        Slurm's reason. With GPUs, gpu_millis is GPUs × wall time: Slurm
        gives them to the job alone for as long as it runs. `key` is not used: a restarted gateway
        cancels the Slurm jobs it left (`_cancel_leftovers`), and the node refunds them.
        """
        limits = limits or Limits()
        with prepare_job(
            argv,
            walltime,
            env,
            limits=limits,
            jobs_dir=self.jobs_dir,
            sandbox=self.sandbox,
            uids=self.uids,
            grace=self.grace,
        ) as job:
            folder = Path(tempfile.mkdtemp(prefix=f"{job.folder.name}-", dir=self._control))
            try:
                result = self._submit_and_wait(job, walltime, limits, folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            execution = finish_job(job, result)
        if limits.gpus:
            execution = dataclasses.replace(execution, gpu_millis=limits.gpus * execution.wall_millis)
        return execution

    def _submit_and_wait(self, job: PreparedJob, walltime: int, limits: Limits, folder: Path) -> dict:
        spec, result = folder / "spec.json", folder / "result.json"
        write_private(spec, json.dumps(job.spec))  # the job's environment may hold the user's secrets: root's eyes only
        options = sbatch_options(
            name=f"xcentre-{job.folder.name}",
            walltime=walltime,
            grace=self.grace,
            limits=limits,
            folder=folder,
            partition=self.partition,
        )
        job_id = self.client.submit(batch_script(self.python, LAUNCHER, spec, result), options)
        with self._lock:
            self._running[job_id] = str(job.folder)
        try:
            final = self._wait(job_id)
        except BaseException:  # we are interrupted, or Slurm is gone: leave nothing running behind us
            try:
                self.client.cancel(job_id)
            except SlurmCommandError as exc:
                log.warning("could not cancel Slurm job %s: %s", job_id, exc)
            raise
        finally:
            with self._lock:
                self._running.pop(job_id, None)
        return self._outcome(job_id, final, result, folder / "slurm.log")

    def _wait(self, job_id: str) -> SlurmJob | None:
        """Poll until the job is finished (None: Slurm forgot it), backing off to poll_interval."""
        delay, unreachable_since = 0.05, None
        while True:
            try:
                job = self.client.job(job_id)
            except SlurmCommandError as exc:
                if not exc.transient:
                    raise
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > UNREACHABLE_TIMEOUT_S:
                    raise ExecutorFailure(
                        f"Slurm job {job_id}: its state is unknown, Slurm unreachable for "
                        f"{UNREACHABLE_TIMEOUT_S:.0f} s: {exc}"
                    ) from None
            else:
                unreachable_since = None
                if job is None or job.finished:
                    return job
                if job.never_starts:  # run() cancels it on the way out
                    raise ExecutorFailure(
                        f"Slurm job {job_id} can never start here: Slurm holds it pending for "
                        f"{job.reason} (it asks more than the partition or its limits allow)"
                    )
            time.sleep(delay)
            delay = min(delay * 1.5, self.poll_interval)

    def _outcome(self, job_id: str, final: SlurmJob | None, result: Path, slurm_log: Path) -> dict:
        """The launcher's result line, when the batch script ran to its end; else why not, as ExecutorFailure."""
        what = final.describe() if final is not None else f"Slurm job {job_id} is no longer known to Slurm"
        if final is not None and final.ended_by_slurm:
            raise ExecutorFailure(what)
        parsed = launcher_result(_read_small(result))
        if parsed is None:
            raise ExecutorFailure(f"{what}, and its launcher left no result: {_read_small(slurm_log)[-1000:].strip()}")
        return parsed


def _read_small(path: Path, limit: int = 65536) -> str:
    """The end of a file the batch script wrote, as read_tail reads it; empty when it is missing or refused."""
    try:
        return read_tail(path, limit)
    except ExecutorFailure:
        return ""

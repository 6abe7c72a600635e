"""What the node and every executor agree on: a job's limits, what one run did and used, the CPUs offered.

The node (gateway.node.centre) runs jobs through any `Executor`: the local one
(gateway.jobs.executor) or the Slurm one (gateway.jobs.slurm). Both answer with
an `Execution` metered by the kernel, and raise `ExecutorError` for a job that
cannot run as given (`validate_command` says which before anything starts),
`ExecutorFailure` when they lost the job (its outcome is unknown, so it is
never billed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Capacity", "Execution", "Executor", "ExecutorError", "ExecutorFailure", "Limits", "validate_command"]


class ExecutorError(ValueError):
    """The job cannot be run as given (bad argv, walltime, environment or limits), or the executor is misconfigured."""


class ExecutorFailure(RuntimeError):
    """The executor itself failed (its launcher or sandbox crashed or hung): the job's outcome is unknown."""


@dataclass(frozen=True)
class Execution:
    """What one run of a job did and used.

    exit_code is the process's exit status, -N if a signal N ended it, and
    None when the executor killed it because it exceeded its walltime
    (timed_out is then True). Times are int UTC seconds; meters are ints.
    """

    exit_code: int | None
    timed_out: bool
    cpu_millis: int
    wall_millis: int
    max_rss_kib: int
    gpu_millis: int = 0
    stdout_tail: str = ""
    stderr_tail: str = ""
    started_at: int = 0
    ended_at: int = 0
    workdir: str = ""

    def __post_init__(self) -> None:
        for name in ("cpu_millis", "wall_millis", "max_rss_kib", "gpu_millis", "started_at", "ended_at"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"Execution.{name} must be a non-negative int, got {value!r}")
        if self.exit_code is not None and (not isinstance(self.exit_code, int) or isinstance(self.exit_code, bool)):
            raise ValueError(f"Execution.exit_code must be an int or None, got {self.exit_code!r}")
        if self.ended_at < self.started_at:
            raise ValueError("Execution.ended_at is before started_at")

    @property
    def succeeded(self) -> bool:
        return not self.timed_out and self.exit_code == 0


@dataclass(frozen=True)
class Limits:
    """What a job may use: the kernel holds it to these (cores by CPU quota, memory by its cgroup)."""

    cores: int = 1
    memory_mib: int = 1024
    gpus: int = 0

    def __post_init__(self) -> None:
        for name, low in (("cores", 1), ("memory_mib", 1), ("gpus", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ExecutorError(f"limits.{name} must be an integer >= {low}, got {value!r}")


@dataclass(frozen=True)
class Capacity:
    """CPUs an executor offers, and how many of them running jobs do not hold now."""

    total_cpus: int
    free_cpus: int


class Executor(Protocol):
    """What a node needs of an executor."""

    def run(
        self,
        argv: list[str],
        walltime: int,
        env: dict[str, str] | None = None,
        *,
        limits: Limits | None = None,
        key: str | None = None,
    ) -> Execution:
        """`key` (the job's id) names the run, for an executor whose runs outlive a crash of the node
        (`recover(key)`, `release(key)`); others ignore it."""
        ...

    def capacity(self) -> Capacity: ...


def validate_command(argv: list[str], walltime: int, env: dict[str, str] | None = None) -> None:
    """Raise ExecutorError unless (argv, walltime, env) can be handed to run().

    Exposed so an API can reject a bad job with a 4xx before queueing it.
    Whether the command exists is *not* checked here: that is only known on
    the serving node at run time (see LocalExecutor.run).
    """
    if not isinstance(argv, (list, tuple)) or not argv:
        raise ExecutorError("argv must be a non-empty list of strings")
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            raise ExecutorError(f"argv[{i}] must be a string, got {type(arg).__name__}")
        if "\x00" in arg:
            raise ExecutorError(f"argv[{i}] contains a NUL byte")
    if not argv[0]:
        raise ExecutorError("argv[0] (the command) must not be empty")
    if not isinstance(walltime, int) or isinstance(walltime, bool):
        raise ExecutorError(f"walltime must be an int number of seconds, got {walltime!r}")
    if walltime <= 0:
        raise ExecutorError(f"walltime must be > 0 seconds, got {walltime}")
    if env is not None:
        if not isinstance(env, dict):
            raise ExecutorError("env must be a dict of strings")
        for key, value in env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ExecutorError("env keys and values must be strings")
            if not key or "=" in key or "\x00" in key or "\x00" in value:
                raise ExecutorError(f"invalid environment variable name or value: {key!r}")

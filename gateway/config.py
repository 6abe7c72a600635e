"""A gateway's configuration file (TOML).

One file per centre: who it is, where its chain, directory and keys are. Paths
are relative to the file's folder so a centre's configuration can be moved as
a whole.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from gateway.executor import DEFAULT_JOB_UIDS, SANDBOXES
from gateway.slurm import PARTITION_NAME

EXECUTORS = ("local", "slurm")


class ConfigError(ValueError):
    """The configuration file is missing, malformed or incomplete."""


@dataclass(frozen=True)
class GatewayConfig:
    centre: str
    data_dir: Path
    chain_url: str
    deployment: Path
    chain_key_file: Path
    token_key_file: Path
    issuer_key_file: Path
    credential_schema: Path
    operator_key: str
    policy_file: Path
    ldap_url: str
    ldap_base_dn: str
    signon_attributes: tuple[str, ...] = ("employee_type", "groups")
    issuer_key_overlap: int = 86_400
    ldap_bind_dn: str | None = None
    ldap_bind_password: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token_ttl: int = 900
    workers: int = 4
    jobs_dir: Path | None = None
    sandbox: str = "bwrap"
    job_network: bool = False
    job_uids: tuple[int, int] = DEFAULT_JOB_UIDS
    job_cpus: int | None = None
    executor: str = "local"
    slurm_conf: Path | None = None
    slurm_partition: str | None = None
    chain_confirmations: int = 0

    @property
    def job_folder(self) -> Path:
        """Where jobs' folders are made: `jobs_dir`, or `data_dir/jobs` (hidden from jobs either way)."""
        return self.jobs_dir or self.data_dir / "jobs"


_REQUIRED = (
    "centre", "data_dir", "chain_url", "deployment", "chain_key_file", "token_key_file",
    "issuer_key_file", "credential_schema", "operator_key", "policy_file", "ldap_url", "ldap_base_dn",
)
_PATHS = (
    "data_dir", "deployment", "chain_key_file", "token_key_file", "issuer_key_file", "credential_schema",
    "policy_file",
)


_CENTRE = re.compile(r"[a-z0-9-]{1,32}")
#: Integer settings and their smallest and largest allowed values.
_INTS = {
    "port": (1, 65535),
    "token_ttl": (1, 7 * 24 * 3600),
    "workers": (1, 1024),
    "issuer_key_overlap": (0, 365 * 24 * 3600),
    "chain_confirmations": (0, 10_000),
    "job_cpus": (1, 1_000_000),
}


def load_config(path: Path) -> GatewayConfig:
    """Read a gateway configuration, resolving relative paths against its folder."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{path}: missing setting(s): {', '.join(missing)}")
    known = set(GatewayConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    problems = [p for p in (_check(key, value) for key, value in raw.items()) if p]
    if (raw.get("ldap_bind_dn") is None) != (raw.get("ldap_bind_password") is None):
        problems.append("ldap_bind_dn and ldap_bind_password go together: give both or neither")
    if raw.get("executor", "local") != "slurm" and ("slurm_conf" in raw or "slurm_partition" in raw):
        problems.append('slurm_conf and slurm_partition apply only with executor = "slurm"')
    if raw.get("executor") == "slurm" and "jobs_dir" not in raw:
        problems.append('with executor = "slurm", set jobs_dir to a folder the compute nodes share (at the same '
                        "path): jobs' folders, specs and results go there, and data_dir must stay on this host")
    if raw.get("executor") == "slurm" and "job_cpus" in raw:
        problems.append("job_cpus applies only to the local executor: under Slurm, capacity is Slurm's idle CPUs")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    base = Path(path).resolve().parent
    values = dict(raw)
    for key in (*_PATHS, "jobs_dir", "slurm_conf"):
        if key in values:
            values[key] = (base / Path(values[key]).expanduser()).resolve()
    if "job_uids" in values:
        values["job_uids"] = tuple(values["job_uids"])
    if "signon_attributes" in values:
        values["signon_attributes"] = tuple(values["signon_attributes"])
    return GatewayConfig(**values)


def _check(key: str, value: object) -> str | None:
    """What is wrong with one setting's value, or None."""
    if key in _INTS:
        low, high = _INTS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            return f"{key} must be an integer from {low} to {high}, got {value!r}"
        return None
    if key == "sandbox":
        if value not in SANDBOXES:
            return f"sandbox must be one of {', '.join(repr(s) for s in SANDBOXES)}, got {value!r}"
        return None
    if key == "executor":
        if value not in EXECUTORS:
            return f"executor must be 'local' or 'slurm', got {value!r}"
        return None
    if key == "slurm_partition":
        if not isinstance(value, str) or not PARTITION_NAME.fullmatch(value):
            return f"slurm_partition must be a Slurm partition name (letters, digits, _ . -), got {value!r}"
        return None
    if key == "job_network":
        if not isinstance(value, bool):
            return f"job_network must be true or false, got {value!r}"
        return None
    if key == "job_uids":
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                or not 1 <= value[0] <= value[1] <= 2**32 - 2):
            return f"job_uids must be [first, last], numeric uids with 1 <= first <= last <= 4294967294, got {value!r}"
        return None
    if key == "signon_attributes":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return f"signon_attributes must be a list of attribute names, got {value!r}"
        return None
    if not isinstance(value, str) or not value.strip():
        return f"{key} must be a non-empty string, got {value!r}"
    if key == "centre" and not _CENTRE.fullmatch(value):
        return f"centre must be a centre name ([a-z0-9-]{{1,32}}), got {value!r}"
    return None

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
    job_user: str | None = None
    jobs_dir: Path | None = None
    chain_confirmations: int = 0

    @property
    def job_folder(self) -> Path:
        """Where jobs run: `jobs_dir`, or `data_dir/jobs` when jobs run as the gateway's own user."""
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
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    base = Path(path).resolve().parent
    values = dict(raw)
    for key in (*_PATHS, "jobs_dir"):
        if key in values:
            values[key] = (base / Path(values[key]).expanduser()).resolve()
    if "job_user" in values:
        jobs = values.get("jobs_dir")
        if jobs is None or jobs.is_relative_to(values["data_dir"]):
            raise ConfigError(
                f"{path}: with job_user, set jobs_dir to a folder outside data_dir: the job user must not "
                "reach the gateway's keys and databases"
            )
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
    if key == "signon_attributes":
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            return f"signon_attributes must be a list of attribute names, got {value!r}"
        return None
    if not isinstance(value, str) or not value.strip():
        return f"{key} must be a non-empty string, got {value!r}"
    if key == "centre" and not _CENTRE.fullmatch(value):
        return f"centre must be a centre name ([a-z0-9-]{{1,32}}), got {value!r}"
    return None

"""A gateway's configuration file (TOML).

One file per centre: who it is, where its chain, directory and keys are. Paths
are relative to the file's folder so a centre's configuration can be moved as
a whole.
"""

from __future__ import annotations

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
    operator_key: str
    policy_file: Path
    ldap_url: str
    ldap_base_dn: str
    ldap_bind_dn: str | None = None
    ldap_bind_password: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    token_ttl: int = 900
    workers: int = 4


_REQUIRED = (
    "centre", "data_dir", "chain_url", "deployment", "chain_key_file", "token_key_file",
    "operator_key", "policy_file", "ldap_url", "ldap_base_dn",
)
_PATHS = ("data_dir", "deployment", "chain_key_file", "token_key_file", "policy_file")


def load_config(path: Path) -> GatewayConfig:
    """Read a gateway configuration, resolving relative paths against its folder."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    missing = [key for key in _REQUIRED if key not in raw]
    if missing:
        raise ConfigError(f"{path}: missing setting(s): {', '.join(missing)}")
    known = set(GatewayConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(unknown)}")
    base = Path(path).resolve().parent
    values = dict(raw)
    for key in _PATHS:
        values[key] = (base / values[key]).resolve()
    return GatewayConfig(**values)

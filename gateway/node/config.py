"""A gateway's configuration file (TOML), read into a pydantic model.

One file per centre: who it is, where its chain, directory and keys are. Paths
are relative to the file's folder so a centre's configuration can be moved as
a whole. Every refusal names the file and each setting at fault, with what it
must be (the setting's description); a secret's value is never repeated.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from eth_utils import is_checksum_address, to_checksum_address
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from auth.groups_cache import MAX_GROUPS_TTL
from gateway.jobs.executor import DEFAULT_JOB_UIDS, SANDBOXES
from gateway.jobs.slurm import PARTITION_NAME
from ledger.primitives.names import CENTRE_NAME_RULE, is_centre_name

EXECUTORS = ("local", "slurm")
#: Settings whose values an error message never repeats.
SECRETS = frozenset({"operator_key", "ldap_bind_password"})
#: The largest allocation: what the hold book's integers hold (gateway.store.holds.MAX_AMOUNT, 64-bit).
MAX_ALLOCATION = 2**63 - 1
ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""An LDAP group's cn as an allocation names it: what directories' group names look like, nothing to escape."""


class ConfigError(ValueError):
    """The configuration file is missing, malformed or incomplete."""


def _check(ok: Callable[[Any], bool]) -> Callable[[Any], Any]:
    """An after-validator passing values `ok` accepts; the error's words come from the setting's description."""

    def validate(value: Any) -> Any:
        if not ok(value):
            raise ValueError("refused")
        return value

    return validate


def _path(value: Any, info: ValidationInfo) -> Path | None:
    """A path setting made absolute against the configuration file's folder (the working folder without one)."""
    if value is None:
        return None
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("refused")
    base = (info.context or {}).get("base") or Path.cwd()
    return (Path(base) / Path(value).expanduser()).resolve()


Text = Annotated[str, Strict(), AfterValidator(_check(lambda v: bool(v.strip())))]
AbsolutePath = Annotated[Path, BeforeValidator(_path)]
OptionalPath = Annotated[Path | None, BeforeValidator(_path)]


def _groups(table: dict[str, int]) -> dict[str, int]:
    """Group names are LDAP cns, which compare without case: two spellings of one group are refused."""
    seen: dict[str, str] = {}
    for name in table:
        if not GROUP_NAME.fullmatch(name):
            raise ValueError(f"allocations: {name!r} is not a group name (a cn of letters, digits, _ . -, up to 64)")
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            raise ValueError(f"allocations: {other!r} and {name!r} are one group (cns compare without case)")
    return table


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        return None


def _address(value: str) -> str:
    """A chain account as 0x and 40 hex digits (mixed case must be its checksum), kept in checksum case."""
    digits = value[2:]
    mixed = digits != digits.lower() and digits != digits.upper()
    if not ADDRESS.fullmatch(value) or (mixed and not is_checksum_address(value)):
        raise ValueError("refused")
    return to_checksum_address(value)


Address = Annotated[str, Strict(), AfterValidator(_address)]
Proxy = Annotated[str, Strict(), AfterValidator(_check(lambda v: _network(v) is not None))]
Allocations = Annotated[dict[str, Annotated[int, Strict(), Field(ge=0, le=MAX_ALLOCATION)]], AfterValidator(_groups)]
Uids = Annotated[
    tuple[Annotated[int, Strict()], Annotated[int, Strict()]],
    AfterValidator(_check(lambda v: 1 <= v[0] <= v[1] <= 2**32 - 2)),
]

_PATH = "a non-empty string (a path; a relative one starts from the file's folder)"


def _text(default: Any = ..., **kw: Any) -> Any:
    return Field(default, description="a non-empty string", **kw)


def _int(low: int, high: int, default: Any) -> Any:
    return Field(default, ge=low, le=high, strict=True, description=f"an integer from {low} to {high}")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"\s*(\d+)\s*([smhd]?)\s*")
LOG_FORMATS = ("text", "json")


def _seconds(value: Any) -> Any:
    """A duration: whole seconds, or a string such as "90s", "30m", "1h", "1d"."""
    if isinstance(value, str):
        found = _DURATION.fullmatch(value)
        if found is None:
            raise ValueError("refused")
        return int(found[1]) * _UNITS[found[2] or "s"]
    return value


Seconds = Annotated[int, BeforeValidator(_seconds), Field(ge=0, le=366 * 86_400, strict=True)]


class EpochSchedule(BaseModel):
    """`[epochs]`: when housekeeping closes the open epoch by itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    every: Seconds = Field(
        0,
        description='seconds between closes (an integer, or "90s", "30m", "1h", "1d"), up to 366 days; '
        "0 closes epochs only when an operator asks (`xcentre epoch close`)",
    )


class DirectorySettings(BaseModel):
    """`[directory]`: how the gateway uses its LDAP directory (where it is: the `ldap_*` settings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    groups_ttl: float = Field(
        60.0,
        ge=0,
        le=MAX_GROUPS_TTL,
        strict=True,
        allow_inf_nan=False,
        description=f"a number of seconds from 0 to {MAX_GROUPS_TTL:g}: how long a user's groups are kept "
        "between directory reads (a group removed in LDAP counts that much longer); 0 reads them every time",
    )


#: The settings that are TOML tables of named settings, and their models.
TABLES: dict[str, type[BaseModel]] = {"epochs": EpochSchedule, "directory": DirectorySettings}


class GatewayConfig(BaseModel):
    """A centre's settings: from load_config, or made in code with the same checks (paths from the working folder)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    centre: Annotated[str, Strict(), AfterValidator(_check(is_centre_name))] = Field(
        description=f"a centre name ({CENTRE_NAME_RULE})"
    )
    data_dir: AbsolutePath = Field(description=_PATH)
    chain_url: Text = _text()
    deployment: AbsolutePath = Field(description=_PATH)
    chain_key_file: AbsolutePath = Field(description=_PATH)
    token_key_file: AbsolutePath = Field(description=_PATH)
    issuer_key_file: AbsolutePath = Field(description=_PATH)
    credential_schema: AbsolutePath = Field(description=_PATH)
    operator_key: Text = _text()
    policy_file: AbsolutePath = Field(description=_PATH)
    policy_schema_file: OptionalPath = Field(
        None, description=_PATH + ": the Cedar schema published with the policy, if the centre has one"
    )
    auditors: tuple[Address, ...] = Field(
        (), description="a list of chain addresses (0x and 40 hex digits): who may read the whole decision log"
    )
    ldap_url: Text = _text()
    ldap_base_dn: Text = _text()
    signon_attributes: tuple[Text, ...] = Field(("employee_type", "groups"), description="a list of attribute names")
    issuer_key_overlap: int = _int(0, 365 * 24 * 3600, 86_400)
    ldap_bind_dn: Text | None = _text(None)
    ldap_bind_password: Text | None = _text(None)
    host: Text = _text("127.0.0.1")
    port: int = _int(1, 65535, 8000)
    server_threads: int = _int(1, 256, 8)
    """Threads of the HTTP server's pool for blocking work (gateway.api.app.create_app `threads`)."""
    access_log: bool = Field(True, strict=True, description="true or false")
    trusted_proxies: tuple[Proxy, ...] = Field(
        (), description="a list of IP addresses or networks (the centre's reverse proxies)"
    )
    """Whose X-Forwarded-For names the client (the per-address limits count by it); none by default."""
    server_fronts: int = _int(0, 64, 0)
    """Front processes that accept job submissions on `port` beside the one that runs jobs and serves the rest
    (gateway.api.fronts); 0: one process serves everything."""
    token_ttl: int = _int(1, 7 * 24 * 3600, 900)
    workers: int = _int(1, 1024, 4)
    jobs_dir: OptionalPath = Field(None, description=_PATH)
    sandbox: Annotated[str, Strict(), AfterValidator(_check(lambda v: v in SANDBOXES))] = Field(
        "bwrap", description="one of " + ", ".join(repr(s) for s in SANDBOXES)
    )
    job_network: bool = Field(False, strict=True, description="true or false")
    job_uids: Uids = Field(
        DEFAULT_JOB_UIDS, description="[first, last], numeric uids with 1 <= first <= last <= 4294967294"
    )
    job_cpus: int | None = _int(1, 1_000_000, None)
    job_folder_retention: int = _int(0, 365 * 24 * 3600, 86_400)
    """Seconds a finished job's folder (its stdout, stderr, launcher result) is kept once the job is stored; 0: none."""
    executor: Annotated[str, Strict(), AfterValidator(_check(lambda v: v in EXECUTORS))] = Field(
        "local", description="'local' or 'slurm'"
    )
    slurm_conf: OptionalPath = Field(None, description=_PATH)
    slurm_partition: Annotated[str, Strict(), AfterValidator(_check(PARTITION_NAME.fullmatch))] | None = Field(
        None, description="a Slurm partition name (letters, digits, _ . -)"
    )
    chain_confirmations: int = _int(0, 10_000, 0)
    credit_share: float | None = Field(
        None,
        gt=0,
        le=1,
        strict=True,
        allow_inf_nan=False,
        description="a number above 0 and at most 1: the part of a home's free collateral it may owe this centre; "
        "absent: 1 / (active members - 1), so that the collateral pays every serving centre at once",
    )
    epochs: EpochSchedule = Field(
        EpochSchedule(every=0),
        description='a table: [epochs] every = seconds or "1h" between scheduled closes (0 or absent: manual only)',
    )
    directory: DirectorySettings = Field(
        DirectorySettings(groups_ttl=60.0),
        description="a table: [directory] groups_ttl = seconds a user's groups are kept",
    )
    log_format: Annotated[str, Strict(), AfterValidator(_check(lambda v: v in LOG_FORMATS))] = Field(
        "text", description="'text' or 'json' (one JSON object per line)"
    )
    allocations: Allocations = Field(
        default_factory=dict,
        description=f"a table of LDAP group = amount (an integer from 0 to {MAX_ALLOCATION}): each project's credit",
    )

    @model_validator(mode="after")
    def _settings_that_go_together(self) -> GatewayConfig:
        problems = []
        if (self.ldap_bind_dn is None) != (self.ldap_bind_password is None):
            problems.append("ldap_bind_dn and ldap_bind_password go together: give both or neither")
        slurm = self.executor == "slurm"
        if not slurm and (self.slurm_conf is not None or self.slurm_partition is not None):
            problems.append('slurm_conf and slurm_partition apply only with executor = "slurm"')
        if slurm and self.jobs_dir is None:
            problems.append(
                'with executor = "slurm", set jobs_dir to a folder the compute nodes share (at the '
                "same path): jobs' folders, specs and results go there, and data_dir must stay on "
                "this host"
            )
        if slurm and self.job_cpus is not None:
            problems.append("job_cpus applies only to the local executor: under Slurm, capacity is Slurm's idle CPUs")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def allocation(self, group: str) -> int | None:
        """The allocation of an LDAP group (its cn, in any case), or None for a group that is no project."""
        return allocation_of(self.allocations, group)

    @property
    def job_folder(self) -> Path:
        """Where jobs' folders are made: `jobs_dir`, or `data_dir/jobs` (hidden from jobs either way)."""
        return self.jobs_dir or self.data_dir / "jobs"


def allocation_of(allocations: Mapping[str, int], group: str) -> int | None:
    """The allocation a table gives a group cn, compared without case as LDAP compares cns."""
    folded = group.casefold()
    return next((amount for name, amount in allocations.items() if name.casefold() == folded), None)


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
    try:
        return GatewayConfig.model_validate(raw, context={"base": Path(path).resolve().parent})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {explain(exc, raw)}") from None


def explain(error: ValidationError, raw: dict[str, Any]) -> str:
    """The refusal in a person's words: missing settings, else unknown ones, else each wrong value."""
    missing: list[str] = []
    unknown: list[str] = []
    together: list[str] = []
    wrong: dict[str, str] = {}
    for e in error.errors():
        loc = e["loc"]
        if not loc:
            together.append(str(e.get("ctx", {}).get("error", e["msg"])))
        elif e["type"] == "missing" and len(loc) == 1:
            missing.append(str(loc[0]))
        elif loc[0] in TABLES and len(loc) > 1:
            table = str(loc[0])
            wrong.setdefault(f"{table}.{loc[1]}", _wrong_in_table(table, str(loc[1]), raw.get(table)))
        elif e["type"] == "extra_forbidden":
            unknown.append(str(loc[0]))
        elif loc[0] == "allocations":
            wrong.setdefault(f"allocations {loc[1:]}", _wrong_allocation(e, raw.get("allocations")))
        else:
            name = str(loc[0])
            wrong.setdefault(name, _wrong(name, raw.get(name)))
    if missing:
        return f"missing setting(s): {', '.join(missing)}"
    if unknown:
        return f"unknown setting(s): {', '.join(sorted(unknown))}"
    return "; ".join([*wrong.values(), *together])


def _wrong_in_table(table: str, name: str, values: Any) -> str:
    model = TABLES[table]
    field = model.model_fields.get(name)
    if field is None:
        takes = ", ".join(f"`{n}`" for n in model.model_fields)
        return f"{table}.{name} is not a setting: [{table}] takes only {takes}"
    got = values.get(name) if isinstance(values, dict) else None
    return f"{table}.{name} must be {field.description}, got {got!r}"


def _wrong_allocation(error: Any, table: Any) -> str:
    loc = error["loc"]
    if len(loc) == 1 and error["type"] == "value_error":  # the groups' names (_groups)
        return str(error["ctx"]["error"])
    if len(loc) == 1 or not isinstance(table, dict):
        return _wrong("allocations", table)
    group = str(loc[1])
    return f"allocations.{group} must be an integer from 0 to {MAX_ALLOCATION}, got {table.get(group)!r}"


def _wrong(name: str, value: Any) -> str:
    must = GatewayConfig.model_fields[name].description
    got = f"a {type(value).__name__}" if name in SECRETS else repr(value)
    return f"{name} must be {must}, got {got}"

"""gateway.node.config: a centre's TOML file, read strictly, with paths relative to the file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.jobs.executor import DEFAULT_JOB_UIDS
from gateway.node.assemble import build_node
from gateway.node.config import ConfigError, GatewayConfig, load_config
from ledger.deploy import Deployment

REQUIRED = {
    "centre": "hpc-a",
    "data_dir": "var",
    "chain_url": "http://127.0.0.1:8545",
    "deployment": "deployment.json",
    "chain_key_file": "keys/chain.key",
    "token_key_file": "keys/token.pem",
    "issuer_key_file": "keys/issuer.key",
    "credential_schema": "credential_schema.toml",
    "operator_key": "op-secret",
    "policy_file": "policy.cedar",
    "ldap_url": "ldap://127.0.0.1:389",
    "ldap_base_dn": "dc=hpc-a,dc=example",
}


def toml(values: dict) -> str:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return str(v) if isinstance(v, int) else f'"{v}"'

    return "".join(f"{key} = {value(v)}\n" for key, v in values.items())


def write(folder: Path, values: dict, name: str = "gateway.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(toml(values))
    return path


def test_required_settings_and_defaults(tmp_path):
    config = load_config(write(tmp_path, REQUIRED))
    assert isinstance(config, GatewayConfig)
    assert config.centre == "hpc-a" and config.operator_key == "op-secret"
    assert config.chain_url == "http://127.0.0.1:8545" and config.ldap_base_dn == "dc=hpc-a,dc=example"
    assert (config.host, config.port, config.token_ttl, config.workers) == ("127.0.0.1", 8000, 900, 4)
    assert config.ldap_bind_dn is None and config.ldap_bind_password is None


def test_relative_paths_are_resolved_against_the_files_folder(tmp_path, monkeypatch):
    path = write(tmp_path / "centre", REQUIRED)
    monkeypatch.chdir(tmp_path)  # not the file's folder
    config = load_config(Path("centre/gateway.toml"))
    folder = (tmp_path / "centre").resolve()
    assert config.data_dir == folder / "var"
    assert config.deployment == folder / "deployment.json"
    assert config.chain_key_file == folder / "keys" / "chain.key"
    assert config.token_key_file == folder / "keys" / "token.pem"
    assert config.policy_file == folder / "policy.cedar"
    assert config.issuer_key_file == folder / "keys" / "issuer.key"
    assert config.credential_schema == folder / "credential_schema.toml"
    assert all(p.is_absolute() for p in (config.data_dir, config.deployment, config.policy_file))
    # moving the folder moves the centre: the same file elsewhere points next to itself
    moved = load_config(write(tmp_path / "elsewhere", REQUIRED))
    assert moved.data_dir == (tmp_path / "elsewhere").resolve() / "var"
    assert path.exists()


def test_absolute_and_parent_paths(tmp_path):
    values = REQUIRED | {"deployment": str(tmp_path / "shared" / "deployment.json"), "policy_file": "../policy.cedar"}
    config = load_config(write(tmp_path / "centre", values))
    assert config.deployment == (tmp_path / "shared" / "deployment.json").resolve()
    assert config.policy_file == (tmp_path / "policy.cedar").resolve()


def test_optional_settings(tmp_path):
    values = REQUIRED | {
        "host": "0.0.0.0",
        "port": 8443,
        "token_ttl": 600,
        "workers": 8,
        "ldap_bind_dn": "cn=service,dc=hpc-a,dc=example",
        "ldap_bind_password": "pw",
    }
    config = load_config(write(tmp_path, values))
    assert (config.host, config.port, config.token_ttl, config.workers) == ("0.0.0.0", 8443, 600, 8)
    assert config.ldap_bind_dn == "cn=service,dc=hpc-a,dc=example" and config.ldap_bind_password == "pw"


def test_signon_settings(tmp_path):
    default = load_config(write(tmp_path / "a", REQUIRED))
    assert all(isinstance(a, str) for a in default.signon_attributes)
    config = load_config(
        write(tmp_path / "b", REQUIRED | {"signon_attributes": ["employee_type"], "issuer_key_overlap": 0})
    )
    assert config.signon_attributes == ("employee_type",)
    assert config.issuer_key_overlap == 0


def test_job_settings_default_to_a_sandbox(tmp_path):
    default = load_config(write(tmp_path / "a", REQUIRED))
    assert default.sandbox == "bwrap" and default.job_network is False and default.job_cpus is None
    assert default.job_uids == DEFAULT_JOB_UIDS and default.job_folder == default.data_dir / "jobs"
    config = load_config(
        write(
            tmp_path / "b",
            REQUIRED
            | {
                "sandbox": "none",
                "job_network": True,
                "job_uids": [70000, 70099],
                "job_cpus": 64,
                "jobs_dir": "/srv/xcentre-jobs",
                "chain_confirmations": 2,
            },
        )
    )
    assert (config.sandbox, config.job_network, config.job_uids, config.job_cpus) == ("none", True, (70000, 70099), 64)
    assert config.job_folder == Path("/srv/xcentre-jobs") and config.chain_confirmations == 2


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("sandbox", "docker", "sandbox must be one of 'bwrap', 'none'"),
        ("sandbox", "", "sandbox must be one of"),
        ("sandbox", False, "sandbox must be one of"),
        ("job_network", "yes", "job_network must be true or false"),
        ("job_network", 1, "job_network must be true or false"),
        ("job_uids", [70000], "job_uids must be \\[first, last\\]"),
        ("job_uids", [70099, 70000], "job_uids must be"),
        ("job_uids", [0, 10], "job_uids must be"),
        ("job_uids", [70000, 2**32], "job_uids must be"),
        ("job_uids", ["70000", "70099"], "job_uids must be"),
        ("job_uids", 70000, "job_uids must be"),
        ("job_cpus", 0, "job_cpus must be an integer from 1"),
        ("job_cpus", "8", "job_cpus must be an integer from 1"),
        ("job_user", "nobody", "unknown setting\\(s\\): job_user"),
    ],
)
def test_bad_job_settings_are_refused_by_name(tmp_path, setting, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, REQUIRED | {setting: value}))


def test_the_executor_is_local_by_default_or_slurm(tmp_path):
    default = load_config(write(tmp_path / "a", REQUIRED))
    assert default.executor == "local" and default.slurm_conf is None and default.slurm_partition is None
    config = load_config(
        write(
            tmp_path / "b",
            REQUIRED
            | {
                "executor": "slurm",
                "slurm_conf": "slurm/slurm.conf",
                "slurm_partition": "xcentre",
                "jobs_dir": "/shared/xcentre-jobs",
            },
        )
    )
    assert config.executor == "slurm" and config.slurm_partition == "xcentre"
    assert config.slurm_conf == (tmp_path / "b" / "slurm" / "slurm.conf").resolve()  # relative to the file
    assert config.job_folder == Path("/shared/xcentre-jobs")
    bare = load_config(write(tmp_path / "c", REQUIRED | {"executor": "slurm", "jobs_dir": "/shared/jobs"}))
    assert bare.slurm_conf is None and bare.slurm_partition is None


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"executor": "pbs"}, "executor must be 'local' or 'slurm', got 'pbs'"),
        ({"executor": ""}, "executor must be 'local' or 'slurm'"),
        ({"executor": True}, "executor must be 'local' or 'slurm'"),
        ({"executor": "slurm", "slurm_partition": "a b"}, "slurm_partition must be a Slurm partition name"),
        ({"executor": "slurm", "slurm_partition": 3}, "slurm_partition must be a Slurm partition name"),
        ({"executor": "slurm", "slurm_conf": "", "jobs_dir": "/j"}, "slurm_conf must be a non-empty string"),
        ({"slurm_conf": "/etc/slurm/slurm.conf"}, 'slurm_conf and slurm_partition apply only with executor = "slurm"'),
        ({"executor": "local", "slurm_partition": "batch"}, 'apply only with executor = "slurm"'),
        ({"executor": "slurm", "job_cpus": 8, "jobs_dir": "/j"}, "job_cpus applies only to the local executor"),
        ({"executor": "slurm"}, 'with executor = "slurm", set jobs_dir to a folder the compute nodes share'),
    ],
)
def test_bad_executor_settings_are_refused_by_name(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, REQUIRED | settings))


def test_the_readme_example_loads(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = re.search(r"```toml\n(centre = .*?)```", readme, re.S)
    assert example, "README.md shows a gateway configuration"
    path = tmp_path / "centre.toml"
    path.write_text(example.group(1))
    config = load_config(path)
    assert config.centre == "hpc-a" and config.data_dir == tmp_path.resolve() / "var"


@pytest.mark.parametrize("gone", ["centre", "chain_url", "operator_key", "ldap_base_dn", "issuer_key_file"])
def test_a_missing_setting_is_named(tmp_path, gone):
    values = {k: v for k, v in REQUIRED.items() if k != gone}
    with pytest.raises(ConfigError, match=f"missing setting\\(s\\): {gone}$"):
        load_config(write(tmp_path, values))


def test_every_missing_setting_is_named_at_once(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, {"centre": "hpc-a"}))
    for key in REQUIRED:
        if key != "centre":
            assert key in str(error.value)


def test_an_unknown_setting_is_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting\\(s\\): ldap_password, prot"):
        load_config(write(tmp_path, REQUIRED | {"prot": 8000, "ldap_password": "x"}))


@pytest.mark.parametrize(
    "text",
    [
        'centre = "hpc-a\n',  # unterminated string
        "centre = hpc-a\n",  # bare word
        'centre = "a"\ncentre = "b"\n',  # duplicate key
        "[centre\n",
        "port = 80 80\n",
    ],
)
def test_malformed_toml(tmp_path, text):
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path)  # a folder, not a file
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00centre")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(binary)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"port": "8000"}, "port must be an integer from 1 to 65535"),
        ({"port": 70000}, "port must be an integer"),
        ({"port": True}, "port must be an integer"),
        ({"workers": 0}, "workers must be an integer from 1"),
        ({"token_ttl": -5}, "token_ttl must be an integer"),
        ({"data_dir": 5}, "data_dir must be a non-empty string"),
        ({"operator_key": ""}, "operator_key must be a non-empty string"),
        ({"centre": "HPC A"}, "centre must be a centre name"),
        ({"ldap_bind_dn": "cn=service,dc=hpc-a,dc=example"}, "ldap_bind_dn and ldap_bind_password go together"),
        ({"signon_attributes": "groups"}, "signon_attributes must be a list of attribute names"),
        ({"signon_attributes": ["groups", ""]}, "signon_attributes must be a list of attribute names"),
        ({"issuer_key_overlap": -1}, "issuer_key_overlap must be an integer from 0"),
    ],
)
def test_a_wrong_value_is_named(tmp_path, change, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(write(tmp_path, REQUIRED | change))


def test_config_errors_are_value_errors():
    # the CLI reports ValueErrors as "error: …" with exit code 1
    assert issubclass(ConfigError, ValueError)


def test_every_refusal_names_the_file_and_each_setting_at_fault(tmp_path):
    path = write(tmp_path, REQUIRED | {"port": 0, "sandbox": "docker", "centre": "HPC A"})
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ")
    for words in (
        "port must be an integer from 1 to 65535, got 0",
        "sandbox must be one of 'bwrap', 'none', got 'docker'",
        "centre must be a centre name ([a-z0-9-]{1,32}), got 'HPC A'",
    ):
        assert words in message


@pytest.mark.parametrize("setting", ["operator_key", "ldap_bind_password"])
def test_a_secret_is_never_repeated_in_an_error(tmp_path, setting):
    values = REQUIRED | {"ldap_bind_dn": "cn=service,dc=hpc-a,dc=example", "ldap_bind_password": "pw"}
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, values | {setting: 918273645}))
    assert f"{setting} must be a non-empty string" in str(error.value)
    assert "918273645" not in str(error.value)


def test_a_config_made_in_code_is_checked_as_a_file_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = GatewayConfig(**REQUIRED)
    assert config.data_dir == tmp_path.resolve() / "var" and config.port == 8000  # relative to the working folder
    for wrong in ({"centre": "HPC A"}, {"port": "8000"}, {"prot": 8000}, {"executor": "slurm"}):
        with pytest.raises(ValueError):
            GatewayConfig(**(REQUIRED | wrong))
    with pytest.raises(ValueError):  # settings are fixed once read
        config.port = 9000  # type: ignore[misc]


def test_a_deployment_without_an_identity_registry_is_refused_before_anything_is_built(tmp_path):
    # a description written before the IdentityRegistry existed: a gateway cannot sign anyone on with it
    old = Deployment(
        chain_id=1,
        consortium="0x" + "11" * 20,
        usage_ledger="0x" + "22" * 20,
        settlement="0x" + "33" * 20,
        credit="0x" + "44" * 20,
        start_block=0,
    )
    parts = dict.fromkeys(
        (
            "chain",
            "account",
            "token_key",
            "issuer_key",
            "schema",
            "signon_attributes",
            "directory",
            "policy_file",
            "operator_key",
        )
    )
    with pytest.raises(ValueError, match="no IdentityRegistry"):
        build_node(name="hpc-a", deployment=old, data_dir=tmp_path / "data", **parts)
    assert not (tmp_path / "data").exists()


def test_allocations_are_a_table_of_group_and_amount(tmp_path):
    assert load_config(write(tmp_path / "a", REQUIRED)).allocations == {}
    path = write(tmp_path / "b", REQUIRED)
    path.write_text(path.read_text() + "\n[allocations]\nphysics = 5_000_000\nml-project = 0\n")
    config = load_config(path)
    assert config.allocations == {"physics": 5_000_000, "ml-project": 0}
    assert config.allocation("Physics") == 5_000_000 and config.allocation("biology") is None


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("physics = -1", "allocations.physics must be an integer from 0 to "),
        ('physics = "5000"', "allocations.physics must be an integer from 0 to "),
        ("physics = 5.5", "allocations.physics must be an integer from 0 to "),
        ("physics = true", "allocations.physics must be an integer from 0 to "),
        (f"physics = {2**128}", "allocations.physics must be an integer from 0 to "),
        ('"a b" = 5', "allocations: 'a b' is not a group name"),
        ('"" = 5', "allocations: '' is not a group name"),
        ("physics = 1\nPhysics = 2", "allocations: 'physics' and 'Physics' are one group"),
    ],
)
def test_a_bad_allocation_is_refused_by_name(tmp_path, table, words):
    path = write(tmp_path, REQUIRED)
    path.write_text(path.read_text() + f"\n[allocations]\n{table}\n")
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_config(path)


def test_allocations_must_be_a_table(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("allocations must be a table of LDAP group = amount")):
        load_config(write(tmp_path, REQUIRED | {"allocations": 5}))


def test_a_policy_schema_and_auditors_are_optional(tmp_path):
    config = load_config(write(tmp_path / "a", REQUIRED))
    assert config.policy_schema_file is None and config.auditors == ()
    auditor = "0x" + "ab" * 20
    values = REQUIRED | {"policy_schema_file": "policy.cedarschema", "auditors": [auditor]}
    config = load_config(write(tmp_path / "b", values))
    assert config.policy_schema_file == (tmp_path / "b" / "policy.cedarschema").resolve()
    assert config.auditors == ("0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB",)  # kept as its checksum


@pytest.mark.parametrize(
    "auditors",
    [
        ["0x" + "ab" * 19],  # 19 bytes
        ["ab" * 20],  # no 0x
        ["0xABaBaBaBABabABabAbAbABAbABabababaBaBABab"],  # mixed case that is not its checksum
        "0x" + "ab" * 20,  # one string, not a list
        [42],
    ],
)
def test_auditors_must_be_chain_addresses(tmp_path, auditors):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, REQUIRED | {"auditors": auditors}))
    assert "auditors must be a list of chain addresses (0x and 40 hex digits)" in str(error.value)

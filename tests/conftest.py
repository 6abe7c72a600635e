"""Shared fixtures live in tests/fixtures/; each module there is a pytest plugin."""

pytest_plugins = [
    "tests.fixtures.slapd",
    "tests.fixtures.anvil",
    "tests.fixtures.consortium",
    "tests.fixtures.slurm",
    "tests.fixtures.disks",
]

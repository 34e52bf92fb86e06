"""Fixtures for the multi-host relay tests in network namespaces.

These tests need root (namespaces, veth, nftables) and the `ip` and `nft`
commands; without them they are skipped with the reason.  Everything they
build is removed at the end of each test, and once more at the end of the
session for anything a crashed run left behind.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vpc as vpc_module  # noqa: E402


def missing_requirement():
    if os.geteuid() != 0:
        return "network namespace tests need root (ip netns, veth, nftables)"
    for command in ("ip", "nft"):
        if shutil.which(command) is None:
            return "network namespace tests need the %r command" % command
    return None


def pytest_collection_modifyitems(config, items):
    reason = missing_requirement()
    if reason is None:
        return
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def sweep_namespaces():
    if missing_requirement() is None:
        vpc_module.sweep_leftovers()
    yield
    if missing_requirement() is None:
        vpc_module.sweep_leftovers()


@pytest.fixture
def make_vpc():
    """Factory: make_vpc({"src": 1, "m1": 1, "m2": 2}) builds a VPC torn down after the test;
    make_vpc(hosts, name_prefix="iop") names its namespaces apart from the other suites'."""
    built = []

    def build(hosts, name_prefix=vpc_module.NAME_PREFIX):
        # Not under tmp_path: the relay's control socket path must stay
        # within the 107 bytes AF_UNIX allows.
        network = vpc_module.Vpc(hosts, name_prefix=name_prefix)
        built.append(network)
        return network.__enter__()

    yield build
    failures = []
    for network in reversed(built):
        try:
            network.teardown()
        except AssertionError as error:
            failures.append(str(error))
    assert not failures, failures

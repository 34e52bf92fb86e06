# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-platform data of the common role, for platforms no container here runs.

``ansible-playbook`` on localhost (local connection) includes the role's
``set_vars`` entry point once per fact set - distribution, major version,
OS family and the Python Ansible runs on, as Ansible reports them on each
supported platform - and prints what the role then uses: the vars file that
``first_found`` picked, the relay's interpreter, the packages preflight would
install and the host firewall.  Then preflight itself runs against this
machine for two fact sets: an interpreter Ansible found serves without any
install, and a named interpreter that does not run fails naming the variable.

Alibaba Cloud Linux 3's facts follow ansible-core's distribution.py: its
``/etc/redhat-release`` ("Alibaba Cloud Linux release 3 (Soaring Falcon)")
does not say "Red Hat", so the distribution is its first word, ``Alibaba``,
which OS_FAMILY_MAP puts in the RedHat family; the version is os-release's
VERSION_ID, 3.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import subprocess
import sys

import pytest

COLLECTION_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
COLLECTIONS_PATH = os.path.abspath(os.path.join(COLLECTION_ROOT, "..", "..", ".."))
MARK = "MCP-PLATFORM "

PLATFORM_TASKS = """\
- name: Choose the platform's variables
  ansible.builtin.include_role:
    name: multicast.proxy.common
    tasks_from: set_vars
    public: true

- name: Report what the role uses
  ansible.builtin.debug:
    msg: "MCP-PLATFORM {{ {'name': platform.name,
                           'file': __common_platform_vars.ansible_included_var_files | map('basename') | list,
                           'python': __common_python, 'packages': __common_python_packages,
                           'firewall': __common_firewall} | to_json }}"
"""

PLAYBOOK = """\
- name: The common role's per-platform data
  hosts: localhost
  gather_facts: false
  tasks:
    - name: One platform
      ansible.builtin.include_tasks: platform.yml
      loop: "{{ platforms }}"
      loop_control:
        loop_var: platform
        label: "{{ platform.name }}"
      vars:
        ansible_facts: "{{ platform.facts }}"
        multicast_proxy_python_interpreter: "{{ platform.interpreter | default('') }}"
"""

PREFLIGHT = """\
- name: The common role's preflight
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Check the host
      ansible.builtin.include_role:
        name: multicast.proxy.common
        tasks_from: preflight
      vars:
        ansible_facts: "{{ facts }}"
"""


def facts(distribution, major, os_family, python, version):
    """The facts set_vars and the interpreter choice read, as Ansible reports them."""
    found = {"distribution": distribution, "distribution_major_version": major, "os_family": os_family,
             "system": "Linux", "service_mgr": "systemd"}
    if python:
        major_minor = [int(part) for part in version.split(".")]
        found["python"] = {"executable": python, "version": {"major": major_minor[0], "minor": major_minor[1]}}
    return found


# (name, facts, interpreter override, vars file, relay interpreter, packages, firewall)
PLATFORMS = [
    # EL 8 on ansible-core 2.16: Ansible itself runs on the platform Python.
    ("RHEL 8", facts("RedHat", "8", "RedHat", "/usr/libexec/platform-python", "3.6"), "",
     "RedHat_8.yml", "/usr/libexec/platform-python", ["platform-python"], "firewalld"),
    # A newer interpreter Ansible found (2.17+ needs one) runs the relay too: no python3 installed.
    ("Rocky 8", facts("Rocky", "8", "RedHat", "/usr/bin/python3.12", "3.12"), "",
     "RedHat_8.yml", "/usr/bin/python3.12", ["platform-python"], "firewalld"),
    # Ansible in a virtualenv: never the relay's; the platform Python is.
    ("AlmaLinux 8", facts("AlmaLinux", "8", "RedHat", "/opt/ansible/bin/python3", "3.11"), "",
     "RedHat_8.yml", "/usr/libexec/platform-python", ["platform-python"], "firewalld"),
    ("Alibaba Cloud Linux 3", facts("Alibaba", "3", "RedHat", "/usr/bin/python3", "3.6"), "",
     "Alibaba_3.yml", "/usr/bin/python3", ["platform-python"], "firewalld"),
    ("Alibaba Cloud Linux 3, no python facts", facts("Alibaba", "3", "RedHat", None, None), "",
     "Alibaba_3.yml", "/usr/libexec/platform-python", ["platform-python"], "firewalld"),
    ("RHEL 9", facts("RedHat", "9", "RedHat", "/usr/bin/python3", "3.9"), "",
     "RedHat.yml", "/usr/bin/python3", ["python3"], "firewalld"),
    ("Rocky 9", facts("Rocky", "9", "RedHat", "/usr/bin/python3", "3.9"), "",
     "RedHat.yml", "/usr/bin/python3", ["python3"], "firewalld"),
    ("AlmaLinux 9, interpreter named", facts("AlmaLinux", "9", "RedHat", "/usr/bin/python3", "3.9"),
     "/usr/bin/python3.12", "RedHat.yml", "/usr/bin/python3.12", ["python3"], "firewalld"),
    ("Ubuntu 20.04", facts("Ubuntu", "20", "Debian", "/usr/bin/python3", "3.8"), "",
     "Ubuntu.yml", "/usr/bin/python3", ["python3"], "ufw"),
    ("Ubuntu 22.04", facts("Ubuntu", "22", "Debian", "/usr/bin/python3", "3.10"), "",
     "Ubuntu.yml", "/usr/bin/python3", ["python3"], "ufw"),
    ("Ubuntu 24.04", facts("Ubuntu", "24", "Debian", "/usr/bin/python3", "3.12"), "",
     "Ubuntu.yml", "/usr/bin/python3", ["python3"], "ufw"),
    ("Debian 11", facts("Debian", "11", "Debian", "/usr/bin/python3", "3.9"), "",
     "Debian.yml", "/usr/bin/python3", ["python3"], "nftables"),
    ("Debian 12", facts("Debian", "12", "Debian", "/usr/bin/python3", "3.11"), "",
     "Debian.yml", "/usr/bin/python3", ["python3"], "nftables"),
    ("Debian 13", facts("Debian", "13", "Debian", "/usr/bin/python3", "3.13"), "",
     "Debian.yml", "/usr/bin/python3", ["python3"], "nftables"),
    # Ansible on a Python the relay does not support (2.7): the platform's default instead.
    ("Debian 13, Ansible on Python 2.7", facts("Debian", "13", "Debian", "/usr/bin/python2.7", "2.7"), "",
     "Debian.yml", "/usr/bin/python3", ["python3"], "nftables"),
    ("an unknown distribution", facts("Gentoo", "2", "Gentoo", "/usr/bin/python3.13", "3.13"), "",
     "default.yml", "/usr/bin/python3.13", ["python3"], "nftables"),
]


def run_playbook(tmp_path, playbook, extra, *options):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_CALLBACK_RESULT_FORMAT="json", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"), ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-tmp"))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", json.dumps(extra),
            str(playbook)] + list(options)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          cwd=str(tmp_path), env=env, timeout=300, check=False)
    return proc.returncode, proc.stdout


@pytest.fixture(name="chosen", scope="module")
def fixture_chosen(tmp_path_factory):
    """{platform name: what the role chose}, from one ansible-playbook run over every fact set."""
    tmp_path = tmp_path_factory.mktemp("platforms")
    (tmp_path / "platform.yml").write_text(PLATFORM_TASKS)
    (tmp_path / "platforms.yml").write_text(PLAYBOOK)
    platforms = [{"name": name, "facts": host_facts, "interpreter": interpreter}
                 for name, host_facts, interpreter, _file, _python, _packages, _firewall in PLATFORMS]
    rc, output = run_playbook(tmp_path, tmp_path / "platforms.yml", {"platforms": platforms})
    assert rc == 0, output
    found = {}
    for line in output.splitlines():
        line = line.strip().strip('"')
        if MARK in line:
            report = json.loads(line.split(MARK, 1)[1].replace('\\"', '"'))
            found[report["name"]] = report
    assert sorted(found) == sorted(row[0] for row in PLATFORMS), output
    return found


@pytest.mark.parametrize("name, vars_file, python, packages, firewall",
                         [(row[0],) + row[3:] for row in PLATFORMS], ids=[row[0] for row in PLATFORMS])
def test_the_platform_gets_its_vars_file_interpreter_packages_and_firewall(chosen, name, vars_file, python,
                                                                           packages, firewall):
    assert chosen[name] == {"name": name, "file": [vars_file], "python": python, "packages": packages,
                            "firewall": firewall}


def test_every_vars_file_is_chosen_for_some_platform_and_defines_the_same_names():
    import yaml
    vars_dir = os.path.join(COLLECTION_ROOT, "roles", "common", "vars")
    files = sorted(name for name in os.listdir(vars_dir) if name != "main.yml")
    assert files == sorted(set(row[3] for row in PLATFORMS))
    for name in files:
        with open(os.path.join(vars_dir, name)) as handle:
            assert sorted(yaml.safe_load(handle)) == ["__common_firewall", "__common_python_default",
                                                      "__common_python_packages"], name


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="needs a system /usr/bin/python3")
def test_preflight_uses_the_interpreter_ansible_found_and_installs_nothing(tmp_path):
    """EL 8 where Ansible runs on a newer Python: that one serves (here /usr/bin/python3)."""
    (tmp_path / "preflight.yml").write_text(PREFLIGHT)
    version = subprocess.check_output(["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                      universal_newlines=True).strip()
    host_facts = facts("RedHat", "8", "RedHat", "/usr/bin/python3", version)
    rc, output = run_playbook(tmp_path, tmp_path / "preflight.yml", {"facts": host_facts}, "--check")
    assert rc == 0, output
    assert "Install the platform's Python" in output
    install = output.split("Install the platform's Python", 1)[1].split("TASK [", 1)[0]
    assert "skipping: [localhost]" in install, output


def test_preflight_refuses_a_named_interpreter_that_does_not_run_without_installing(tmp_path):
    (tmp_path / "preflight.yml").write_text(PREFLIGHT)
    host_facts = facts("Alibaba", "3", "RedHat", "/usr/bin/python3", "3.6")
    missing = str(tmp_path / "no-python")
    rc, output = run_playbook(tmp_path, tmp_path / "preflight.yml",
                              {"facts": host_facts, "multicast_proxy_python_interpreter": missing}, "--check")
    assert rc != 0, output
    install = output.split("Install the platform's Python", 1)[1].split("TASK [", 1)[0]
    assert "skipping: [localhost]" in install, output
    assert "Set multicast_proxy_python_interpreter to the path of a Python 3.6 or newer" in output
    assert "(it is %s now)" % missing in output
    assert "Alibaba_3.yml" in output


# What the roles' meta/main.yml declare (Galaxy's names; EL covers the RHEL rebuilds and
# Alibaba Cloud Linux 3, which Galaxy has no name for).
META_PLATFORMS = [{"name": "Debian", "versions": ["bullseye", "bookworm", "trixie"]},
                  {"name": "Ubuntu", "versions": ["focal", "jammy", "noble"]},
                  {"name": "EL", "versions": ["8", "9"]}]
README_ROWS = ["| Debian 11 (bullseye) |", "| Debian 12 (bookworm) |", "| Debian 13 (trixie) |",
               "| Ubuntu 20.04, 22.04, 24.04 |", "| RHEL, Rocky, AlmaLinux 9 |", "| RHEL, Rocky, AlmaLinux 8 |",
               "| Alibaba Cloud Linux 3 |"]


def _yaml(*path):
    import yaml
    with open(os.path.join(COLLECTION_ROOT, *path)) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("role", ["client", "common", "server"])
def test_the_roles_declare_the_supported_platforms(role):
    assert _yaml("roles", role, "meta", "main.yml")["galaxy_info"]["platforms"] == META_PLATFORMS


def test_the_readme_support_table_has_a_row_per_platform_with_how_it_is_tested():
    with open(os.path.join(COLLECTION_ROOT, "README.md")) as handle:
        rows = [line for line in handle.read().splitlines() if line.startswith("| ")]
    for start in README_ROWS:
        (row,) = [line for line in rows if line.startswith(start)]
        tested = row.rstrip(" |").rsplit("|", 1)[1].strip()
        assert tested.startswith("containers: molecule") == start.startswith("| Debian"), row
        assert tested.startswith(("containers: molecule", "per-platform checks only")), row


def test_requires_ansible_admits_exactly_the_tested_ansible_core_releases():
    from ansible.release import __version__
    from packaging.specifiers import SpecifierSet
    admitted = SpecifierSet(_yaml("meta", "runtime.yml")["requires_ansible"])
    with open(os.path.join(COLLECTION_ROOT, "scripts", "run-ansible-matrix.sh")) as handle:
        matrix = re.search(r"^\s*releases=\(([\d. ]+)\)", handle.read(), re.M).group(1).split()
    assert matrix == ["2.16", "2.17", "2.18"]
    # The matrix, and 2.19 of .venv (make modules, make sanity).
    for release in matrix + ["2.19"]:
        assert release + ".0" in admitted
    assert "2.15.13" not in admitted and "2.20.0" not in admitted
    assert admitted.contains(__version__, prereleases=True)

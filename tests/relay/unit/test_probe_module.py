"""The probe tools as the relay ships them: ``python3 -m multicast_proxy probe``
(files/multicast_proxy/probe.py) and the test wrappers tests/tools/mcsend.py
and mcrecv.py that run the same code."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from multicast_proxy import __main__ as entry
from multicast_proxy import probe

REPO = pathlib.Path(__file__).resolve().parents[3]
TOOLS = REPO / "tests" / "tools"
PACKAGE = REPO / "files" / "multicast_proxy"


def load_tool(name):
    spec = importlib.util.spec_from_file_location("wrapped_" + name, TOOLS / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrappers_run_the_relay_package_code():
    mcsend = load_tool("mcsend")
    mcrecv = load_tool("mcrecv")
    assert mcsend.build_payload is probe.build_payload
    assert mcsend.Pacer is probe.Pacer
    assert mcrecv.ReceiverStats is probe.ReceiverStats
    assert mcrecv.parse_payload is probe.parse_payload


def test_probe_without_a_subcommand_prints_usage(capsys):
    assert probe.main([]) == 2
    assert probe.main(["listen"]) == 2
    assert "probe {send,recv}" in capsys.readouterr().err


def test_module_entry_dispatches_probe(capsys):
    assert entry.main(["python3", "probe"]) == 2
    assert "usage: python3 -m multicast_proxy probe {send,recv}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["send", "--group", "10.0.0.1", "--port", "5000"], "python3 -m multicast_proxy probe send: error"),
        (["recv", "--group", "239.1.1.1", "--port", "0"], "python3 -m multicast_proxy probe recv: error"),
    ],
)
def test_probe_subcommands_name_themselves_in_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        probe.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_copied_wrapper_uses_the_package_copied_next_to_it(tmp_path):
    # The molecule prepare step copies the wrappers with only these two files
    # of the package, before the relay is installed.
    shutil.copy(TOOLS / "mcsend.py", tmp_path / "mcsend.py")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # --count 0 opens the socket and sends nothing.
    argv = [sys.executable, str(tmp_path / "mcsend.py"), "--group", "239.1.1.1", "--port", "5000", "--count", "0"]

    def run():
        return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
                              universal_newlines=True, check=False)

    alone = run()
    assert alone.returncode != 0
    assert "No module named 'multicast_proxy'" in alone.stderr

    (tmp_path / "multicast_proxy").mkdir()
    for name in ("__init__.py", "probe.py"):
        shutil.copy(PACKAGE / name, tmp_path / "multicast_proxy" / name)
    with_package = run()
    assert with_package.returncode == 0, with_package.stderr
    assert json.loads(with_package.stdout)["sent"] == 0

# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run a module's main() in-process with mocked run_command."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from unittest import mock

from ansible.module_utils import basic
from ansible_collections.multicast.proxy.tests.unit.compat import patch_module_args


class ModuleExit(Exception):
    """exit_json or fail_json was called; ``result`` holds its arguments."""

    def __init__(self, result, failed):
        super(ModuleExit, self).__init__(result)
        self.result = result
        self.failed = failed


class ModuleRunner(object):
    """Calls ``module.main()`` and records every run_command call."""

    def __init__(self):
        self.commands = []
        self.environ = []
        # Each reply is (rc, stdout, stderr) or a callable(argv) returning one.
        self.replies = []
        self.warnings = []

    def _run_command(self, module, args, **kwargs):
        self.commands.append(list(args))
        self.environ.append(kwargs.get("environ_update") or {})
        if not self.replies:
            raise AssertionError("unexpected command: %r" % (args,))
        reply = self.replies.pop(0)
        return reply(args) if callable(reply) else reply

    def __call__(self, module, args, check_mode=False, diff=False):
        args = dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)

        def exit_json(module_self, **result):
            raise ModuleExit(result, failed=False)

        def fail_json(module_self, msg, **result):
            result["msg"] = msg
            raise ModuleExit(result, failed=True)

        def warn(module_self, warning):
            self.warnings.append(warning)

        def get_bin_path(module_self, name, required=False, opt_dirs=None):
            return "/usr/local/bin/" + name if name != "ip" else "/sbin/ip"

        runner = self

        def run_command(module_self, args, **kwargs):
            return runner._run_command(module_self, args, **kwargs)

        with patch_module_args(args), \
                mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json, warn=warn,
                                    get_bin_path=get_bin_path, run_command=run_command):
            with pytest.raises(ModuleExit) as caught:
                module.main()
        return caught.value.result, caught.value.failed


@pytest.fixture
def run_module():
    return ModuleRunner()

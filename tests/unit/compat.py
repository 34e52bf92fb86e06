# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the unit tests need from ansible-core, on every release requires_ansible admits (2.16 on).

ansible-core 2.19 brought data tagging (a string is a template only when
trusted) and ``ansible.module_utils.testing.patch_module_args``; on the older
releases every string handed to the Templar is a template, and a module reads
its arguments from ``basic._ANSIBLE_ARGS``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core < 2.19
    def trust_as_template(value):
        return value

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args):
        """Hand ``args`` to the next AnsibleModule, as Ansible's module wrapper would."""
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved

__all__ = ["patch_module_args", "render_text", "trust_as_template"]


def render_text(templar, text):
    """A whole template rendered as text, as the template action does (never turned into a dict or list)."""
    try:
        from ansible.template import trust_as_template as _trusted  # noqa: F401 (2.19: text stays text)
    except ImportError:
        return templar.template(text, convert_data=False, preserve_trailing_newlines=True)
    return templar.template(trust_as_template(text))

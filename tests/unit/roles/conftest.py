# -*- coding: utf-8 -*-
# Copyright: contributors to the multicast.proxy collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The daemons' system account, as the common role's install tasks create it on a host."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import grp
import os
import subprocess

import pytest

SERVICE_GROUP = "multicast-proxy"


@pytest.fixture(name="service_account", scope="session")
def fixture_service_account():
    """Make sure the group multicast-proxy exists (root only); the key file is given to it."""
    if os.geteuid() != 0:
        pytest.skip("creating the daemons' group needs root")
    try:
        grp.getgrnam(SERVICE_GROUP)
    except KeyError:
        subprocess.check_call(["groupadd", "--system", SERVICE_GROUP])
    return SERVICE_GROUP

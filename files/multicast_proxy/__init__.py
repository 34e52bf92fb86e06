"""Multicast relay for networks that drop multicast (a re-creation of
Alibaba's multicast_proxy): the server forwards group datagrams to member
hosts over unicast, the client re-delivers them as local multicast.

Standard library only, Python 3.8 to 3.13.
"""

__version__ = "1.0.0"  # a copy of galaxy.yml's version, the source; tests/unit/test_version.py compares them

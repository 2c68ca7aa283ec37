# SPDX-License-Identifier: Apache-2.0
"""This host's name and address, as the Jaeger process and Zipkin's localEndpoint name it."""
import socket

__all__ = ["host_info"]

_host_info = None


def host_info():
    """(hostname, ipv4 or None) of this host, looked up once per process."""
    global _host_info
    if _host_info is None:
        try:
            hostname = socket.gethostname()
        except OSError:
            hostname = ""
        _host_info = (hostname, _local_ip(hostname))
    return _host_info


def _local_ip(hostname):
    ip = None
    try:
        ip = socket.gethostbyname(hostname)
        if not ip.startswith("127."):
            return ip
    except OSError:
        pass
    # the address the default route would use; connect() on UDP sends nothing
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        return ip

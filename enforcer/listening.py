"""Listening on an address from the configuration: one that cannot be had (a port in use, an
address not of this host) is a configuration fault, a ConfigError naming the key, before
anything else starts. Both HTTP stacks use it: the worker's endpoints and `serve`."""

from __future__ import annotations

import errno
import ipaddress
import socket

from enforcer.config import ConfigError, config_error


def cannot_listen(section: str, bind: str, port: int, exc: OSError) -> ConfigError:
    """The ConfigError a failed listen is, naming `section`.bind or `section`.port."""
    if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
        return config_error(f"{section}.bind", f"{bind} is no address of this host "
                            f"({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return config_error(f"{section}.port", f"{port} is in use on {bind} (another "
                            "eir-enforcer on this host?); give a free port")
    return config_error(f"{section}.port", f"cannot listen on {bind}:{port} ({exc.strerror})")


def listen(section: str, bind: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on bind:port. Raises ConfigError naming the key that cannot be
    had."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(bind).version == 6 else socket.AF_INET
    except ValueError:  # a host name
        family = socket.AF_INET
    try:
        return socket.create_server((bind, port), family=family, backlog=backlog)
    except OSError as exc:
        raise cannot_listen(section, bind, port, exc) from exc

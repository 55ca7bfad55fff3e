"""Make any network attempt visible: blocked, recorded, and (in a subprocess) written to a file."""

from __future__ import annotations

import os
import socket

_INET = (socket.AF_INET, socket.AF_INET6)


class NetworkAttempt(OSError):
    pass


def install(attempts: list) -> dict:
    """Block DNS lookups and IP connections; returns the originals for :func:`uninstall`."""
    originals = {
        "connect": socket.socket.connect,
        "connect_ex": socket.socket.connect_ex,
        "getaddrinfo": socket.getaddrinfo,
        "create_connection": socket.create_connection,
    }
    record_file = os.environ.get("NETWORK_ATTEMPTS_FILE")

    def blocked(what):
        attempts.append(what)
        if record_file:
            with open(record_file, "a") as f:
                f.write(f"{what!r}\n")
        raise NetworkAttempt(f"network access attempted: {what!r}")

    def connect(self, address):
        if self.family in _INET:
            blocked(("connect", address))
        return originals["connect"](self, address)

    def connect_ex(self, address):
        if self.family in _INET:
            blocked(("connect_ex", address))
        return originals["connect_ex"](self, address)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = lambda *args, **kwargs: blocked(("getaddrinfo", args[:2]))
    socket.create_connection = lambda address, *args, **kwargs: blocked(("create_connection", address))
    return originals


def uninstall(originals: dict) -> None:
    socket.socket.connect = originals["connect"]
    socket.socket.connect_ex = originals["connect_ex"]
    socket.getaddrinfo = originals["getaddrinfo"]
    socket.create_connection = originals["create_connection"]

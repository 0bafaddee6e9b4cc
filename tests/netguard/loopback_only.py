"""Refuse every network connection except to the loopback interface.

``install()`` wraps ``socket.socket.connect``/``connect_ex`` and
``socket.getaddrinfo`` (so no DNS query leaves either): connecting anywhere
but 127.0.0.0/8, ::1 or a Unix socket raises ``NetworkGuardError`` (not an
OSError, so download code that treats OSError as "offline" cannot swallow it)
and appends the address to the file named by ``HASHNET_NETGUARD_LOG``, which
tests/conftest.py checks after every test. The test suite installs it in its
own process and, through tests/netguard/sitecustomize.py on PYTHONPATH, in
every Python process it starts.
"""
import ipaddress
import os
import socket

LOG_ENV = "HASHNET_NETGUARD_LOG"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


class NetworkGuardError(RuntimeError):
    pass


def is_loopback(host):
    if host is None or (isinstance(host, str) and host.lower() in LOOPBACK_NAMES):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already query DNS


def refuse(address):
    log = os.environ.get(LOG_ENV)
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {address}\n")
    raise NetworkGuardError(f"network guard: connection to {address} refused "
                            "(tests, CI and the demo may only use 127.0.0.1)")


def install():
    if getattr(socket, "_hashnet_guarded", False):
        return
    connect, connect_ex, getaddrinfo = (socket.socket.connect, socket.socket.connect_ex,
                                        socket.getaddrinfo)

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            refuse(address)

    def guarded_connect(sock, address):
        check(sock, address)
        return connect(sock, address)

    def guarded_connect_ex(sock, address):
        check(sock, address)
        return connect_ex(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if isinstance(host, bytes):
            host = host.decode()
        if not is_loopback(host):
            refuse(host)
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = guarded_connect, guarded_connect_ex
    socket.getaddrinfo = guarded_getaddrinfo
    socket._hashnet_guarded = True

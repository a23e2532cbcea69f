"""Whether a Ray address (runtime.address) names the instance this process joined: a run in
a process that joined one uses it (ray_connect.connect), and warns of an address naming
another."""

from __future__ import annotations

import socket

import ray


def other_instance(address: str) -> str:
    """The address of the instance this process joined, where ``address`` (runtime.address)
    surely names another: another port, or a host that resolves elsewhere (this machine's
    loopback is taken as the joined node's own); "" where it names none, the same, or one
    the address alone cannot tell (auto, local, a ray:// client's)."""
    if not address or address in ("auto", "local") or address.startswith("ray://") \
            or ":" not in address:
        return ""
    joined = ray.get_runtime_context().gcs_address
    host, _, port = address.rpartition(":")
    joined_host, _, joined_port = joined.rpartition(":")
    if port != joined_port:
        return joined
    ip, joined_ip = resolved(host), resolved(joined_host)
    if ip is None or joined_ip is None or ip == joined_ip or ip.startswith("127."):
        return ""
    return joined


def resolved(host: str) -> str | None:
    """The IPv4 address of ``host``; None where it does not resolve."""
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):
        return None

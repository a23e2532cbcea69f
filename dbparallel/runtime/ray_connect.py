"""Joining the Ray cluster at runtime.address / RAY_ADDRESS, or starting a private local
instance: the address probed first (a clear error instead of minutes of retries), the
dashboard's state API kept on the private instance, the caller's SIGTERM handler kept."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import ray

from dbparallel.config import Config
from dbparallel.errors import ConfigError
from dbparallel.runtime.joined_address import other_instance
from dbparallel.runtime.metrics_port import free_port, port_line
from dbparallel.runtime.node_processes import descendants, new_descendants, stop_processes

log = logging.getLogger(__name__)
STATE_API_VAR = "RAY_API_SERVER_ADDRESS"
PORT_ATTEMPTS = 3  # dashboard ports tried when the free one found is taken before Ray binds it
PROBE_S = 15.0  # how long a runtime.address / RAY_ADDRESS has to accept a TCP connection
# (a head that is still starting refuses at first: it is asked again every PROBE_EVERY_S)
PROBE_EVERY_S = 0.5


# What the environment of this process held before the connection ``connect`` made (the
# variables that joining changed, None where unset), for ``disconnect`` to put back
_env_before: dict[str, str | None] = {}


def connect(cfg: Config) -> bool:
    """Join the cluster at runtime.address / RAY_ADDRESS, or start a private local one.

    Returns True when this call connected (and so should ``disconnect`` at the end). In a
    process that joined a Ray instance already, the run uses that one: a runtime.address
    naming another is warned of, not joined."""
    if ray.is_initialized():
        other = other_instance(cfg.runtime.address)
        if other:
            log.warning("runtime.address=%s is not joined: this process joined the Ray "
                        "instance at %s before, and the run uses that one (leave "
                        "runtime.address unset, or call ray.shutdown() first to join %s)",
                        cfg.runtime.address, other, cfg.runtime.address)
        return False
    before, began = dict(os.environ), descendants()
    try:
        return _connect(cfg)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM as the driver connects: stop the private
        # instance's processes (cut short before ray.init has recorded its node, Ray keeps no
        # handle to stop them with, and the raylet's agents outlive it)
        started = new_descendants(began)  # while the raylet's agents are its children
        ray.shutdown()
        stop_processes(started)
        raise
    finally:
        changed = {k: before.get(k) for k in before.keys() | os.environ.keys()
                   if before.get(k) != os.environ.get(k)}
        if ray.is_initialized():
            _env_before.update({k: v for k, v in changed.items() if k not in _env_before})
        else:  # joining failed: nothing to keep
            _restore(changed)


def disconnect() -> None:
    """Leave the Ray instance ``connect`` joined or started (``ray.shutdown``), and put back
    the environment variables joining set in this process (``ray.init``'s PYTHONBREAKPOINT,
    which sends the program's own ``breakpoint()`` to Ray's debugger, RAY_AUTH_MODE;
    RAY_USAGE_STATS_ENABLED): a program that calls ``dbparallel.train`` is left as it was."""
    ray.shutdown()
    _restore(_env_before)
    _env_before.clear()


def _restore(values: dict[str, str | None]) -> None:
    """Set each variable of ``values`` to its value there (None: unset it)."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _connect(cfg: Config) -> bool:
    """``connect``'s work, once Ray is known not to be joined yet."""
    address, key = cluster_address(cfg)
    if address:
        if address.startswith(("http://", "https://")) or _no_port(address):
            raise ConfigError(joining_failed(address, key, None))  # before Ray's own words
        reached = probe(address, key)
        try:
            with _caller_sigterm():
                context = ray.init(address=address, logging_level="WARNING")
        except (ConnectionError, ValueError) as err:
            ray.shutdown()
            raise ConfigError(joining_failed(address, key, err, reached)) from None
        if cfg.runtime.replicas_per_block > 1 and not context.dashboard_url:
            log.warning(no_state_api(cfg, address, key))
        return True
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    _quiet_auth_notice()
    kwargs: dict[str, Any] = {}
    if cfg.metrics.port:
        port = free_port(cfg.metrics.port)
        kwargs["_metrics_export_port"] = port
        print(f"{port_line(cfg.metrics.port, port)} (ray_dbparallel_block_loss, ...)",
              flush=True)
    if cfg.runtime.object_store_memory:
        kwargs["object_store_memory"] = cfg.runtime.object_store_memory
    replicas = cfg.runtime.replicas_per_block > 1
    for attempt in range(PORT_ATTEMPTS):
        with state_api_here() if replicas else contextlib.nullcontext() as port:
            if port:
                kwargs["dashboard_port"] = port
            try:
                with _caller_sigterm():
                    ray.init(address="local", num_cpus=cfg.runtime.num_cpus or None,
                             include_dashboard=replicas, logging_level="WARNING",
                             _system_config={"metrics_report_interval_ms": 2000}, **kwargs)
                return True
            except ValueError as err:
                ray.shutdown()
                # the free port found for the dashboard was taken before Ray bound it: another
                if "already occupied" not in str(err) or attempt == PORT_ATTEMPTS - 1:
                    raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _caller_sigterm() -> Iterator[None]:
    """Keep the SIGTERM handler the caller set in Python (the CLI stops a run on it as on
    Ctrl-C) over the one ``ray.init`` installs, which aborts the process with a crash dump."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(before) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, before)


def cluster_address(cfg: Config) -> tuple[str, str]:
    """(the Ray address to join, the setting it came from): runtime.address, else
    RAY_ADDRESS; ("", "") for none (a private local instance)."""
    if cfg.runtime.address:
        return cfg.runtime.address, "runtime.address"
    return os.environ.get("RAY_ADDRESS", ""), "RAY_ADDRESS"


def joined_name(cfg: Config) -> str:
    """How a plan names the cluster this process joined: the setting and its address
    (``RAY_ADDRESS=head:6379``); for ``auto``, also the address Ray found it at; with none
    set, the local instance (a private one, or one ``ray.init`` joined before)."""
    address, key = cluster_address(cfg)
    if not address:
        return "the local instance"
    if address == "auto":
        return f"{key}=auto: the local instance at {ray.get_runtime_context().gcs_address}"
    return f"{key}={address}"


def joining_failed(address: str, key: str, err: Exception | None,
                   reached: bool = False) -> str:
    """What to tell a user whose ``address`` (from ``key``) Ray could not join; where
    something answered there (``reached``), that the cluster may want a token."""
    if address.startswith(("http://", "https://")):
        return (f"{key}={address} is a dashboard address, the one `ray job submit --address` "
                f"takes; a driver joins the cluster at its GCS address, HEAD:6379 (the port of "
                f"`ray start --head --port`), or `auto` on one of its nodes")
    if _no_port(address):
        return (f"{key}={address} names no port: a driver joins the cluster at its GCS "
                f"address, HOST:PORT, e.g. {address}:6379 (the port of `ray start --head "
                f"--port`), or `auto` on one of its nodes")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    said = f"{key}: Ray could not join the cluster at {address} ({first})"
    if not reached:
        return said
    return (f"{said}; where the cluster uses token authentication (Ray's default), give this "
            f"process its token: RAY_AUTH_MODE=token with ~/.ray/auth_token or RAY_AUTH_TOKEN "
            f"as on the head (`ray get-auth-token` there)")


def _no_port(address: str) -> bool:
    """Whether ``address`` is a bare host, which Ray refuses as 'Invalid address format'
    (``auto``, ``local`` and ``ray://`` client addresses name no port either)."""
    return ":" not in address and address not in ("auto", "local")


def no_state_api(cfg: Config, address: str, key: str) -> str:
    """What a driver of blocks with replicas says of a cluster (at ``address``, from ``key``)
    that runs no dashboard: Ray Train watches each block's worker group through the state
    API the dashboard serves, and without it logs a failed query all along."""
    return (f"runtime.replicas_per_block={cfg.runtime.replicas_per_block}: the cluster at "
            f"{address} ({key}) runs no dashboard, which serves the state API Ray Train "
            f"watches each block's worker group through: its PlacementGroupCleaner will log "
            f"'Failed to query Ray Train Controller actor state' all along; start the head "
            f"with its dashboard (`ray start --head` without --include-dashboard=false)")


def metrics_line(nodes: list[dict[str, Any]], shown: int = 4) -> str:
    """Where a run on a cluster it joined is scraped: each live node's Ray metrics export
    (``nodes`` as ``ray.nodes()`` gives them; the first ``shown`` named), not metrics.port,
    which sets a private instance's."""
    urls = [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in nodes if n.get("Alive") and n.get("MetricsExportPort")]
    more = f" and {len(urls) - shown} more" if len(urls) > shown else ""
    return (f"metrics: on each node's Ray metrics port (ray_dbparallel_block_loss, ...; "
            f"metrics.port sets only a private instance's): {', '.join(urls[:shown])}{more}")


def probe(address: str, key: str) -> bool:
    """ConfigError naming ``key`` where nothing accepts a connection at ``address`` within
    PROBE_S, a plain host:port (``auto``, ``local`` and ``ray://`` client addresses are left
    to Ray): joining one that does not answer retries for minutes, printing only Ray's GCS
    warnings. A host that does not resolve is asked again for as long, as a head that does not
    answer yet is (a head's name may resolve only once its container or pod starts: Docker
    Compose, Kubernetes), and then named as a host that does not resolve. True where something
    answered (a plain host:port that was probed)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or "://" in address:
        return False
    if not 0 < int(port) < 65536:  # (the resolver would take it modulo 65536)
        raise ConfigError(f"{key}: the port of {address}, {port}, is no TCP port (1-65535); "
                          f"correct {key}")
    name = host.strip("[]")
    deadline = time.monotonic() + PROBE_S
    while True:
        left = deadline - time.monotonic()
        try:
            socket.getaddrinfo(name, int(port), type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as err:  # (a label too long for IDNA: UnicodeError)
            if left <= PROBE_EVERY_S or isinstance(err, UnicodeError):
                reason = getattr(err, "strerror", None) or err
                raise ConfigError(f"{key}: the host of {address}, {host}, does not resolve "
                                  f"({reason}) after {PROBE_S:g} s; correct {key} (empty: a "
                                  f"private local instance)") from None
            time.sleep(PROBE_EVERY_S)
            continue
        try:
            with socket.create_connection((name, int(port)), timeout=max(left, 0.1)):
                return True
        except OSError as err:
            if left <= PROBE_EVERY_S:
                raise ConfigError(
                    f"{key}: no Ray cluster answers at {address} ({err}) after {PROBE_S:g} s; "
                    f"start one there (`ray start --head`), or correct {key} (empty: a "
                    f"private local instance)") from None
        time.sleep(PROBE_EVERY_S)


@contextlib.contextmanager
def state_api_here() -> Iterator[int]:
    """A free port for a private instance's dashboard, which serves Ray's state API, with
    RAY_API_SERVER_ADDRESS pointing there inside the block: an instance started there passes
    the variable to every Ray process it starts; this process gets its own value back after.

    Ray Train (blocks with replicas) watches its controller through the state API. Without an
    address, that API asks the cluster recorded by the last `ray start` on this machine
    (/tmp/ray/ray_current_cluster), which is not a private instance and may be long gone: each
    query then waits 40 s for a GCS that never answers, and every group's end printed a
    traceback. This process keeps no such variable, so its own clients (`ray job submit
    --address ...`, which the variable would override) still reach what they name."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    saved = os.environ.get(STATE_API_VAR)
    os.environ[STATE_API_VAR] = f"http://127.0.0.1:{port}"
    try:
        yield port
    finally:
        if saved is None:
            os.environ.pop(STATE_API_VAR, None)
        else:
            os.environ[STATE_API_VAR] = saved


def _not_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Token authentication is enabled")


def _quiet_auth_notice() -> None:
    """Drop Ray's warning, printed as a private instance starts, that token authentication is
    on and how to turn it off: it stays on (README, security)."""
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if _not_auth_notice not in logger.filters:
        logger.addFilter(_not_auth_notice)

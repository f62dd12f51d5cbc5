"""Where the cluster is: the ``address`` setting resolved, probed (TCP, with a timeout) and located.

``ray.init`` towards an address where nothing listens never returns, so nothing may reach Ray before
:func:`probe` has seen the port answer.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from mlspec_ray.errors import BackendError

LOCAL_NAMES = {"", "localhost", "localhost.localdomain", "ip6-localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class Target:
    """A resolved ``address`` setting."""

    kind: str  # "private" (start one), "gcs" (host:port), "client" (ray://host:port)
    init_address: str  # what ray.init receives
    host: str = ""
    port: int = 0
    setting: str = ""  # the address as the user wrote it

    @property
    def label(self) -> str:
        if self.kind == "private":
            return "a private local cluster"
        return f"ray://{self.host}:{self.port}" if self.kind == "client" else f"{self.host}:{self.port}"


def _split_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in " /@"):
        raise BackendError(f'backend.address {text!r} is not an address: use "" (a private local cluster), '
                           '"auto", "HOST:PORT" or "ray://HOST:PORT"')
    return host.strip("[]"), int(port)


def bootstrap_address_file() -> str:
    """The file where `ray start --head` records the address of the cluster it started on this machine."""
    try:
        from ray._common.utils import get_ray_address_file  # Ray's own answer, when it exists

        return get_ray_address_file(None)
    except Exception:  # noqa: BLE001 - private API: fall back to where Ray puts it
        base = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
        return os.path.join(base, "ray", "ray_current_cluster")


def resolve_address(setting: str) -> Target:
    """Turn the ``address`` setting into a :class:`Target` (reading RAY_ADDRESS and Ray's file for "auto")."""
    text = (setting or "").strip()
    if text in ("", "local"):
        return Target("private", "local", setting=text)
    if text == "auto":
        env = os.environ.get("RAY_ADDRESS", "").strip()
        found, where = (env, "RAY_ADDRESS") if env and env != "auto" else ("", "")
        if not found:
            path = bootstrap_address_file()
            try:
                with open(path, encoding="utf-8") as fh:
                    found, where = fh.read().strip(), path
            except OSError:
                found = ""
        if not found:
            raise BackendError(f'backend.address is "auto" but no Ray cluster is recorded on this machine '
                               f"(RAY_ADDRESS is unset and {bootstrap_address_file()} does not exist)",
                               hint="start one (`ray start --head`) or set backend.address=HOST:PORT")
        target = resolve_address(found)
        if target.kind == "private":
            raise BackendError(f"{where} says {found!r}, which is not a cluster address")
        return Target(target.kind, target.init_address, target.host, target.port, setting=text)
    if text.startswith("ray://"):
        host, port = _split_host_port(text[len("ray://"):])
        return Target("client", f"ray://{host}:{port}", host, port, setting=text)
    host, port = _split_host_port(text)
    return Target("gcs", f"{host}:{port}", host, port, setting=text)


def _local_addresses() -> set:
    names = set(LOCAL_NAMES)
    try:
        hostname = socket.gethostname()
        names |= {hostname.lower(), socket.getfqdn().lower()}
        names |= set(socket.gethostbyname_ex(hostname)[2])
    except OSError:
        pass
    try:  # the address this machine uses outbound (no packet is sent by a UDP connect)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.254.254.254", 1))
            names.add(s.getsockname()[0])
    except OSError:
        pass
    return names


def on_this_machine(target: Target) -> bool:
    if target.kind == "private":
        return True
    host = target.host.lower()
    return host.startswith("127.") or host in _local_addresses()


def probe(host: str, port: int, timeout: float) -> str:
    """'' when host:port accepts a TCP connection within ``timeout`` seconds, else why not (one line)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return ""
    except socket.timeout:
        why = "no answer"
    except ConnectionRefusedError:
        why = "connection refused"
    except socket.gaierror as exc:
        why = f"unknown host: {exc.strerror or exc}"
    except OSError as exc:
        why = exc.strerror or str(exc)
    return (f"cannot reach the Ray cluster at {host}:{port} within {timeout:g}s ({why}): start it "
            "(`ray start --head`) or fix backend.address")

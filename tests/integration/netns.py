"""A network namespace with a path to the broker that a test can cut and heal.

:func:`isolated_namespace` makes ``warren-p-<id>``: a veth pair (host side
``10.213.<n>.1/30``, namespace side ``10.213.<n>.2/30``), loopback up inside, and a TCP
forwarder (socat) on the host side's address to the broker, which listens on
127.0.0.1 only. A process started with :meth:`Namespace.command` reaches the broker at
:attr:`Namespace.broker_url` only through the veth pair.

:meth:`Namespace.cut` sets the host side of the pair down, as a switch port that goes
dark: inside the namespace the link loses its carrier but keeps its address and route,
so what it sends goes nowhere; on the host the namespace's subnet is unreachable. No
packet says the path is gone: established TCP connections hang (neither end sees a
reset or a close) and new ones from inside wait for an answer that never comes, until
:meth:`Namespace.heal` sets the link up again. (``tc netem`` and iptables are not on
the test machines; the link is.)

Everything is removed on exit, and, before making a namespace, whatever a killed run
left: ``warren-p-*`` namespaces (their processes killed first), their host links, and
their forwarders. Only loopback and these namespaces are touched. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

PREFIX = "warren-p-"
LINK_PREFIX = "wpv"  # host links wpv<id>h, namespace links wpv<id>n (15 characters at most)
SUBNET = "10.213"
BROKER_PORT = 5672
FORWARDER_MARK = f"TCP-LISTEN:{BROKER_PORT},bind={SUBNET}."


def ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    command = (
        ["ip", *args] if namespace is None else ["ip", "netns", "exec", namespace, "ip", *args]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def usable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    try:
        ip("netns", "list")
    except (OSError, RuntimeError) as exc:
        return f"ip netns is not usable: {exc}"
    return None


@dataclass
class Namespace:
    name: str
    host_link: str
    inner_link: str
    host_address: str
    inner_address: str
    forwarder: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    cut_at: float | None = None

    @property
    def broker_url(self) -> str:
        return f"amqp://guest:guest@{self.host_address}:{BROKER_PORT}/"

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` keeps the process id)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        ip("link", "set", self.host_link, "down")
        self.cut_at = time.monotonic()

    def heal(self) -> None:
        ip("link", "set", self.host_link, "up")
        self.cut_at = None

    @property
    def is_cut(self) -> bool:
        """Whether the host side of the link is down now (asked of the kernel)."""
        return "state DOWN" in ip("link", "show", self.host_link)


@contextlib.contextmanager
def isolated_namespace() -> Iterator[Namespace]:
    """A namespace with a path to the broker, removed (and its processes killed) after."""
    remove_leftovers()
    ident = uuid.uuid4().hex[:6]
    octet = _free_octet()
    namespace = Namespace(
        name=f"{PREFIX}{ident}",
        host_link=f"{LINK_PREFIX}{ident}h",
        inner_link=f"{LINK_PREFIX}{ident}n",
        host_address=f"{SUBNET}.{octet}.1",
        inner_address=f"{SUBNET}.{octet}.2",
    )
    try:
        _make(namespace)
        yield namespace
    finally:
        _remove(namespace.name, namespace.host_link, namespace.forwarder)


def _make(namespace: Namespace) -> None:
    name = namespace.name
    ip("netns", "add", name)
    ip("link", "add", namespace.host_link, "type", "veth", "peer", "name", namespace.inner_link)
    ip("link", "set", namespace.inner_link, "netns", name)
    ip("addr", "add", f"{namespace.host_address}/30", "dev", namespace.host_link)
    ip("link", "set", namespace.host_link, "up")
    ip("addr", "add", f"{namespace.inner_address}/30", "dev", namespace.inner_link, namespace=name)
    ip("link", "set", namespace.inner_link, "up", namespace=name)
    ip("link", "set", "lo", "up", namespace=name)
    namespace.forwarder = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{BROKER_PORT},bind={namespace.host_address},fork,reuseaddr",
            f"TCP:127.0.0.1:{BROKER_PORT}",
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its children (one per connection) go with its group
    )
    _wait_listening(namespace.host_address)


def _wait_listening(address: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for conn in psutil.net_connections("tcp4"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr == (address, BROKER_PORT):
                return
        time.sleep(0.05)
    raise RuntimeError(f"the forwarder does not listen on {address}:{BROKER_PORT}")


def _free_octet() -> int:
    taken = {int(n) for n in re.findall(rf"{re.escape(SUBNET)}\.(\d+)\.", ip("-o", "addr"))}
    return next(n for n in range(256) if n not in taken)


def _remove(name: str, host_link: str, forwarder: subprocess.Popen[bytes] | None) -> None:
    for pid in ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    if forwarder is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(forwarder.pid, signal.SIGKILL)
        forwarder.wait(10)
    ip("link", "del", host_link, check=False)
    ip("netns", "del", name, check=False)


def remove_leftovers() -> None:
    """Remove what a killed run left: its namespaces, their links and forwarders."""
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            ident = name.removeprefix(PREFIX)
            _remove(name, f"{LINK_PREFIX}{ident}h", None)
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            cmdline = proc.info["cmdline"] or []
            if cmdline[:1] == ["socat"] and any(FORWARDER_MARK in part for part in cmdline):
                proc.kill()

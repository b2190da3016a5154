"""Hosts made of network namespaces: one bridge in the root namespace, one veth pair and
one namespace per host, all named after a tag of the test's own and removed by it.

The root namespace holds the bridge address (PostgreSQL, Redis and the test's clients
live there); each host gets the next address of the same /24. Cutting a host's link
sets the root end of its veth pair down: packets are dropped silently, no connection
is reset, as when a real host vanishes from the network.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

#: The /16 the test subnets are taken from (a /24 not routed on this machine yet).
_POOL = ipaddress.ip_network("10.213.0.0/16")


def ip(*args: str, check: bool = True) -> str:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and out.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    routed = ip("-4", "route", "show", "table", "all")
    for _ in range(100):
        subnet = list(_POOL.subnets(new_prefix=24))[secrets.randbelow(256)]
        if str(subnet) not in routed:
            return subnet
    raise AssertionError("no free /24 in 10.213.0.0/16 for the fleet bridge")


@dataclass
class Host:
    name: str
    namespace: str
    #: The veth end in the root namespace (on the bridge); down = link cut.
    outside: str
    address: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]


@dataclass
class Network:
    tag: str
    subnet: ipaddress.IPv4Network
    hosts: dict[str, Host] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"bf{self.tag}"

    @property
    def gateway(self) -> str:
        """The bridge's address: where the hosts reach PostgreSQL and Redis."""
        return str(self.subnet.network_address + 1)

    def add_host(self, name: str) -> Host:
        namespace = f"bf{self.tag}{name}"
        host = Host(
            name,
            namespace,
            f"bf{self.tag}{name}o",
            str(self.subnet.network_address + 10 + len(self.hosts) + 1),
        )
        self.hosts[name] = host
        inside = f"bf{self.tag}{name}i"
        ip("netns", "add", namespace)
        ip("link", "add", host.outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", namespace)
        ip("link", "set", host.outside, "master", self.bridge)
        ip("link", "set", host.outside, "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", inside)
        ip("-n", namespace, "link", "set", inside, "up")
        return host

    def cut(self, host: Host) -> None:
        ip("link", "set", host.outside, "down")

    def restore(self, host: Host) -> None:
        ip("link", "set", host.outside, "up")

    def remove(self) -> None:
        """Delete every namespace, veth and the bridge; kill what still runs inside."""
        for host in self.hosts.values():
            pids = ip("netns", "pids", host.namespace, check=False).split()
            for pid in pids:  # processes this test started in its own namespace
                with suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            ip("link", "del", host.outside, check=False)
            ip("netns", "del", host.namespace, check=False)
        ip("link", "del", self.bridge, check=False)


def require_namespaces() -> None:
    """Fail (never skip) without what the fleet needs: root and iproute2's ``ip``."""
    if shutil.which("ip") is None:
        raise AssertionError("the fleet tests need `ip` (apt-get install iproute2)")
    if os.geteuid() != 0:
        raise AssertionError("the fleet tests need root to create network namespaces")


@contextmanager
def network(*names: str) -> Iterator[Network]:
    """A bridge with one host per name, removed when the block ends (even on failure)."""
    require_namespaces()
    net = Network(secrets.token_hex(2), _free_subnet())
    try:
        ip("link", "add", net.bridge, "type", "bridge")
        ip("addr", "add", f"{net.gateway}/24", "dev", net.bridge)
        ip("link", "set", net.bridge, "up")
        for name in names:
            net.add_host(name)
        yield net
    finally:
        net.remove()

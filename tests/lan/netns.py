"""A throw-away LAN made of Linux network namespaces: one per node, two "sites" joined by a trunk.

    site A: bridge `siteA` ─┐                      ┌─ bridge `siteB`: site B
      node i: eth0 ── pI ───┤── trunkA ═══ trunkB ─┤─── pJ ── eth0: node j
                            (all bridges live in the namespace <prefix>br)

Every node namespace has one veth `eth0` with address 10.77.0.<i+1>/24 and nothing else (no
route out: the addresses exist only inside these namespaces). Inside them the names node0, node1,
... resolve to those addresses, as compose service names do on a compose network: `ip netns exec`
bind-mounts /etc/netns/<namespace>/hosts over /etc/hosts, and `build()` writes that file.
Bringing the trunk down splits the LAN in two; `limit()` puts a token-bucket filter on a node's
link in both directions. `close()` removes every namespace made, which takes their veths,
bridges and qdiscs with them, and the /etc/netns files; it is safe to call on a half-built LAN
and more than once.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SUBNET = "10.77.0"
ETC_NETNS = Path("/etc/netns")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def tc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tc", *args], capture_output=True, text=True, timeout=20, check=True)


def unavailable() -> str | None:
    """Why these tests cannot run here, or None when they can."""
    import os

    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns add)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"the iproute2 tool `{tool}` is not installed"
    probe = f"dpn{os.getpid()}probe"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add is not permitted here: {made.stderr.strip()}"
    ip("netns", "del", probe, check=False)
    return None


def sweep_stale(prefix: str = "dpn") -> list[str]:
    """Delete namespaces an earlier, killed test run left behind: named `<prefix><pid>br` or
    `<prefix><pid>n<i>` after a process that no longer exists. Returns what it deleted."""
    import os
    import re

    pattern = re.compile(rf"{re.escape(prefix)}(\d+)(br|n\d+)")
    gone = []
    names = set(ip("netns", "list", check=False).stdout.split())
    if ETC_NETNS.is_dir():
        names |= {p.name for p in ETC_NETNS.iterdir()}
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match and not os.path.exists(f"/proc/{match.group(1)}"):
            ip("netns", "del", name, check=False)
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
            gone.append(name)
    return gone


class Lan:
    def __init__(self, prefix: str, sites: Sequence[Sequence[int]]) -> None:
        assert len(sites) == 2, "two sites joined by one trunk"
        self.prefix = prefix
        self.sites = [list(s) for s in sites]
        self.bridge_ns = f"{prefix}br"
        self.made: list[str] = []
        self.made_etc = False  # whether build() created /etc/netns itself

    def ns(self, node: int) -> str:
        return f"{self.prefix}n{node}"

    @staticmethod
    def address(node: int) -> str:
        return f"{SUBNET}.{node + 1}"

    def _add_ns(self, name: str) -> None:
        ip("netns", "add", name)
        self.made.append(name)  # recorded at once: close() must find it even if the next step fails
        ip("-n", name, "link", "set", "lo", "up")

    def _write_hosts(self, ns: str, nodes: Sequence[int]) -> None:
        etc = ETC_NETNS / ns
        etc.mkdir(parents=True, exist_ok=True)
        names = "".join(f"{self.address(i)}\tnode{i}\n" for i in nodes)
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{names}")

    def build(self) -> Lan:
        self.made_etc = not ETC_NETNS.exists()
        br = self.bridge_ns
        self._add_ns(br)
        for site in ("siteA", "siteB"):
            ip("-n", br, "link", "add", site, "type", "bridge")
            ip("-n", br, "link", "set", site, "up")
        ip("-n", br, "link", "add", "trunkA", "type", "veth", "peer", "name", "trunkB")
        ip("-n", br, "link", "set", "trunkA", "master", "siteA", "up")
        ip("-n", br, "link", "set", "trunkB", "master", "siteB", "up")
        for site, nodes in zip(("siteA", "siteB"), self.sites, strict=True):
            for i in nodes:
                ns = self.ns(i)
                self._add_ns(ns)
                ip("-n", br, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
                   "netns", ns)
                ip("-n", br, "link", "set", f"p{i}", "master", site, "up")
                ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                ip("-n", ns, "link", "set", "eth0", "up")
                self._write_hosts(ns, [n for site in self.sites for n in site])
        return self

    def set_trunk(self, up: bool) -> None:
        """`ip link set trunkA down|up`: one link, between the two sites."""
        ip("-n", self.bridge_ns, "link", "set", "trunkA", "up" if up else "down")

    def limit(self, node: int, rate: str = "1mbit") -> None:
        """A token bucket on node's link, both directions (its eth0 and its bridge port)."""
        spec = ["root", "tbf", "rate", rate, "burst", "32kbit", "latency", "400ms"]
        tc("-n", self.ns(node), "qdisc", "add", "dev", "eth0", *spec)
        tc("-n", self.bridge_ns, "qdisc", "add", "dev", f"p{node}", *spec)

    def unlimit(self, node: int) -> None:
        for ns, dev in ((self.ns(node), "eth0"), (self.bridge_ns, f"p{node}")):
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"],
                           capture_output=True, timeout=20, check=False)

    def qdisc_stats(self, node: int) -> str:
        return tc("-s", "-n", self.ns(node), "qdisc", "show", "dev", "eth0").stdout

    def close(self) -> None:
        for name in reversed(self.made):
            ip("netns", "del", name, check=False)
            shutil.rmtree(ETC_NETNS / name, ignore_errors=True)
        self.made.clear()
        if self.made_etc:
            with contextlib.suppress(OSError):
                ETC_NETNS.rmdir()  # only if empty: files others put there meanwhile stay

    def leftovers(self) -> list[str]:
        listed = ip("netns", "list", check=False).stdout.split()
        etc = [p.name for p in ETC_NETNS.glob(f"{self.prefix}*")] if ETC_NETNS.is_dir() else []
        return sorted({name for name in listed if name.startswith(self.prefix)} | set(etc))

"""A real multi-node Ray cluster on this one machine, for tests and benchmarks (not a test module itself).

Each node is a `ray start` with its own --temp-dir, so every process of a node carries that directory in its
command line (or descends from one that does). That is how a node is stopped: never with `ray stop`, which kills
every Ray process on the machine, the test session's own instance included.

Facts found on this machine: `ray start` needs no --node-ip-address (Ray resolves 127.0.0.1 to the host's
address, e.g. 192.0.2.2, whatever is passed); several nodes on one host are fine, a driver that joins attaches to
the head; Unix socket paths must stay short (about 100 characters), so temp dirs live directly under /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))

# Let the GCS notice a dead node within a few seconds instead of about 15 (period 3 s x 5 failures).
FAST_HEALTH_CHECK_ENV = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Ray 2.60 turns token auth on for `ray start` when ~/.ray/auth_token exists (any earlier local ray.init makes
    # one), and then clients joining by address need RAY_AUTH_MODE=token too. Be explicit, whatever this machine holds.
    "RAY_AUTH_MODE": "disabled",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, command line) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
            table[pid] = (int(fields[1]), int(fields[2]), cmd)
        except (OSError, ValueError, IndexError):
            continue
    return table


def node_pids(temp_dir: str) -> set[int]:
    """Every live process of the node whose --temp-dir is `temp_dir`: those naming it, and all their descendants."""
    table = _proc_table()
    me = os.getpid()
    roots = {pid for pid, (_, _, cmd) in table.items() if temp_dir in cmd and pid != me}
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def kill_node_processes(temp_dir: str, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> int:
    """Kill one node's processes (by temp dir) and wait until they are gone; returns how many were signalled."""
    pids = node_pids(temp_dir)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Re-scan: a raylet may have forked a worker between the scan and the kill.
        left = node_pids(temp_dir)
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    return len(pids)


def can_make_private_dirs() -> bool:
    """Whether this machine lets us give a node its own mount namespace (root, or CAP_SYS_ADMIN, and unshare)."""
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


class LocalRayCluster:
    """Head plus extra nodes started with `ray start`, each in its own short temp dir under `root`."""

    def __init__(self, root: str | None = None, env: dict | None = None):
        self.root = root or tempfile.mkdtemp(prefix="rc", dir="/tmp")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **FAST_HEALTH_CHECK_ENV, **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: dict[str, str] = {}  # name -> temp dir
        self._count = 0

    def _temp_dir(self, name: str) -> str:
        self._count += 1
        path = os.path.join(self.root, f"{name}{self._count}")
        os.makedirs(path, exist_ok=True)
        return path

    def _ray_start(
        self, name: str, args: list[str], num_cpus: int, resources: dict | None, private_dir: str | None = None
    ) -> str:
        temp_dir = self._temp_dir(name)
        wrap: list[str] = []
        if private_dir:
            # The node's processes get their own mount namespace with an empty tmpfs over `private_dir`: a path
            # that exists on every node but holds different files on this one, as a node-local disk does.
            os.makedirs(private_dir, exist_ok=True)
            wrap = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                'mount -t tmpfs tmpfs "$0" && exec "$@"',
                private_dir,
            ]
        cmd = [
            *wrap,
            RAY,
            "start",
            *args,
            "--num-cpus",
            str(num_cpus),
            "--temp-dir",
            temp_dir,
            "--disable-usage-stats",
            "--resources",
            json.dumps(resources or {}),
            "--dashboard-agent-listen-port",
            str(free_port()),
        ]
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            kill_node_processes(temp_dir)
            raise RuntimeError(f"`ray start` for node {name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        self.nodes[name] = temp_dir
        return temp_dir

    def start_head(self, num_cpus: int = 1, resources: dict | None = None) -> str:
        self._ray_start(
            "head",
            ["--head", "--port", str(self.port), "--include-dashboard", "false", "--dashboard-port", str(free_port())],
            num_cpus,
            resources,
        )
        self.wait_for_nodes(1)
        return self.address

    def add_node(
        self,
        name: str,
        num_cpus: int = 1,
        resources: dict | None = None,
        wait: bool = True,
        private_dir: str | None = None,
    ) -> str:
        """Join a node; with `private_dir`, that directory is node-local on it (see can_make_private_dirs)."""
        before = len(self.alive_nodes())
        temp_dir = self._ray_start(name, ["--address", self.address], num_cpus, resources, private_dir)
        if wait:
            self.wait_for_nodes(before + 1)
        return temp_dir

    def kill_node(self, name: str) -> int:
        """Hard-kill a node as a crash would (SIGKILL every process of it); the GCS marks it dead seconds later."""
        return kill_node_processes(self.nodes.pop(name))

    def alive_nodes(self) -> list[dict]:
        from ray._raylet import GcsClient

        client = GcsClient(address=self.address)
        infos = client.get_all_node_info(timeout=5)
        return [
            dict(node_id=node_id.hex(), ip=info.node_manager_address, head=info.is_head_node)
            for node_id, info in infos.items()
            if info.state == 0  # ALIVE
        ]

    def wait_for_nodes(self, count: int, timeout_s: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        alive: list[dict] = []
        while time.monotonic() < deadline:
            try:
                alive = self.alive_nodes()
            except Exception:  # GCS still starting
                alive = []
            if len(alive) == count:
                return alive
            time.sleep(0.25)
        raise TimeoutError(f"expected {count} alive nodes at {self.address}, found {len(alive)}")

    def shutdown(self) -> None:
        """Stop every node started here (workers first, the head last); safe to call twice."""
        for name in [n for n in self.nodes if n != "head"] + (["head"] if "head" in self.nodes else []):
            kill_node_processes(self.nodes.pop(name))
        # Leftovers of nodes killed earlier (kill_node forgets them) die here too.
        kill_node_processes(self.root)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalRayCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def live_actors(address: str, class_substring: str = "") -> list[dict]:
    """ALIVE actors of the cluster (class name, node id, pid), read from the GCS without joining as a driver
    (Ray's state API would need the dashboard, which these nodes do not start)."""
    from ray._private.internal_api import get_state_from_address

    table = get_state_from_address(address).actor_table(None)
    return [
        dict(class_name=a["ActorClassName"], node_id=a["Address"]["NodeID"], pid=a.get("Pid"))
        for a in table.values()
        if a["State"] == "ALIVE" and class_substring in a["ActorClassName"]
    ]

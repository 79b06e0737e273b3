"""Fixtures for integration tests: private network namespaces joined by virtual Ethernet.

``netns_network(count)`` (via the ``netns_network`` fixture) creates ``count`` fresh network
namespaces, each with loopback up and one interface ``veth0`` in the subnet
``10.213.<n>.0/24``: two namespaces are joined by one veth pair, more by a bridge in an extra
"switch" namespace. Packets sent there (broadcasts included) cannot reach the host's real
network. Every namespace, and every process started in one through :meth:`NetnsHost.popen`,
is removed at teardown, even when the test fails.

Tests using it are skipped unless running as root on Linux with a working ``ip netns``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SUBNET_PREFIX = "10.213"


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True, timeout=10)


def netns_unavailable_reason() -> str | None:
    """Why network-namespace tests cannot run here, or ``None`` when they can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is missing"
    probe = f"sbprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` failed: {getattr(exc, 'stderr', exc)}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)
    return None


@dataclass
class NetnsHost:
    """One namespace: a private host with ``veth0`` at :attr:`address`.

    Attributes:
        name: the namespace name (for ``ip netns exec``).
        address: the IPv4 address of its ``veth0``.
        broadcast: the subnet broadcast address.
    """

    name: str
    address: str
    broadcast: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def popen(
        self, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Start ``argv`` inside the namespace (stdout/stderr piped, text mode).

        ``PYTHONPATH`` points at the repository's ``src``; ``env`` adds or overrides variables.
        """
        full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), **(env or {})}
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        self.processes.append(process)
        return process

    def python(
        self, code: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        """Run ``python -c code args...`` inside the namespace with this interpreter."""
        return self.popen([sys.executable, "-c", code, *args], env=env)


@dataclass
class NetnsNetwork:
    """Namespaces on one private Ethernet segment."""

    hosts: list[NetnsHost]
    switch: str | None  # the bridge namespace when there are more than two hosts
    subnet: str

    def namespaces(self) -> list[str]:
        names = [host.name for host in self.hosts]
        return [*names, self.switch] if self.switch else names


def _create(count: int, created: list[str]) -> NetnsNetwork:
    """Build the network; ``created`` receives each namespace name as soon as it exists."""
    tag = f"sb{os.getpid()}x{random.randrange(16**4):04x}"
    third = random.randrange(1, 255)
    subnet = f"{SUBNET_PREFIX}.{third}.0/24"
    hosts = [
        NetnsHost(f"{tag}h{i}", f"{SUBNET_PREFIX}.{third}.{i + 1}", f"{SUBNET_PREFIX}.{third}.255")
        for i in range(count)
    ]
    network = NetnsNetwork(hosts, f"{tag}sw" if count > 2 else None, subnet)
    for name in network.namespaces():
        _ip("netns", "add", name)
        created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
    if network.switch is None:
        a, b = hosts
        _ip(
            "-n",
            a.name,
            "link",
            "add",
            "veth0",
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            b.name,
        )
    else:
        sw = network.switch
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        for i, host in enumerate(hosts):
            port = f"port{i}"
            _ip(
                "-n",
                sw,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "veth0",
                "netns",
                host.name,
            )
            _ip("-n", sw, "link", "set", port, "master", "br0")
            _ip("-n", sw, "link", "set", port, "up")
    for host in hosts:
        _ip("-n", host.name, "addr", "add", f"{host.address}/24", "brd", "+", "dev", "veth0")
        _ip("-n", host.name, "link", "set", "veth0", "up")
    return network


def _destroy(network: NetnsNetwork, names: list[str]) -> None:
    for host in network.hosts:
        for process in host.processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
    for name in names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


@pytest.fixture
def netns_network() -> Iterator[Callable[[int], NetnsNetwork]]:
    """A factory ``make(count=2) -> NetnsNetwork``; everything it made is deleted afterwards."""
    reason = netns_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    made: list[tuple[NetnsNetwork, list[str]]] = []

    def make(count: int = 2) -> NetnsNetwork:
        if count < 2:
            raise ValueError(f"a network needs at least 2 namespaces, got {count}")
        created: list[str] = []
        try:
            network = _create(count, created)
        except BaseException:
            _destroy(NetnsNetwork([], None, ""), created)  # half-built: remove what exists
            raise
        made.append((network, created))
        return network

    try:
        yield make
    finally:
        for network, names in made:
            _destroy(network, names)


# --------------------------------------------------------------------------------------------
# Nodes in their own OS processes (tests/integration/node_script.py), driven by JSON lines.

NODE_SCRIPT = Path(__file__).resolve().parent / "node_script.py"


class NodeProcess:
    """One ``node_script.py`` process: send it commands, read its JSON events with timeouts.

    A reader thread moves stdout lines into a queue, so :meth:`expect` never blocks past its
    timeout; stderr goes to a log file that failure messages quote.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        import queue
        import threading

        self.log_path = log_path
        self._log = log_path.open("w")
        self.process = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=REPO_ROOT,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._rid = 0
        self.events: list[dict[str, object]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def stderr_tail(self, chars: int = 3000) -> str:
        """The end of the process's stderr (its log)."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def send(self, op: str, **fields: object) -> int:
        """Send a command; returns its request id."""
        import json

        self._rid += 1
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, "rid": self._rid, **fields}) + "\n")
        self.process.stdin.flush()
        return self._rid

    def expect(
        self, predicate: Callable[[dict[str, object]], bool], timeout: float
    ) -> dict[str, object]:
        """Return the first event (seen or new) matching ``predicate``; fail after ``timeout`` s."""
        import json
        import queue
        import time

        for event in self.events:
            if predicate(event):
                self.events.remove(event)
                return event
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, left))
            except queue.Empty:
                line = ""
            if line is None or line == "":
                reason = "exited" if line is None else f"sent nothing matching in {timeout} s"
                pytest.fail(f"node process {reason}; stderr:\n{self.stderr_tail()}")
            try:
                received: dict[str, object] = json.loads(line)
            except ValueError:
                continue  # not one of our JSON lines
            if predicate(received):
                return received
            self.events.append(received)

    def call(self, op: str, wait: float, **fields: object) -> dict[str, object]:
        """Send a command and wait (``wait`` seconds) for its reply."""
        rid = self.send(op, **fields)
        return self.expect(lambda e: e.get("rid") == rid, wait)

    def stop(self) -> None:
        """Ask the process to quit; kill it if it has not exited within 10 s."""
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def node_processes(tmp_path: Path) -> Iterator[Callable[..., NodeProcess]]:
    """A factory ``spawn(namespace, prefix=(), env=None) -> NodeProcess``; all stopped at teardown.

    Each process runs ``node_script.py namespace`` with ``PYTHONPATH=src`` and
    ``SCATTERBRAINED_DISCOVERY=loopback`` (``env`` overrides); ``prefix`` is put before the
    interpreter (e.g. ``["ip", "netns", "exec", name]``).
    """
    spawned: list[NodeProcess] = []

    def spawn(
        namespace: str, prefix: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> NodeProcess:
        full_env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT / "src"),
            "SCATTERBRAINED_DISCOVERY": "loopback",
            **(env or {}),
        }
        argv = [*prefix, sys.executable, str(NODE_SCRIPT), namespace]
        node = NodeProcess(argv, full_env, tmp_path / f"node{len(spawned)}.log")
        spawned.append(node)
        return node

    try:
        yield spawn
    finally:
        for node in spawned:
            node.stop()

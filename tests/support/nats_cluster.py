"""A JetStream cluster of embedded ``nats-server`` processes on loopback, for tests that
take one node down under load.

Each node has its own client, route (cluster) and monitoring port and its own store; the
routes name every other node, as a production cluster's configuration does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats

from libs.embedded import free_port

CLUSTER_NAME = "pcp-test"


@dataclass
class ClusterNode:
    name: str
    port: int
    route_port: int
    http_port: int
    store: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.store / "nats-server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    def __init__(self, folder: Path, size: int = 3) -> None:
        self.nodes = [
            ClusterNode(f"n{i}", free_port(), free_port(), free_port(), folder / f"n{i}")
            for i in range(1, size + 1)
        ]

    @property
    def url(self) -> str:
        """Every node, comma separated: what ``PLATFORM_NATS_URL`` takes."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    def _config(self, node: ClusterNode) -> str:
        routes = ", ".join(
            f'"nats-route://127.0.0.1:{other.route_port}"' for other in self.nodes if other is not node
        )
        return (
            f"server_name: {node.name}\n"
            f'listen: "127.0.0.1:{node.port}"\n'
            f'http: "127.0.0.1:{node.http_port}"\n'
            f'jetstream {{\n  store_dir: "{node.store / "jetstream"}"\n}}\n'
            f"cluster {{\n  name: {CLUSTER_NAME}\n"
            f'  listen: "127.0.0.1:{node.route_port}"\n'
            f"  routes: [{routes}]\n}}\n"
        )

    def start_node(self, name: str, timeout: float = 15.0) -> None:
        """Start (or restart, on its old store) one node; returns once it accepts clients."""
        node = self.node(name)
        node.store.mkdir(parents=True, exist_ok=True)
        config = node.store / "nats-server.conf"
        config.write_text(self._config(node))
        node.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "nats-server"), "-c", str(config), "-l", str(node.log_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if not node.running:
                raise AssertionError(f"{name} exited:\n{node.log_path.read_text(errors='replace')[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", node.port), timeout=0.2),
            ):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} does not listen after {timeout:.0f}s")
            time.sleep(0.02)

    def start(self) -> None:
        for node in self.nodes:
            self.start_node(node.name)

    def kill(self, name: str) -> None:
        """SIGKILL one node."""
        node = self.node(name)
        if node.process is not None and node.running:
            node.process.kill()
            node.process.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.running:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()

    def healthy(self, name: str) -> bool:
        """The node's own verdict (``/healthz``): JetStream up, caught up with its streams."""
        with contextlib.suppress(httpx.HTTPError):
            return (
                httpx.get(f"http://127.0.0.1:{self.node(name).http_port}/healthz", timeout=2).status_code
                == 200
            )
        return False

    def stream_leader(self, stream: str) -> str:
        """The name of the node leading ``stream``."""

        async def ask() -> str:
            nc = await nats.connect(servers=[node.url for node in self.nodes if node.running])
            try:
                info = await nc.jetstream().stream_info(stream)
            finally:
                await nc.close()
            assert info.cluster is not None, info
            assert info.cluster.leader, info
            return str(info.cluster.leader)

        return asyncio.run(ask())

    def stream_replicas(self, stream: str) -> int:
        async def ask() -> int:
            nc = await nats.connect(servers=[node.url for node in self.nodes if node.running])
            try:
                return int((await nc.jetstream().stream_info(stream)).config.num_replicas or 1)
            finally:
                await nc.close()

        return asyncio.run(ask())


@contextlib.contextmanager
def nats_cluster(folder: Path, size: int = 3) -> Iterator[NatsCluster]:
    cluster = NatsCluster(folder, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()

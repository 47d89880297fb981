"""Channel layers and Redis servers for the notification tests.

The shared Redis at ``REDIS_URL`` serves several test runs at once, so every layer built here
gets its own key prefix. Tests that stop Redis run their own ``redis-server`` on a free port
(``PrivateRedis``); ``SilentServer`` accepts connections and never answers, to test timeouts.
"""

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_BACKEND = "channels_redis.core.RedisChannelLayer"
MEMORY_BACKEND = "channels.layers.InMemoryChannelLayer"


def unique_name(label: str) -> str:
    """A group name or key prefix no other test (or test run) uses."""
    return f"{label}-{uuid.uuid4().hex[:12]}"


def redis_layer(url: str, **config: Any) -> dict[str, Any]:
    """A ``CHANNEL_LAYERS`` entry for channels_redis at ``url``, with a unique prefix."""
    config.setdefault("prefix", unique_name("taskshed-ntf"))
    return {"BACKEND": REDIS_BACKEND, "CONFIG": {"hosts": [url], **config}}


def memory_layer(**config: Any) -> dict[str, Any]:
    """A ``CHANNEL_LAYERS`` entry for the in-memory layer."""
    return {"BACKEND": MEMORY_BACKEND, "CONFIG": config}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_answers(port: int, timeout: float = 0.5) -> bool:
    """True if a Redis server on ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def group_members(layer: Any, group: str) -> set[str]:
    """The channels currently in ``group`` (expired memberships left out), on either layer."""
    if type(layer).__name__ == "InMemoryChannelLayer":
        layer._clean_expired()
        return set(layer.groups.get(group, {}))
    key = layer._group_key(group)
    connection = layer.connection(layer.consistent_hash(group))
    cutoff = int(time.time()) - layer.group_expiry
    members = await connection.zrangebyscore(key, cutoff, "+inf")
    return {member.decode() for member in members}


def redis_group_members(url: str, prefix: str, group: str) -> int:
    """How many channels are in ``group`` on the Redis at ``url`` (from a sync test)."""
    import redis
    from channels_redis.core import RedisChannelLayer

    key = RedisChannelLayer(hosts=[url], prefix=prefix)._group_key(group)
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return client.zcard(key)
    except redis.ConnectionError:
        return 0
    finally:
        client.close()


class Inbox:
    """A channel in a group whose messages a background task collects, in order."""

    def __init__(self, layer: Any, group: str):
        self.layer = layer
        self.group = group
        self.messages: list[dict[str, Any]] = []
        self.channel = ""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "Inbox":
        self.channel = await self.layer.new_channel()  # as a Channels consumer does
        await self.layer.group_add(self.group, self.channel)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.layer.group_discard(self.group, self.channel)

    async def _collect(self) -> None:
        while True:
            self.messages.append(await self.layer.receive(self.channel))

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until ``count`` messages arrived in all; then a little longer for extras."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(self.messages)} message(s) after {timeout} s, expected {count}: "
                    f"{self.messages}"
                )
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.15)  # a second message for the same change would be here by now
        return list(self.messages)


class PrivateRedis:
    """A ``redis-server`` of our own on a free port, without persistence: stop and restart it
    at will (never the shared server). ``stop()`` kills it; ``start()`` reuses the port."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        log = (self.workdir / "redis-server.log").open("ab")
        with log:
            self.process = subprocess.Popen(
                [
                    REDIS_SERVER,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.workdir),
                ],  # fmt: skip
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not redis_answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"redis-server on port {self.port} did not start:\n{self.log()}"
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait until it is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def log(self) -> str:
        path = self.workdir / "redis-server.log"
        return path.read_text(errors="replace") if path.exists() else ""


class SilentServer:
    """A TCP port that accepts connections (the kernel completes the handshake) and never
    answers: a Redis client connected to it waits for a reply until it gives up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"

    def close(self) -> None:
        self.sock.close()

"""Resource limits of a container process, and what an engine node offers.

``cpu`` and ``memory`` are ``[request, limit]`` pairs (see ``warren.options``). Requests
count against the node's capacity when the pool places containers; limits are put on
the container process itself when it starts. Without a writable cgroup v2 hierarchy
(the case for an engine inside a container), the limits are: a CPU affinity of
``ceil(limit)`` cores, and ``RLIMIT_DATA`` (heap and private writable mappings) at
the memory limit, past which allocations fail and Python raises ``MemoryError``; the
container reports that to the caller as ``OutOfMemoryError``, which is not retried.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from warren.config import Settings
from warren.exceptions import ConfigError, InvalidError
from warren.wire.control import NodeOffer
from warren.wire.spec import FunctionSpec, parse_gpu

MIB = 1024 * 1024


def _total_memory_mib() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // MIB


def _parse_gpus(value: str) -> dict[str, int]:
    gpus: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in value.split(","))):
        parsed = parse_gpu(part)
        assert parsed is not None
        kind, count = parsed
        gpus[kind] = gpus.get(kind, 0) + count
    return gpus


@dataclass
class Node:
    """What this engine node offers: cores, memory (MiB), GPUs by kind, and its labels."""

    cpus: float = field(default_factory=lambda: float(os.cpu_count() or 1))
    memory: int = field(default_factory=_total_memory_mib)
    gpus: dict[str, int] = field(default_factory=dict)
    region: str | None = None
    cloud: str | None = None
    reserved_cpu: float = 0.0
    reserved_memory: int = 0

    @classmethod
    def from_settings(cls, config: Settings) -> Node:
        """The node ``config`` describes (``WARREN_NODE_CPUS``, ``WARREN_NODE_MEMORY``,
        ``WARREN_GPUS`` such as ``H100:2``, ``WARREN_REGION``, ``WARREN_CLOUD``, or their
        flags); the machine's own figures where it says nothing."""
        try:
            gpus = _parse_gpus(config.gpus)
        except InvalidError as exc:
            raise ConfigError(f"WARREN_GPUS (or --gpus): {exc}") from None
        node = cls(gpus=gpus, region=config.region or None, cloud=config.cloud or None)
        if config.node_cpus is not None:
            node.cpus = config.node_cpus
        if config.node_memory is not None:
            node.memory = config.node_memory
        return node

    def labels(self) -> dict[str, object]:
        return {"region": self.region, "cloud": self.cloud, "gpus": self.gpus}

    def problem(self, spec: FunctionSpec) -> str | None:
        """Why this node can never run ``spec`` (naming the request), or None if it can."""
        gpu = parse_gpu(spec.gpu)
        if gpu is not None:
            kind, count = gpu
            have = sum(self.gpus.values()) if kind == "any" else self.gpus.get(kind, 0)
            if have < count:
                return (
                    f"{spec.tag} asks for gpu={spec.gpu!r}, and no engine node offers it "
                    f"(this node has {self._gpu_text()})"
                )
        labels: list[tuple[str, list[str], str | None]] = [
            ("region", spec.region, self.region),
            ("cloud", spec.cloud, self.cloud),
        ]
        for label, wanted, ours in labels:
            if wanted and ours not in wanted:
                return (
                    f"{spec.tag} asks for {label} {' or '.join(wanted)}, and no engine node is "
                    f"there (this node: {label} {ours or 'not set'})"
                )
        cpu, memory = _requests(spec)
        if cpu > self.cpus or memory > self.memory:
            return (
                f"{spec.tag} requests cpu={cpu:g} and memory={memory} MiB; this node has "
                f"{self.cpus:g} cores and {self.memory} MiB"
            )
        return None

    def offer(self) -> NodeOffer:
        """What this node offers, as an agent's heartbeat and a node listing carry it (its
        reservations stay here)."""
        return NodeOffer(self.cpus, self.memory, dict(self.gpus), self.region, self.cloud)

    @classmethod
    def offered(cls, offer: NodeOffer) -> Node:
        """A node offering what ``offer`` says, nothing reserved on it yet."""
        return cls(offer.cpus, offer.memory, dict(offer.gpus), offer.region, offer.cloud)

    def reserve(self, spec: FunctionSpec) -> bool:
        """Take a container's requests from the capacity left, if they fit."""
        cpu, memory = _requests(spec)
        if (
            self.reserved_cpu + cpu > self.cpus + 1e-9
            or self.reserved_memory + memory > self.memory
        ):
            return False
        self.reserved_cpu += cpu
        self.reserved_memory += memory
        return True

    def release(self, spec: FunctionSpec) -> None:
        cpu, memory = _requests(spec)
        self.reserved_cpu = max(0.0, self.reserved_cpu - cpu)
        self.reserved_memory = max(0, self.reserved_memory - memory)

    def cuda_visible_devices(self, spec: FunctionSpec) -> str | None:
        gpu = parse_gpu(spec.gpu)
        if gpu is None:
            return None
        return ",".join(str(i) for i in range(gpu[1]))

    def _gpu_text(self) -> str:
        return ", ".join(f"{kind}:{n}" for kind, n in self.gpus.items()) or "no GPUs"


def _requests(spec: FunctionSpec) -> tuple[float, int]:
    cpu = spec.cpu[0] if spec.cpu is not None and spec.cpu[0] is not None else 0.0
    memory = spec.memory[0] if spec.memory is not None and spec.memory[0] is not None else 0
    return float(cpu), int(memory)

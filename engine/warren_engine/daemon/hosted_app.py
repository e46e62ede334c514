"""An app as an engine node hosts it: its functions and variants, and its pools here.

A function whose timeout the broker would not let run to the end is refused at
registration: RabbitMQ (before 3.12) closes the channel of a consumer that holds a
delivery longer than its node-wide ``consumer_timeout``, and a container holds each
input's message until the input is done. ``WARREN_BROKER_CONSUMER_TIMEOUT`` tells
the engine the broker's value (``broker_config`` raises it to 7 days).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from warren import exceptions
from warren.wire import naming
from warren.wire.control import AutoscalerChanges
from warren.wire.spec import FunctionSpec

from warren_engine.cluster.entries import AppPut
from warren_engine.pool.autoscaler import Autoscaling
from warren_engine.pool.pool import ContainerPool

# What a container needs besides the function's own timeout before it acks a message:
# a tenth of the broker's timeout, at most a minute.
ACK_MARGIN_FRACTION = 0.1
ACK_MARGIN_MAX = 60.0


def longest_timeout(consumer_timeout: float) -> float:
    """The longest function timeout a broker with this ``consumer_timeout`` lets finish."""
    return consumer_timeout - min(ACK_MARGIN_MAX, consumer_timeout * ACK_MARGIN_FRACTION)


def check_timeouts(specs: dict[str, FunctionSpec], consumer_timeout: float) -> None:
    """Refuse functions whose calls the broker would cut off (and redeliver) mid-run."""
    limit = longest_timeout(consumer_timeout)
    too_long = {tag: spec.timeout for tag, spec in specs.items() if spec.timeout > limit}
    if too_long:
        listed = ", ".join(f"{tag} (timeout={value:g}s)" for tag, value in sorted(too_long.items()))
        raise exceptions.InvalidError(
            f"{listed}: a call may run at most {limit:g}s on this broker, whose consumer_timeout "
            f"is {consumer_timeout:g}s (WARREN_BROKER_CONSUMER_TIMEOUT); past it RabbitMQ closes "
            "the container's channel and runs the input again. Lower the timeout, or raise "
            "consumer_timeout in the broker's rabbitmq.conf (see broker_config/) and set "
            "WARREN_BROKER_CONSUMER_TIMEOUT on the engine to match"
        )


def default_max_containers(spec: FunctionSpec, cores: float) -> int:
    """``max_containers`` as set, else one container per core of the node (and at least
    ``min_containers``): then a CPU-bound map uses the whole machine, as a process pool
    would, with no option set."""
    if spec.max_containers is not None:
        return spec.max_containers
    return max(1, int(cores), spec.min_containers)


def pool_key(tag: str, variant: str | None = None) -> str:
    """A function's key in an app: its tag, or ``tag.variant`` for a with_options variant."""
    return tag if variant is None else f"{tag}.{variant}"


def specs_by_key(specs: Iterable[FunctionSpec]) -> dict[str, FunctionSpec]:
    return {pool_key(spec.tag, spec.variant): spec for spec in specs}


def merged_changes(
    earlier: AutoscalerChanges | None, later: AutoscalerChanges
) -> AutoscalerChanges:
    """What ``earlier`` set, with what ``later`` sets over it."""
    if earlier is None:
        return later
    given = {key: value for key, value in dataclasses.asdict(later).items() if value is not None}
    return dataclasses.replace(earlier, **given)


def with_changes(settings: Autoscaling, changes: AutoscalerChanges | None) -> Autoscaling:
    """``settings`` with what ``changes`` sets; ``InvalidError`` if that makes no sense."""
    return settings if changes is None else settings.updated(dataclasses.asdict(changes))


@dataclass(slots=True)
class HostedApp:
    """An app and its pools. ``specs`` holds its functions by tag and the variants made
    of them by ``with_options`` by ``tag.variant`` (a redeploy, which has none, resets them).

    Only the app registry (:mod:`warren_engine.daemon.app_registry`) changes one.
    """

    environment: str
    app: str
    instance: str
    specs: dict[str, FunctionSpec]
    code_path: Path
    ephemeral: bool
    sys_path: tuple[str, ...] = ()
    # update_autoscaler's, by pool key: until the next deploy.
    overrides: dict[str, AutoscalerChanges] = field(default_factory=dict)
    pools: dict[str, ContainerPool] = field(default_factory=dict)  # those on this node
    deployed_at: float = field(default_factory=time.time)
    lease: str | None = None

    def queue(self, key: str) -> str:
        spec = self.specs[key]
        return naming.function_queue(self.environment, self.instance, spec.tag, spec.variant)

    def autoscaling(self, key: str, cores: float) -> Autoscaling:
        """The autoscaler settings of one pool on a node of ``cores`` (the default
        ``max_containers``), with ``update_autoscaler`` overrides applied."""
        spec = self.specs[key]
        base = Autoscaling(
            spec.min_containers,
            default_max_containers(spec, cores),
            spec.buffer_containers,
            spec.scaledown_window,
        )
        return with_changes(base, self.overrides.get(key))

    def max_is_set(self, key: str) -> bool:
        """Whether ``max_containers`` bounds the pool on all nodes together (set on the
        function, or by ``update_autoscaler``); unset, it is per node (its cores)."""
        override = self.overrides.get(key)
        changed = override is not None and override.max_containers is not None
        return changed or self.specs[key].max_containers is not None

    def entry(self, entry_id: str, node: str, code: bytes) -> AppPut:
        """This app as a registry entry (with ``code``, which it keeps on disk)."""
        return AppPut(
            entry_id,
            self.environment,
            self.app,
            self.instance,
            self.ephemeral,
            tuple(self.specs.values()),
            code,
            self.sys_path,
            dict(self.overrides),
            self.deployed_at,
            self.lease,
            node,
        )

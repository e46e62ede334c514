"""Names of every queue and exchange Warren uses, built in one place.

Every name starts with ``warren.<protocol>.`` so that a future wire change gets fresh
queues instead of colliding with old ones, and the environment comes next so an
environment is a name prefix (AMQP cannot create vhosts; a vhost per environment is
an operator's option on top of this). Dots separate the parts, so the parts themselves
may not contain dots.

::

    warren.v1.control.<run>                   a private engine started for one app run
    warren.v1.node.<name>                     one engine node's own requests (its peers')
    warren.v1.nodes                           fanout exchange: engine nodes' heartbeats
    warren.v1.dlx                             dead-letter exchange (direct)
    warren.v1.replies                         direct exchange: results, to result queues
    warren.v1.<env>.control                   the control queue of an environment's engines
    warren.v1.<env>.registry                  stream: the environment's deployed apps
    warren.v1.<env>.leader                    single-active-consumer queue: who leads
    warren.v1.<env>.dead                      dead-letter queue of an environment
    warren.v1.<env>.cancel                    fanout exchange: cancelled invocations
    warren.v1.<env>.delay                     headers exchange: retries waiting their backoff
    warren.v1.<env>.delay.<ms>                holds retries for <ms>, then back to their queue
    warren.v1.<env>.requeue                   direct exchange: retries back to function queues
    warren.v1.<env>.orphans                   retries whose function queue is gone (answered)
    warren.v1.<env>.fn.<app>.<function>       a function's input queue
    warren.v1.<env>.fn.<app>.<function>.<v>   ... of a variant made by with_options
    warren.v1.<env>.slots.<app>.<function>... its container slots (max_containers tokens)
    warren.v1.<env>.results.<client>          a client's result queue
    warren.v1.<env>.results.<client>.marker   ... and its broker-restart marker
    warren.v1.<env>.lease.<client>            exists while the client is connected
    warren.v1.<env>.call.<call>               the stored result of one spawned call
    warren.v1.<env>.cancels.<listener>        a container's or engine's cancel subscription
    warren.v1.<env>.logs                      fanout exchange, and the stream queue it feeds:
                                              what the environment's functions printed
"""

from __future__ import annotations

import functools

from warren.exceptions import InvalidError
from warren.names import check_part as check_part  # re-exported: callers name it here

PROTOCOL_VERSION = 1
PREFIX = f"warren.v{PROTOCOL_VERSION}"


def control_queue(environment: str, run_id: str | None = None) -> str:
    """The control queue of an environment's engine nodes (every node serving it consumes
    it), or the private one of an engine started for one app run."""
    if run_id is not None:
        return f"{PREFIX}.control.{check_part('run id', run_id)}"
    return f"{PREFIX}.{check_part('environment', environment)}.control"


def node_queue(name: str) -> str:
    """One engine node's own queue: what its peers ask of it alone (its containers)."""
    return f"{PREFIX}.node.{check_part('node name', name)}"


def nodes_exchange() -> str:
    """The fanout exchange every engine node sends its heartbeats to."""
    return f"{PREFIX}.nodes"


def registry_stream(environment: str) -> str:
    """The stream that keeps an environment's deployed apps (every node reads it)."""
    return f"{PREFIX}.{check_part('environment', environment)}.registry"


def leader_queue(environment: str) -> str:
    """The single-active-consumer queue whose active consumer leads the environment."""
    return f"{PREFIX}.{check_part('environment', environment)}.leader"


def slots_queue(function_queue_name: str) -> str:
    """Where a function's container slots wait to be taken (one token per container)."""
    head, _, tail = function_queue_name.partition(".fn.")
    if not tail or not head.startswith(f"{PREFIX}."):
        raise InvalidError(f"{function_queue_name!r} is not a function queue")
    return f"{head}.slots.{tail}"


def dead_letter_exchange() -> str:
    return f"{PREFIX}.dlx"


def dead_letter_queue(environment: str) -> str:
    return f"{PREFIX}.{check_part('environment', environment)}.dead"


def cancel_exchange(environment: str) -> str:
    return f"{PREFIX}.{check_part('environment', environment)}.cancel"


def replies_exchange() -> str:
    """One for every environment: a client may call functions of several."""
    return f"{PREFIX}.replies"


def delay_exchange(environment: str) -> str:
    return f"{PREFIX}.{check_part('environment', environment)}.delay"


def delay_queue(environment: str, milliseconds: int) -> str:
    return f"{delay_exchange(environment)}.{int(milliseconds)}"


def requeue_exchange(environment: str) -> str:
    return f"{PREFIX}.{check_part('environment', environment)}.requeue"


def orphans(environment: str) -> str:
    """The fanout exchange, and its queue, for retries that found no function queue."""
    return f"{PREFIX}.{check_part('environment', environment)}.orphans"


@functools.lru_cache(maxsize=4096)
def function_queue(environment: str, app: str, function: str, variant: str | None = None) -> str:
    name = (
        f"{PREFIX}.{check_part('environment', environment)}.fn."
        f"{check_part('app name', app)}.{check_part('function name', function)}"
    )
    if variant is not None:
        name += f".{check_part('variant', variant)}"
    return name


def function_of_queue(name: str) -> tuple[str, str, str, str | None] | None:
    """``(environment, app instance, function, variant)`` of a function queue's name (the
    inverse of :func:`function_queue`); None for a name that is not one."""
    parts = name.split(".")
    if not name.startswith(f"{PREFIX}.") or len(parts) not in (6, 7) or parts[3] != "fn":
        return None
    variant = parts[6] if len(parts) == 7 else None
    return parts[2], parts[4], parts[5], variant


def environment_of(name: str) -> str:
    """The environment a ``warren.v1.<env>.…`` queue or exchange belongs to."""
    parts = name.split(".")
    if len(parts) < 3 or not name.startswith(f"{PREFIX}."):
        raise InvalidError(f"{name!r} is not a Warren name")
    return check_part("environment", parts[2])


def _scoped(environment: str, kind: str, label: str, value: str) -> str:
    return f"{PREFIX}.{check_part('environment', environment)}.{kind}.{check_part(label, value)}"


def result_queue(environment: str, client_id: str) -> str:
    return _scoped(environment, "results", "client id", client_id)


def marker_queue(environment: str, client_id: str) -> str:
    """Where a client keeps the marker that tells it whether the broker restarted."""
    return f"{result_queue(environment, client_id)}.marker"


def lease_queue(environment: str, client_id: str) -> str:
    return _scoped(environment, "lease", "client id", client_id)


def call_queue(environment: str, call_id: str) -> str:
    return _scoped(environment, "call", "call id", call_id)


def is_call_queue(name: str) -> bool:
    """Whether ``name`` is a spawned call's result queue (its results must be durable)."""
    parts = name.split(".")
    return len(parts) == 5 and name.startswith(f"{PREFIX}.") and parts[3] == "call"


def cancel_listener_queue(environment: str, listener_id: str) -> str:
    """A container's (or the engine's) own queue on the cancel exchange."""
    return _scoped(environment, "cancels", "listener id", listener_id)


def log_stream(environment: str) -> str:
    """The environment's log exchange (containers publish to it) and its stream queue."""
    return f"{PREFIX}.{check_part('environment', environment)}.logs"

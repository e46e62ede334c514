"""Settings, in one place: the only module that reads ``WARREN_*`` variables.

An entry point (the command line, the engine, a client's ``Client.connect()``) builds
one :class:`Settings` with :meth:`Settings.from_environment`, the command line's flags
over the environment, and passes it down; an engine gives its containers theirs. Each
value is checked once, there: a bad one raises :class:`~warren.exceptions.ConfigError`
naming the variable (or flag) and the value (never a secret key or a URL's password).
An empty variable counts as unset.

==============================  ======================================  ==========================
variable                        meaning                                 default
==============================  ======================================  ==========================
WARREN_BROKER_URL               AMQP URL of RabbitMQ                    amqp://guest:guest@127.0.0.1:5672/
WARREN_CONTAINER_BROKER_URL     the URL an engine's containers use:     WARREN_BROKER_URL
                                a user that may only consume function
                                queues and publish results
WARREN_FUNCTION_BROKER_URL      the URL functions that call functions   WARREN_CONTAINER_BROKER_URL
                                get (as ``WARREN_BROKER_URL``) in
                                containers: a caller's rights
WARREN_ENVIRONMENT              environment (name prefix) to work in    main
                                (``--env``)
WARREN_QUEUE_TYPE               ``classic`` or ``quorum`` queues for    classic
                                calls, results and state (decided when
                                a queue is made; warren.wire.topology)
WARREN_RESULT_QUEUE_EXPIRY      seconds an unused result queue lives    600
WARREN_ENGINE_START_TIMEOUT     seconds to wait for a child engine      60
WARREN_RESULT_RETENTION         seconds a spawned call's result is kept 86400 (24 hours)
WARREN_STOP_GRACE               seconds a stopping container lets its   30
                                running inputs finish (then they are
                                requeued for another container)
WARREN_SECRET_KEY               the key every message is signed with    (see warren.wire.signing)
WARREN_SECRET_KEY_FILE          a file holding that key instead         <config dir>/secret-key
WARREN_MAX_MESSAGE_SIZE         bytes one call or result may take       2097152 (2 MiB)
                                (at least 4096)
WARREN_MESSAGE_EXPIRY           seconds a signed message stays valid    86400
WARREN_CRASH_LIMIT              container deaths an input may cause     3
                                before it is dead-lettered
WARREN_BROKER_CONSUMER_TIMEOUT  the broker's ``consumer_timeout``       1800 (RabbitMQ's default)
                                in seconds: the engine refuses longer
                                function timeouts
WARREN_RECONNECT_TIMEOUT        seconds a client waits for a lost       300
                                broker before failing its calls
WARREN_HTTP_HOST                where the engine serves web endpoints   127.0.0.1
                                (``--http-host``)
WARREN_HTTP_PORT                ... and on which port, 0 to 65535       0
                                (0: a daemon's last one, else any free
                                one; ``--http-port``)
WARREN_PUBLIC_URL               the endpoints' public base URL          http://<host>:<port>
                                (``--public-url``)
WARREN_HTTP_DEBUG               ``1``: a failed web call's response     0
                                carries the error type and traceback
WARREN_METRICS_PUBLIC           ``1``: ``<http base>/metrics`` answers  0
                                anyone (else only a request bearing
                                the dashboard token)
WARREN_DASHBOARD_TOKEN          the token the engine's dashboard asks   one made and kept in the
                                for (a secret; an engine run by         state dir, printed when
                                ``app.run()`` has a dashboard only      the daemon starts
                                when it is set)
WARREN_EVENT_LOOP               ``uvloop`` (where installed) or         uvloop
                                ``asyncio``: Warren's own event loops
WARREN_PIN_CONTAINERS           ``0``: no core of its own for each      1
                                single-slot sync container
WARREN_LOG_LEVEL                debug, info, warning, error or          info
                                critical (``--log-level``)
WARREN_LOG_RATE                 characters per second a container       1048576
                                ships of its function's output (at
                                least 1024; beyond, lines are dropped
                                and the drop is counted)
WARREN_STATE_DIR                where an engine daemon records its      $XDG_STATE_HOME/warren
                                apps, secrets, volumes (``--state-dir``)
WARREN_NODE_NAME                this engine node's name, unique         host-pid
                                (``--node-name``)
WARREN_ENGINE_ENVIRONMENTS      environments an engine node serves,     WARREN_ENVIRONMENT
                                comma-separated (``warren engine --env``)
WARREN_NODE_CPUS                cores this engine node offers           the machine's
WARREN_NODE_MEMORY              MiB this engine node offers             the machine's
WARREN_GPUS                     GPUs it offers, e.g. ``H100:2`` or      none
                                ``A100,T4`` (``--gpus``)
WARREN_REGION                   its region label (``--region``)         none
WARREN_CLOUD                    its cloud label (``--cloud``)           none
XDG_CONFIG_HOME                 <config dir> is its ``warren``          ~/.config
XDG_STATE_HOME                  the default state dir is its ``warren`` ~/.local/state
==============================  ======================================  ==========================

On switches (``WARREN_HTTP_DEBUG``, ``WARREN_METRICS_PUBLIC``, ``WARREN_PIN_CONTAINERS``)
``1``, ``true``, ``yes``, ``on`` mean yes and ``0``, ``false``, ``no``, ``off`` mean no.
Warren also *sets* variables for the function code in a container: ``WARREN_BROKER_URL``
(see above) and ``WARREN_VOLUME_<NAME>``, the directory of each volume it mounts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from warren.exceptions import ConfigError, InvalidError
from warren.names import check_part

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
# Seconds between a robust connection's attempts to come back (aio-pika's default is 5).
RECONNECT_INTERVAL = 1.0
QUEUE_TYPES = ("classic", "quorum")
EVENT_LOOPS = ("uvloop", "asyncio")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_YES = frozenset({"1", "true", "yes", "on"})
_NO = frozenset({"0", "false", "no", "off"})


# -- checking one value -------------------------------------------------------------------
# Each check takes the value's source (the variable, or the flag over it) and its text.


@dataclass(frozen=True, slots=True)
class Number:
    """A finite number (an integer, if ``integer``) within bounds."""

    minimum: float
    above: bool = False  # strictly above ``minimum``
    integer: bool = False
    maximum: float = math.inf

    def __call__(self, source: str, raw: str) -> Any:
        what = "an integer" if self.integer else "a number"
        try:
            value: float = int(raw) if self.integer else float(raw)
        except ValueError:
            raise ConfigError(f"{source} must be {what}, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{source} must be a finite number, got {raw!r}")
        low = value <= self.minimum if self.above else value < self.minimum
        if low or value > self.maximum:
            raise ConfigError(f"{source} must be {what} {self._bounds()}, got {raw!r}")
        return value

    def _bounds(self) -> str:
        if self.maximum != math.inf:
            return f"from {self.minimum:g} to {self.maximum:g}"
        return f"above {self.minimum:g}" if self.above else f"of at least {self.minimum:g}"


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a few words (``fold``: in any case)."""

    choices: tuple[str, ...]
    fold: bool = False

    def __call__(self, source: str, raw: str) -> str:
        value = raw.lower() if self.fold else raw
        if value not in self.choices:
            raise ConfigError(f"{source} must be one of {', '.join(self.choices)}, got {raw!r}")
        return value


def _text(source: str, raw: str) -> str:
    return raw


def _path(source: str, raw: str) -> Path:
    return Path(raw)


def _switch(source: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _YES | _NO:
        raise ConfigError(f"{source} must be 1 or 0 (true/false, yes/no, on/off), got {raw!r}")
    return value in _YES


# Broker URLs: one node, or several nodes of a cluster comma-separated (a connection
# tries them in turn, see warren.wire.broker_urls).
URL_SCHEMES = ("amqp", "amqps")


def _pieces(raw: str) -> list[str]:
    # A comma inside a password (not percent-encoded) must not cut the URL in two, or
    # the part after it would be printed unmasked: a piece whose userinfo is still open
    # (no "@" or "/" after "://" yet) takes the next piece when that one has the "@"
    # and is not a URL of its own ("amqp://a,amqp://u:p@b/" is two nodes).
    pieces: list[str] = []
    for piece in raw.split(","):
        starts_a_url = piece.lstrip().startswith(tuple(f"{s}://" for s in URL_SCHEMES))
        if pieces and "@" in piece and not starts_a_url:
            _, sep, rest = pieces[-1].partition("://")
            if sep and "@" not in rest and "/" not in rest:
                pieces[-1] += "," + piece
                continue
        pieces.append(piece)
    return pieces


def split_urls(raw: str) -> list[str]:
    """The entries of a comma-separated URL list, stripped, empty entries dropped."""
    return [entry.strip() for entry in _pieces(raw) if entry.strip()]


def redacted_one(url: str) -> str:
    """``url`` with the password in it (if any) replaced by ``***``."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, sep, userinfo = head.rpartition("://")
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}{colon and ':***'}@{host}"


def _problem(url: str) -> str | None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - a bad port raises here
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in URL_SCHEMES:
        return "not an amqp:// or amqps:// URL"
    if not parts.hostname:
        return "no host"
    return None


def validated_urls(source: str, raw: str) -> list[str]:
    """The URLs of ``raw``, each checked; ``ConfigError`` names the first bad one (redacted)."""
    urls = split_urls(raw)
    if not urls:
        raise ConfigError(
            f"{source} must be an amqp:// or amqps:// URL (or several, comma-separated)"
        )
    for position, url in enumerate(urls, 1):
        problem = _problem(url)
        if problem is not None:
            where = f" (entry {position} of {len(urls)})" if len(urls) > 1 else ""
            raise ConfigError(
                f"{source} must be an amqp:// or amqps:// URL{' list' if where else ''}: "
                f"{redacted_one(url)!r}{where}: {problem}"
            )
    return urls


def redacted_url(url: str) -> str:
    """``url`` (or every URL of a comma-separated list) with its password replaced by ``***``."""
    return ",".join(redacted_one(entry) for entry in _pieces(url))


def _url(source: str, raw: str) -> str:
    validated_urls(source, raw)
    return raw


MIN_TOKEN_LENGTH = 16


def _token(source: str, raw: str) -> str:
    if len(raw) < MIN_TOKEN_LENGTH or raw != raw.strip():
        # The value is a secret: the message says what is wrong, never what it is.
        raise ConfigError(
            f"{source} must be at least {MIN_TOKEN_LENGTH} characters, "
            "without spaces around it (secrets.token_urlsafe() makes a good one)"
        )
    return raw


def _name_part(kind: str) -> Callable[[str, str], str]:
    def check(source: str, raw: str) -> str:
        try:
            return check_part(kind, raw)
        except InvalidError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    return check


_POSITIVE = Number(0, above=True)


def _name_list(kind: str) -> Callable[[str, str], tuple[str, ...]]:
    """Comma-separated names, each a valid name part (``a,b``)."""

    def check(source: str, raw: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not names:
            raise ConfigError(f"{source}: expected one {kind} or more, comma-separated")
        try:
            return tuple(dict.fromkeys(check_part(kind, name) for name in names))
        except InvalidError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    return check


@dataclass(frozen=True, slots=True)
class Variable:
    """One setting: the variable it is read from, the field it fills, how it is checked,
    and the command-line flag that overrides it (if any)."""

    name: str
    field: str
    check: Callable[[str, str], Any]
    flag: str | None = None


VARIABLES: tuple[Variable, ...] = (
    Variable("WARREN_BROKER_URL", "broker_url", _url),
    Variable("WARREN_CONTAINER_BROKER_URL", "container_broker_url", _url),
    Variable("WARREN_FUNCTION_BROKER_URL", "function_broker_url", _url),
    Variable("WARREN_ENVIRONMENT", "environment", _name_part("environment"), "--env"),
    Variable("WARREN_QUEUE_TYPE", "queue_type", Choice(QUEUE_TYPES)),
    Variable("WARREN_RESULT_QUEUE_EXPIRY", "result_queue_expiry", _POSITIVE),
    Variable("WARREN_ENGINE_START_TIMEOUT", "engine_start_timeout", _POSITIVE),
    Variable("WARREN_RESULT_RETENTION", "result_retention", _POSITIVE),
    Variable("WARREN_STOP_GRACE", "stop_grace", _POSITIVE),
    Variable("WARREN_SECRET_KEY", "secret_key", _text),
    Variable("WARREN_SECRET_KEY_FILE", "secret_key_file", _path),
    Variable("WARREN_MAX_MESSAGE_SIZE", "max_message_size", Number(4096, integer=True)),
    Variable("WARREN_MESSAGE_EXPIRY", "message_expiry", _POSITIVE),
    Variable("WARREN_CRASH_LIMIT", "crash_limit", Number(1, integer=True)),
    Variable("WARREN_BROKER_CONSUMER_TIMEOUT", "broker_consumer_timeout", _POSITIVE),
    Variable("WARREN_RECONNECT_TIMEOUT", "reconnect_timeout", _POSITIVE),
    Variable("WARREN_HTTP_HOST", "http_host", _text, "--http-host"),
    Variable(
        "WARREN_HTTP_PORT", "http_port", Number(0, integer=True, maximum=65535), "--http-port"
    ),
    Variable("WARREN_PUBLIC_URL", "public_url", _text, "--public-url"),
    Variable("WARREN_HTTP_DEBUG", "http_debug", _switch),
    Variable("WARREN_METRICS_PUBLIC", "metrics_public", _switch),
    Variable("WARREN_DASHBOARD_TOKEN", "dashboard_token", _token),
    Variable("WARREN_EVENT_LOOP", "event_loop", Choice(EVENT_LOOPS)),
    Variable("WARREN_PIN_CONTAINERS", "pin_containers", _switch),
    Variable("WARREN_LOG_LEVEL", "log_level", Choice(LOG_LEVELS, fold=True), "--log-level"),
    Variable("WARREN_LOG_RATE", "log_rate", Number(1024, integer=True)),
    Variable("WARREN_STATE_DIR", "state_dir", _path, "--state-dir"),
    Variable("WARREN_NODE_NAME", "node_name", _name_part("node name"), "--node-name"),
    Variable(
        "WARREN_ENGINE_ENVIRONMENTS", "engine_environments", _name_list("environment"), "--env"
    ),
    Variable("WARREN_NODE_CPUS", "node_cpus", _POSITIVE),
    Variable("WARREN_NODE_MEMORY", "node_memory", Number(1, integer=True)),
    Variable("WARREN_GPUS", "gpus", _text, "--gpus"),
    Variable("WARREN_REGION", "region", _text, "--region"),
    Variable("WARREN_CLOUD", "cloud", _text, "--cloud"),
)
_FIELDS = {variable.field: variable for variable in VARIABLES}


def _home_dir(environ: Mapping[str, str], variable: str, *fallback: str) -> Path:
    """``$variable/warren``, else ``~/<fallback>/warren`` (the XDG base directory rule)."""
    base = environ.get(variable)
    return (Path(base) if base else Path.home().joinpath(*fallback)) / "warren"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting (see the module's table); build it with :meth:`from_environment`.

    URLs and the secret key are left out of its ``repr``: they may hold passwords.
    """

    broker_url: str = field(default=DEFAULT_BROKER_URL, repr=False)
    container_broker_url: str = field(default="", repr=False)  # "": the broker URL
    function_broker_url: str | None = field(default=None, repr=False)
    environment: str = "main"
    queue_type: str = "classic"
    result_queue_expiry: float = 600.0
    engine_start_timeout: float = 60.0
    result_retention: float = 86400.0
    stop_grace: float = 30.0
    secret_key: str | None = field(default=None, repr=False)
    secret_key_file: Path | None = None
    config_dir: Path = field(default_factory=lambda: Path.home() / ".config" / "warren")
    max_message_size: int = 2 * 1024 * 1024
    message_expiry: float = 86400.0
    crash_limit: int = 3
    broker_consumer_timeout: float = 1800.0
    reconnect_timeout: float = 300.0
    http_host: str = "127.0.0.1"
    http_port: int = 0
    public_url: str | None = None
    http_debug: bool = False
    metrics_public: bool = False
    dashboard_token: str | None = field(default=None, repr=False)
    event_loop: str = "uvloop"
    pin_containers: bool = True
    log_level: str = "info"
    log_rate: int = 1024 * 1024
    state_dir: Path = field(default_factory=lambda: Path.home() / ".local" / "state" / "warren")
    node_name: str | None = None
    # The environments an engine node serves (empty: WARREN_ENVIRONMENT's alone).
    engine_environments: tuple[str, ...] = ()
    node_cpus: float | None = None
    node_memory: int | None = None
    gpus: str = ""
    region: str | None = None
    cloud: str | None = None

    def __post_init__(self) -> None:
        if not self.container_broker_url:
            object.__setattr__(self, "container_broker_url", self.broker_url)

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, flags: Mapping[str, object] | None = None
    ) -> Settings:
        """The settings ``environ`` (default: this process's environment) gives, each one
        checked; ``flags`` (by field name, such as ``http_port``; None: not given) win
        over the environment, and a bad one is reported under its flag's name."""
        environ = os.environ if environ is None else environ
        given = {name: value for name, value in (flags or {}).items() if value is not None}
        unknown = sorted(set(given) - set(_FIELDS))
        if unknown:
            raise InvalidError(f"no setting is named {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for variable in VARIABLES:
            if variable.field in given:
                source = variable.flag or variable.name
                values[variable.field] = variable.check(source, str(given[variable.field]))
            elif raw := environ.get(variable.name):
                values[variable.field] = variable.check(variable.name, raw)
        values.setdefault("state_dir", _home_dir(environ, "XDG_STATE_HOME", ".local", "state"))
        return cls(config_dir=_home_dir(environ, "XDG_CONFIG_HOME", ".config"), **values)

    def for_containers(self) -> Settings:
        """What an engine gives its containers: its own broker credentials, and the token
        of its web pages, left out."""
        return replace(
            self,
            broker_url=self.container_broker_url,
            function_broker_url=None,
            dashboard_token=None,
        )


ENGINE_ONLY = ("WARREN_DASHBOARD_TOKEN",)
"""Variables an engine reads and its containers (the functions' code) have no use for."""


def hide_engine_only_variables(environ: MutableMapping[str, str] | None = None) -> None:
    """Remove :data:`ENGINE_ONLY` variables from ``environ`` (default: this process's
    environment): an engine does so after reading its settings, before it starts the
    process its containers are forked from, so that a function cannot read them."""
    environ = os.environ if environ is None else environ
    for name in ENGINE_ONLY:
        environ.pop(name, None)


_installed: Settings | None = None


def install(config: Settings | None) -> None:
    """Make ``config`` what :func:`settings` returns in this process (None: undo).

    For an entry point whose flags must reach code it does not call directly: the
    command line's ``--env`` reaches ``App.environment`` and ``Client.connect()`` so.
    """
    global _installed
    _installed = config


def settings() -> Settings:
    """This process's settings: those its entry point installed, else the environment's,
    read now (a process may change its environment before it connects). Code on a hot
    path keeps the object it was given instead of calling this."""
    return _installed if _installed is not None else Settings.from_environment()

"""One typed settings object: config/agent.toml (or --config), then LOGAGENT_* environment.

Every error names its key and is raised before anything starts.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from agent.alerts.rules import AlertConfigError, AlertSettings, parse_alerts
from agent.collectors.options import DEFAULT_TAIL
from agent.docker.address import docker_url
from agent.docker.lines import DEFAULT_MAX_LINE_BYTES
from agent.docker.pacing import DEFAULT_CHATTY_REST, DEFAULT_REST
from agent.durations import format_duration, parse_duration
from agent.forward.settings import Destination, ForwardConfigError, parse_forward
from agent.policy import Matchers, PatternError, Policy, check_glob
from agent.redact import redact
from agent.shaping.hints import KEYS as HINT_KEYS
from agent.shaping.hints import HintRule, check_hint
from agent.shaping.rate import Rate, parse_rate
from agent.storage.options import DEFAULT_DB_URL, DEFAULT_QUEUE_BYTES

MAX_LINE_BYTES_LIMIT = 16 * 1024 * 1024  # a line's pieces wait in memory up to this size

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "agent.toml"


class ConfigError(ValueError):
    """A config file or environment value the agent cannot use; the message names the key."""


@dataclass(frozen=True)
class Settings:
    db_url: str = DEFAULT_DB_URL
    # Where `logs`, `stats`, `gaps`, `events` and the viewer read (a standby may serve them);
    # empty: db_url. The agent always writes to db_url's primary.
    read_url: str = ""
    max_queue_bytes: int = DEFAULT_QUEUE_BYTES  # read, not yet committed: then collectors wait
    search_index: bool = False  # SQLite: an FTS5 trigram index for --grep (search_index.py)
    host: str = ""  # empty: this machine's hostname
    docker_url: str = ""  # empty: DOCKER_SOCKET, else DOCKER_HOST, else /var/run/docker.sock
    initial_tail: int | str = DEFAULT_TAIL
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    read_rest_s: float = DEFAULT_REST  # 0: read every line as it comes (see docker/pacing.py)
    chatty_rest_s: float = DEFAULT_CHATTY_REST  # the rest of streams at ~25 lines/s or more
    policy: Policy = field(default_factory=Policy)
    scope_labels: tuple[str, ...] = ()  # Docker-side label filter: other containers are unseen
    log_level: str = "INFO"
    alerts: AlertSettings = field(default_factory=AlertSettings)  # [alerts]: agent/alerts/
    forward: tuple[Destination, ...] = ()  # [[forward]]: agent/forward/
    api_socket: str = "/run/logagent/agent.sock"  # empty: no unix socket
    api_tcp_host: str = "127.0.0.1"
    api_tcp_port: int = 0  # 0: no TCP listener
    api_token: str = ""
    retention_max_age_s: float = 7 * 86400  # 0: no age limit
    # What a container's `logagent.retention` label may ask at most (0, the default: any,
    # for ever). A label is set by whoever runs the container; where they are not the ones
    # who size the disk, this keeps a label from keeping rows past it. Off by default: an
    # upgrade must not cut what labels were set to keep.
    retention_label_max_age_s: float = 0.0
    retention_max_bytes: int = 1024**3  # 0: no size limit (SQLite only)
    retention_interval_s: float = 60.0
    hint_rules: tuple[HintRule, ...] = ()  # [[hints.rules]]: hints for containers by glob
    default_rate: Rate | None = None  # hints.rate: every container's limit unless it says
    web_host: str = "127.0.0.1"  # `logagent web`: beyond loopback, a token or users file
    web_port: int = 8080
    web_token: str = ""
    web_users_file: str = ""


# section -> key -> (type, Settings attribute or policy path)
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "storage": {
        "db_url": str,
        "read_url": str,
        "host": str,
        "max_queue_bytes": int,
        "search_index": bool,
    },
    "docker": {
        "socket": str,
        "initial_tail": (int, str),
        "max_line_bytes": int,
        "read_rest": str,
        "read_rest_chatty": str,
        "scope_labels": list,
    },
    "policy": {
        "collect_all": bool,
        "include_names": list,
        "include_images": list,
        "include_labels": list,
        "exclude_names": list,
        "exclude_images": list,
        "exclude_labels": list,
    },
    "agent": {"log_level": str},
    "api": {"socket": str, "tcp_host": str, "tcp_port": int, "token": str},
    "retention": {"max_age": str, "label_max_age": str, "max_bytes": int, "interval": str},
    "hints": {"rate": str, "rules": list},
    "web": {"host": str, "port": int, "token": str, "users_file": str},
    "alerts": {"rules": list, "destinations": list},
}
_ENV = {
    "LOGAGENT_DB_URL": ("storage", "db_url"),
    "LOGAGENT_READ_URL": ("storage", "read_url"),
    "LOGAGENT_HOST": ("storage", "host"),
    "LOGAGENT_INITIAL_TAIL": ("docker", "initial_tail"),
    "LOGAGENT_MAX_LINE_BYTES": ("docker", "max_line_bytes"),
    "LOGAGENT_READ_REST": ("docker", "read_rest"),
    "LOGAGENT_READ_REST_CHATTY": ("docker", "read_rest_chatty"),
    "LOGAGENT_COLLECT_ALL": ("policy", "collect_all"),
    "LOGAGENT_LOG_LEVEL": ("agent", "log_level"),
    "DOCKER_SOCKET": ("docker", "socket"),
    "LOGAGENT_API_SOCKET": ("api", "socket"),
    "LOGAGENT_API_TOKEN": ("api", "token"),
    "LOGAGENT_WEB_TOKEN": ("web", "token"),
}
_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR"}


def _type_name(t: type | tuple[type, ...]) -> str:
    return " or ".join(x.__name__ for x in t) if isinstance(t, tuple) else t.__name__


def _from_env(section: str, key: str, raw: str) -> Any:
    expected = _SCHEMA[section][key]
    if expected is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{section}.{key}: expected true or false, got {raw!r}")
    if expected is int:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{section}.{key}: expected an integer, got {raw!r}") from None
    if expected == (int, str):
        return int(raw) if raw.strip().isdigit() else raw
    return raw


def _globs(values: list[Any], where: str) -> tuple[str, ...]:
    if not isinstance(values, list):  # a string would be read as globs of one character each
        raise ConfigError(f'{where}: expected a list of globs like ["web-*"], got {values!r}')
    out = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        try:
            check_glob(value)
        except PatternError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        out.append(value)
    return tuple(out)


def _labels(values: list[Any], where: str) -> tuple[str, ...]:
    out = []
    for value in values:
        if not isinstance(value, str) or not value or value.startswith("="):
            raise ConfigError(f"{where}: expected labels as 'key' or 'key=value', got {value!r}")
        out.append(value)
    return tuple(out)


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the file (default config/agent.toml, absent is fine), apply the environment."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = path or DEFAULT_CONFIG
    if path is not None or file.exists():
        try:
            data = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    forward = data.pop("forward", None)  # [[forward]]: a list of tables (agent/forward/)
    for section, values in data.items():
        if section not in _SCHEMA:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(_SCHEMA)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{section}: expected a table")
        for key, value in values.items():
            if key not in _SCHEMA[section]:
                raise ConfigError(f"unknown key {section}.{key}")
            expected = _SCHEMA[section][key]
            if isinstance(value, bool) and expected is not bool:
                raise ConfigError(f"{section}.{key}: expected {_type_name(expected)}, got a bool")
            if not isinstance(value, expected):
                raise ConfigError(
                    f"{section}.{key}: expected {_type_name(expected)}, got {value!r}"
                )
    for var, (section, key) in _ENV.items():
        if var in env and env[var] != "":
            data.setdefault(section, {})[key] = _from_env(section, key, env[var])
    try:
        destinations = parse_forward(forward, env)
    except ForwardConfigError as exc:
        raise ConfigError(str(exc)) from None
    return replace(_build(data, env), forward=destinations)


def _build(data: dict[str, Any], env: Mapping[str, str]) -> Settings:
    storage, dock = data.get("storage", {}), data.get("docker", {})
    pol, agent = data.get("policy", {}), data.get("agent", {})
    defaults = Settings()
    db_url = storage.get("db_url", defaults.db_url)
    _check_db_url(db_url)
    read_url = storage.get("read_url", "")
    if read_url:
        _check_db_url(read_url, key="storage.read_url")
    tail = dock.get("initial_tail", defaults.initial_tail)
    if isinstance(tail, str) and tail != "all":
        raise ConfigError(f"docker.initial_tail: expected a number of lines or 'all', got {tail!r}")
    if isinstance(tail, int) and tail < 0:
        raise ConfigError(f"docker.initial_tail: must be 0 or more, got {tail}")
    max_line = dock.get("max_line_bytes", defaults.max_line_bytes)
    if not 1024 <= max_line <= MAX_LINE_BYTES_LIMIT:
        raise ConfigError(
            f"docker.max_line_bytes: between 1024 and {MAX_LINE_BYTES_LIMIT} (16 MiB), "
            f"got {max_line}"
        )
    queue_bytes = storage.get("max_queue_bytes", defaults.max_queue_bytes)
    if queue_bytes < 2 * max_line:
        raise ConfigError(
            f"storage.max_queue_bytes: at least twice docker.max_line_bytes ({2 * max_line}), "
            f"got {queue_bytes}"
        )
    read_rest = _seconds(dock, "read_rest", defaults.read_rest_s, "docker")
    if read_rest > 0.1:
        raise ConfigError(
            f"docker.read_rest: at most 100ms (it adds to every line's delay), got {read_rest}s"
        )
    # Unset, it is never shorter than read_rest; set, it must not be (nor over 250 ms).
    chatty_rest = _seconds(
        dock, "read_rest_chatty", max(defaults.chatty_rest_s, read_rest), "docker"
    )
    if read_rest and not read_rest <= chatty_rest <= 0.25:
        raise ConfigError(
            "docker.read_rest_chatty: between docker.read_rest "
            f"({read_rest * 1000:g}ms) and 250ms, got {chatty_rest * 1000:g}ms"
        )
    level = str(agent.get("log_level", defaults.log_level)).upper()
    if level not in _LEVELS:
        raise ConfigError(f"agent.log_level: expected one of {sorted(_LEVELS)}, got {level!r}")
    socket = dock.get("socket", "")
    docker_address = socket if "://" in socket or not socket else "unix://" + socket
    _check_docker_address(docker_address or docker_url(env), env)
    policy = Policy(
        collect_all=pol.get("collect_all", True),
        include=Matchers(
            names=_globs(pol.get("include_names", []), "policy.include_names"),
            images=_globs(pol.get("include_images", []), "policy.include_images"),
            labels=_globs(pol.get("include_labels", []), "policy.include_labels"),
        ),
        exclude=Matchers(
            names=_globs(pol.get("exclude_names", []), "policy.exclude_names"),
            images=_globs(pol.get("exclude_images", []), "policy.exclude_images"),
            labels=_globs(pol.get("exclude_labels", []), "policy.exclude_labels"),
        ),
    )
    api, retention = data.get("api", {}), data.get("retention", {})
    web = data.get("web", {})
    tcp_host = api.get("tcp_host", defaults.api_tcp_host)
    tcp_port = api.get("tcp_port", defaults.api_tcp_port)
    token = api.get("token", defaults.api_token)
    if tcp_host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(
            f"api.tcp_host: the control API listens on loopback only, not {tcp_host!r}"
        )
    if not 0 <= tcp_port < 65536:
        raise ConfigError(f"api.tcp_port: expected 0 (off) or a port number, got {tcp_port}")
    if tcp_port and len(token) < 16:
        raise ConfigError("api.token: a TCP listener needs a token of at least 16 characters")
    try:
        alerts = parse_alerts(data.get("alerts"), env)
    except AlertConfigError as exc:
        raise ConfigError(str(exc)) from None
    return Settings(
        alerts=alerts,
        api_socket=api.get("socket", defaults.api_socket),
        api_tcp_host=tcp_host,
        api_tcp_port=tcp_port,
        api_token=token,
        retention_max_age_s=(max_age := _max_age(retention, defaults.retention_max_age_s)),
        retention_label_max_age_s=_label_max_age(retention, max_age),
        retention_max_bytes=_non_negative(retention, "max_bytes", defaults.retention_max_bytes),
        retention_interval_s=_interval(retention, defaults.retention_interval_s),
        db_url=db_url,
        read_url=read_url,
        host=storage.get("host", ""),
        search_index=_search_index(storage, db_url),
        docker_url=docker_address,
        initial_tail=tail,
        max_line_bytes=max_line,
        max_queue_bytes=queue_bytes,
        read_rest_s=read_rest,
        chatty_rest_s=chatty_rest,
        policy=policy,
        web_host=web.get("host", defaults.web_host),
        web_port=_port(web.get("port", defaults.web_port)),
        web_token=web.get("token", defaults.web_token),
        web_users_file=web.get("users_file", defaults.web_users_file),
        hint_rules=_hint_rules(data.get("hints", {}).get("rules", [])),
        default_rate=_default_rate(data.get("hints", {}).get("rate", "")),
        scope_labels=_labels(dock.get("scope_labels", []), "docker.scope_labels"),
        log_level=level,
    )


def _seconds(section: dict[str, Any], key: str, default: float, where: str = "retention") -> float:
    text = section.get(key)
    if text is None:
        return default
    if text in ("0", "off"):
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{where}.{key}: {exc}") from None


def _label_max_age(section: dict[str, Any], max_age: float) -> float:
    """What a retention label may ask (0, unset: any): never less than the host keeps, or
    a container that asks to be kept longer would be kept for less than one that asks
    nothing."""
    cap = _max_age(section, 0.0, "label_max_age")
    if max_age == 0 and cap != 0:
        raise ConfigError(
            "retention.label_max_age: must be 0 when retention.max_age is 0 (for ever): a "
            "labelled container would keep its rows for less than an unlabelled one"
        )
    if 0 < cap < max_age:
        raise ConfigError(
            "retention.label_max_age: shorter than retention.max_age "
            f"({format_duration(max_age)}): a label asking for longer would get less than a "
            "container that asks nothing"
        )
    return cap


def _max_age(section: dict[str, Any], default: float, key: str = "max_age") -> float:
    max_age = _seconds(section, key, default)
    if 0 < max_age < 1:  # a cut-off in whole seconds: 0.5s would keep everything
        raise ConfigError(f"retention.{key}: at least 1s (0 keeps forever), got {max_age}s")
    return max_age


def _interval(section: dict[str, Any], default: float) -> float:
    interval = _seconds(section, "interval", default)
    if interval < 1:  # "0" made the retention loop spin (a core at 92 %)
        raise ConfigError(f"retention.interval: at least 1s, got {section.get('interval')!r}")
    return interval


def _check_docker_address(url: str, env: Mapping[str, str]) -> None:
    if not url.startswith(("unix://", "tcp://", "http://")):
        raise ConfigError(
            f"docker.socket: {url!r} is not a Docker address: use a socket path, unix:// or tcp://"
        )
    if url.startswith(("tcp://", "http://")) and (
        env.get("DOCKER_TLS_VERIFY") or env.get("DOCKER_CERT_PATH")
    ):
        raise ConfigError(
            f"docker.socket: {url} with DOCKER_TLS_VERIFY/DOCKER_CERT_PATH set: logagent "
            "speaks plain HTTP to tcp:// and will not send the daemon's traffic unencrypted; "
            "use the unix socket, or a TLS-terminating proxy on loopback"
        )


def _port(port: int) -> int:
    if not 0 < port < 65536:
        raise ConfigError(f"web.port: expected a port number, got {port}")
    return port


def _default_rate(text: str) -> Rate | None:
    if not text or text == "off":
        return None
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise ConfigError(f"hints.rate: {exc}") from None


_RULE_MATCH = ("names", "images", "labels")


def _flat(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`multiline.start = "…"` in TOML is a table in a table: back to its dotted key."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _hint_rules(rules: list[Any]) -> tuple[HintRule, ...]:
    out = []
    for n, rule in enumerate(rules):
        where = f"hints.rules[{n}]"
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: expected a table ([[hints.rules]]), got {rule!r}")
        flat = _flat(rule)
        match = Matchers(
            names=_globs(flat.pop("names", []), f"{where}.names"),
            images=_globs(flat.pop("images", []), f"{where}.images"),
            labels=_globs(flat.pop("labels", []), f"{where}.labels"),
        )
        if match.empty:
            raise ConfigError(f"{where}: needs names, images or labels to match containers by")
        values: dict[str, str] = {}
        for key, value in flat.items():
            if key not in HINT_KEYS:
                raise ConfigError(
                    f"{where}.{key}: unknown key (known: {', '.join(_RULE_MATCH + HINT_KEYS)})"
                )
            text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            if not isinstance(text, str):
                raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
            try:
                check_hint(key, text)
            except ValueError as exc:
                raise ConfigError(f"{where}.{key}: {exc}") from None
            values[key] = text
        out.append(HintRule(match, values, where))
    return tuple(out)


def _search_index(storage: dict[str, Any], db_url: str) -> bool:
    on = bool(storage.get("search_index", False))
    if on and not db_url.startswith("sqlite"):
        raise ConfigError(
            "storage.search_index: for SQLite only (PostgreSQL searches through its trigram "
            "index, made with the store)"
        )
    return on


def _non_negative(section: dict[str, Any], key: str, default: int) -> int:
    value = int(section.get(key, default))
    if value < 0:
        raise ConfigError(f"retention.{key}: must be 0 (off) or more, got {value}")
    return value


_DB_URL = re.compile(r"^(sqlite|postgres|asyncpg|psycopg)://.+")


def _check_db_url(url: str, key: str = "storage.db_url") -> None:
    from tortoise.backends.base.config_generator import expand_db_url

    if not _DB_URL.match(url):
        raise ConfigError(
            f"{key}: {redact(url)!r} is not a database URL tortoise can use "
            "(e.g. sqlite:///var/lib/logagent/logs.db)"
        )
    from agent.storage.pg_url import split_hosts

    try:
        expand_db_url(split_hosts(url)[0])
    except Exception as exc:
        raise ConfigError(
            f"{key}: {redact(url)!r} is not usable: {redact(str(exc), url)}"
        ) from None

"""Where alerts go, as the config gives them, checked once at start-up.

A destination is a URL, from the config or, as a secret, from the environment or a file: it
is never logged, shown or sent anywhere but to itself. An `http://` or `https://` URL is a
webhook: it is posted the alert as JSON (or the destination's `template` filled in with it),
with its `Idempotency-Key` and the destination's `headers`. Any other scheme is one of
Apprise's (`slack://`, `discord://`, `ntfy://`, `mailto://`, … 100+ services): it is sent the
alert as text through Apprise, which knows each service's API better than we would.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from agent.secret_files import SecretFileError, header_value_problem, read_secret

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KEYS = ("name", "url", "url_env", "url_file", "headers", "headers_env", "headers_file", "template")
WEBHOOK, APPRISE = "webhook", "apprise"
# What a template may name: the alert's fields (agent/alerts/engine.py, Alert.payload).
FIELDS = (
    "id", "rule", "host", "container_id", "container_name", "time_ns", "time", "line", "count",
    "more", "kind", "ref",
)  # fmt: skip
_PLACE = re.compile(r"\{([a-z_]+)\}")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}")
_RESERVED = {"content-type", "content-length", "host", "idempotency-key", "transfer-encoding"}


class AlertConfigError(ValueError):
    """A rule or destination that cannot be used: the message names it and the key (never a
    secret)."""


@dataclass(frozen=True)
class Destination:
    name: str
    url: str = field(repr=False)  # a secret: never in a repr, a log line or an answer
    kind: str = WEBHOOK  # or APPRISE
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # may hold a token
    template: Any = None  # a webhook's body: JSON with {field} places; None: the alert


def parse_destination(table: dict[str, Any], where: str, env: Mapping[str, str]) -> Destination:
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise AlertConfigError(f"{where}.name: 1-64 of A-Z, a-z, 0-9, '.', '_', '-', got {name!r}")
    where = f"alerts.destinations[{name}]"
    for key in table:
        if key not in KEYS:
            raise AlertConfigError(f"{where}.{key}: unknown key (known: {', '.join(KEYS)})")
    given = [k for k in ("url", "url_env", "url_file") if k in table]
    if len(given) != 1:
        raise AlertConfigError(f"{where}: give exactly one of url, url_env, url_file")
    key = given[0]
    url = _secret(table, key, where, env)
    kind = _kind(url, f"{where}.{key}")
    headers = headers_of(table, where, env)
    template = table.get("template")
    if kind == APPRISE and (headers or template is not None):
        raise AlertConfigError(f"{where}: headers and template are for http(s) webhooks")
    if template is not None:
        check_template(template, f"{where}.template")
    return Destination(name, url, kind, headers, template)


def _secret(table: dict[str, Any], key: str, where: str, env: Mapping[str, str]) -> str:
    value = table[key]
    if not isinstance(value, str) or not value:
        raise AlertConfigError(f"{where}.{key}: expected a string")
    if key.endswith("_env"):
        if value not in env:
            raise AlertConfigError(f"{where}.{key}: the environment has no {value}")
        return env[value].strip()
    if key.endswith("_file"):
        try:
            return read_secret(value)[0]
        except SecretFileError as exc:
            raise AlertConfigError(f"{where}.{key}: {exc}") from None
    return value.strip()


def _kind(url: str, where: str) -> str:
    """webhook or apprise; the URL is a secret: a message says what is wrong, never what it is."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        try:
            urlsplit(url).port  # noqa: B018 (it raises for a port out of range)
        except ValueError:
            raise AlertConfigError(f"{where}: not a usable http:// or https:// URL") from None
        if not re.fullmatch(r"https?://[^\s/?#]+[^\s]*", url):
            raise AlertConfigError(f"{where}: not a usable http:// or https:// URL")
        return WEBHOOK
    if not re.fullmatch(r"[a-z][a-z0-9+.-]{1,31}", scheme) or not apprise_knows(url):
        raise AlertConfigError(
            f"{where}: not an http:// or https:// URL, nor one Apprise knows (slack://, "
            "discord://, ntfy://, mailto://, …; its scheme or its parts are wrong)"
        )
    return APPRISE


def apprise_knows(url: str) -> bool:
    """Whether Apprise takes the URL (it checks the scheme and the service's parts)."""
    import apprise  # only where a destination is one of its: 20 MB that most hosts skip

    quiet_apprise()
    return bool(apprise.Apprise().add(url))


def quiet_apprise() -> None:
    """Apprise's log quotes URLs (a token in its path): it never reaches ours."""
    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)


def headers_of(
    table: dict[str, Any], where: str, env: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """`headers` (plain), `headers_env` and `headers_file` (secrets: the name of a variable,
    a file that holds the value) of a destination's table."""
    out: dict[str, str] = {}
    for key in ("headers", "headers_env", "headers_file"):
        given = table.get(key, {})
        if not isinstance(given, dict):
            raise AlertConfigError(f"{where}.{key}: a table of header = value")
        for header, value in given.items():
            if not _HEADER.fullmatch(header) or header.lower() in _RESERVED:
                raise AlertConfigError(f"{where}.{key}: {header[:64]!r} is not a header to set")
            if not isinstance(value, str):
                raise AlertConfigError(f"{where}.{key}.{header}: expected a string")
            if key == "headers_env":  # its value is a secret: from the environment
                if value not in env:
                    said = f"{where}.{key}.{header}: the environment has no {value}"
                    raise AlertConfigError(said)
                value = env[value]
            elif key == "headers_file":  # or from a file (a mounted secret)
                try:
                    value = read_secret(value)[0]
                except SecretFileError as exc:
                    raise AlertConfigError(f"{where}.{key}.{header}: {value}: {exc}") from None
            if (problem := header_value_problem(value)) is not None:
                raise AlertConfigError(f"{where}.{key}.{header}: {problem}")
            out[header] = value
    return tuple(out.items())


def check_template(template: Any, where: str) -> None:
    """A template is JSON (tables, lists, strings, numbers); its strings may name the
    alert's fields in braces; anything else: AlertConfigError."""
    if isinstance(template, dict):
        for k, v in template.items():
            check_template(v, f"{where}.{k}")
    elif isinstance(template, list):
        for n, v in enumerate(template):
            check_template(v, f"{where}[{n}]")
    elif isinstance(template, str):
        for name in _PLACE.findall(template):
            if name not in FIELDS:
                raise AlertConfigError(f"{where}: no field {{{name}}} (known: {', '.join(FIELDS)})")
    elif not isinstance(template, int | float | bool):
        raise AlertConfigError(f"{where}: a JSON value (tables, lists, strings, numbers)")


def fill(template: Any, alert: Mapping[str, Any]) -> Any:
    """The template with each {field} replaced by the alert's value as text. It is filled
    in the structure, not in JSON text: a line that holds quotes stays one string."""
    if isinstance(template, dict):
        return {k: fill(v, alert) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, alert) for v in template]
    if isinstance(template, str):
        return _PLACE.sub(lambda m: str(alert.get(m.group(1), "")), template)
    return template

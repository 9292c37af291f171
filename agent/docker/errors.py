"""The agent's Docker errors (agent/docker/translate.py makes them of aiodocker's and aiohttp's).

Light, so that every command can name them without loading a Docker client. The class says
what may happen next: `DockerUnavailable` is transient (reconnect and carry on), every other
`DockerError` is the daemon's answer about one container (not retried).
"""

from __future__ import annotations


class DockerError(Exception):
    """The daemon answered with an error, or could not be asked."""


class DockerUnavailable(DockerError):
    """Cannot connect to the daemon, or the connection was lost: worth reconnecting."""


class ContainerNotFound(DockerError):
    """No such container (404): it never existed or was removed."""


class LogsUnavailable(DockerError):
    """The container's log driver cannot be read through the API (501)."""


class BadReference(DockerError):
    """Not a container name or id: it would reach other parts of the Engine API."""

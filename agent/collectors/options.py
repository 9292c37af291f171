"""How a stream is read, as the config gives it: light, so that reading the config (every
command does) loads no Docker client."""

from __future__ import annotations

from dataclasses import dataclass

from agent.docker.lines import DEFAULT_MAX_LINE_BYTES
from agent.docker.pacing import DEFAULT_CHATTY_REST, DEFAULT_REST

DEFAULT_TAIL: int | str = 100


@dataclass(frozen=True)
class StreamOptions:
    """How a stream is read: where a container never read before starts, the line cap, and
    the rests of quiet and chatty streams (docker/pacing.py)."""

    tail: int | str = DEFAULT_TAIL
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    read_rest: float = DEFAULT_REST
    chatty_rest: float = DEFAULT_CHATTY_REST

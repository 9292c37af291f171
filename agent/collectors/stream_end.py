"""What a collector hands back when its stream ends: the position, why, and its figures.

The state moves (Vector's docker_logs hands a container's state into its stream task and
gets it back when the stream ends): the collector owns the position while it reads, and only
the manager writes it into the container's record, from this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from agent.cursor import Cursor


class Run(Protocol):
    """The collector whose stream ended, as its StreamEnd names it (told by identity)."""

    container_id: str
    container_name: str


@dataclass
class StreamFigures:
    """Reads and pacing (docker/pacing.py) and the re-send guard (cursor.py), summed."""

    reads: int = 0
    rests: int = 0
    chatty_rests: int = 0
    busy_spells: int = 0
    resent: int = 0
    stepped_back: int = 0

    def add(self, other: StreamFigures) -> None:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class StreamEnd:
    collector: Run  # which run ended (its record may hold a newer one)
    position: Cursor  # where the container's next stream resumes
    state: str  # ended, failed, stopped
    opened: bool  # the stream was opened: a failure after it is the collector's
    exception: BaseException | None = None
    error: str | None = None
    figures: StreamFigures = field(default_factory=StreamFigures)

"""Why lines are lost for good: every reason a gap is recorded with, in one place (pure).

A gap is never silence: where the agent knows lines are gone, it stores a row saying which
container, which span (when known) and why (`logagent gaps`, agent/storage/gaps.py). Where
gaps are found: the cursor's skipper (rotation past the position, agent/cursor.py), the
reconciler (a container gone before its stream opened, a log driver the API cannot read).
"""

from __future__ import annotations

from agent.timestamps import format_timestamp

REMOVED_BEFORE_READ = "container removed before its logs could be read"
REMOVED_WHILE_AWAY = (
    "container removed while the agent was away (it was running when last read): what it "
    "wrote after the last stored line, if anything, is lost (count unknown)"
)
# Gaps whose count is unknown: Docker no longer says how many lines there were.
STOPPED_THEN_REMOVED = (
    "collection stopped by hand, then the container was removed: what it wrote after the "
    "stop, if anything, is lost (count unknown)"
)


def cut_by_removal(last_ns: int) -> str:
    after = format_timestamp(last_ns) if last_ns else "its start"
    return (
        f"stream cut by the container's removal after {after}: lines Docker had not sent "
        "yet are lost (count unknown)"
    )


def rotated(stream: str) -> str:
    return f"{stream} lines no longer in Docker's log (rotated past the cursor)"


def daemon_failed_then_removed(notice: str) -> str:
    return (
        f"Docker could not send the log ({notice[:200]}) and removed the container (--rm): "
        "what it had not sent is lost (count unknown)"
    )


def unreadable(error: BaseException) -> str:
    return f"logs cannot be read through the API: {error}"

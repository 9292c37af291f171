"""docker/life_events.py: which events are a container's life, and their bounded facts."""

from __future__ import annotations

from agent.docker.life_events import LifeEvent, life_event

CID = "a" * 64


def test_die_keeps_its_exit_code_and_name() -> None:
    got = life_event("die", CID, {"exitCode": "3", "name": "web"}, 10)
    assert got == LifeEvent(CID, "web", 10, "die", exit_code=3)


def test_health_status_is_split_from_dockers_spelling() -> None:
    got = life_event("health_status: unhealthy", CID, {"name": "db"}, 11)
    assert got is not None and (got.action, got.detail) == ("health_status", "unhealthy")


def test_kill_keeps_the_signal_and_oom_start_restart_are_kept() -> None:
    kill = life_event("kill", CID, {"signal": "15"}, 12)
    assert kill is not None and kill.detail == "15" and kill.container_name == CID[:12]
    for action in ("oom", "start", "restart"):
        assert life_event(action, CID, {}, 1) is not None


def test_other_events_and_events_without_time_are_not_kept() -> None:
    for action in ("create", "attach", "exec_start: sh", "destroy", "rename", "pause"):
        assert life_event(action, CID, {}, 1) is None
    assert life_event("die", CID, {"exitCode": "1"}, None) is None
    assert life_event("die", "", {"exitCode": "1"}, 1) is None


def test_what_a_label_or_attribute_could_say_is_bounded() -> None:
    """Attributes are strings anyone who runs a container can shape: nothing odd is kept."""
    die = life_event("die", CID, {"exitCode": "1; DROP", "name": "x" * 1000}, 1)
    assert die is not None and die.exit_code is None and len(die.container_name) == 255
    kill = life_event("kill", CID, {"signal": "\x1b[2J" * 5}, 1)
    assert kill is not None and kill.detail is None
    health = life_event("health_status: <script>", CID, {}, 1)
    assert health is not None and health.detail is None

"""Settings: file, then environment; every error names its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import DEFAULT_CONFIG, ConfigError, load_settings
from tests.conftest import in_fresh_python


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_shipped_config_loads_with_defaults() -> None:
    s = load_settings(DEFAULT_CONFIG, environ={})
    assert s.db_url == "sqlite://data/logagent.db"
    assert s.policy.collect_all is True
    assert s.initial_tail == 100
    assert s.read_rest_s == 0.03
    assert s.chatty_rest_s == 0.15


@pytest.mark.parametrize(("text", "seconds"), [("40ms", 0.04), ("0", 0.0), ("off", 0.0)])
def test_read_rest_takes_milliseconds_or_off(text: str, seconds: float) -> None:
    s = load_settings(DEFAULT_CONFIG, environ={"LOGAGENT_READ_REST": text})
    assert s.read_rest_s == pytest.approx(seconds)


def test_chatty_rest_is_never_shorter_than_read_rest_unless_asked(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[docker]\nread_rest = "90ms"\n'), environ={})
    assert (s.read_rest_s, s.chatty_rest_s) == (pytest.approx(0.09), pytest.approx(0.15))
    s = load_settings(DEFAULT_CONFIG, environ={"LOGAGENT_READ_REST_CHATTY": "50ms"})
    assert s.chatty_rest_s == pytest.approx(0.05)
    s = load_settings(DEFAULT_CONFIG, environ={"LOGAGENT_READ_REST": "off"})
    assert s.read_rest_s == 0.0  # pacing off: the chatty rest is never used


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[storage]\ndb_url = "sqlite://a.db"\n')
    s = load_settings(
        path,
        environ={
            "LOGAGENT_DB_URL": "sqlite:///tmp/b.db",
            "DOCKER_SOCKET": "/run/d.sock",
            "LOGAGENT_COLLECT_ALL": "false",
        },
    )
    assert s.db_url == "sqlite:///tmp/b.db"
    assert s.docker_url == "unix:///run/d.sock"
    assert s.policy.collect_all is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[policy]\ncolect_all = true\n", "unknown key policy.colect_all"),
        ("[nope]\nx = 1\n", "unknown section [nope]"),
        ('[policy]\ncollect_all = "yes"\n', "policy.collect_all: expected bool"),
        ('[policy]\nexclude_names = ["web-["]\n', "policy.exclude_names: unclosed '['"),
        ('[storage]\ndb_url = "mysqlx://nowhere"\n', "storage.db_url"),
        ("[docker]\ninitial_tail = -1\n", "docker.initial_tail"),
        ('[docker]\ninitial_tail = "some"\n', "docker.initial_tail"),
        ("[docker]\nmax_line_bytes = true\n", "docker.max_line_bytes"),
        ('[docker]\nread_rest = "40"\n', "docker.read_rest: '40' is not a duration"),
        ('[docker]\nread_rest = "1s"\n', "docker.read_rest: at most 100ms"),
        (
            '[docker]\nread_rest = "40ms"\nread_rest_chatty = "20ms"\n',
            "docker.read_rest_chatty: between docker.read_rest .40ms. and 250ms, got 20ms",
        ),
        ('[docker]\nread_rest_chatty = "300ms"\n', "docker.read_rest_chatty: between"),
        ('[docker]\nread_rest_chatty = "soon"\n', "docker.read_rest_chatty: 'soon' is not"),
        ('[agent]\nlog_level = "LOUD"\n', "agent.log_level"),
        ("not toml at all [", "not valid TOML"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_settings(write(tmp_path, text), environ={})


def test_bad_environment_value_names_its_key() -> None:
    with pytest.raises(ConfigError, match=r"policy\.collect_all"):
        load_settings(DEFAULT_CONFIG, environ={"LOGAGENT_COLLECT_ALL": "maybe"})


def test_cli_bad_config_is_one_line_exit_2_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "[policy]\ncollect_all = 3\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "logagent: config error: policy.collect_all: expected bool, got 3"
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[retention]\ninterval = "0"\n', "retention.interval"),
        ('[retention]\ninterval = "500ms"\n', "retention.interval"),
        ('[retention]\nmax_age = "300000d"\n', "retention.max_age"),
        ('[retention]\nmax_age = "0.5s"\n', "retention.max_age"),
        ('[retention]\nlabel_max_age = "0.5s"\n', "retention.label_max_age"),
        ('[retention]\nlabel_max_age = "soon"\n', "retention.label_max_age"),
        ('[retention]\nmax_age = "30d"\nlabel_max_age = "7d"\n', "retention.label_max_age"),
        ('[retention]\nmax_age = "0"\nlabel_max_age = "30d"\n', "retention.label_max_age"),
        ('[docker]\nread_rest = "' + "9" * 400 + 'd"\n', "docker.read_rest"),
        ("[docker]\nmax_line_bytes = 33554432\n", "docker.max_line_bytes"),
        ("[storage]\nmax_queue_bytes = 1048576\n", "storage.max_queue_bytes"),
        ('[docker]\nsocket = "ftp://somewhere"\n', "docker.socket"),
    ],
)
def test_values_that_would_hurt_are_config_errors(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(write(tmp_path, text), environ={})


def test_what_a_retention_label_may_ask_is_unbounded_unless_said(tmp_path: Path) -> None:
    """Off by default: an upgrade must not cut what labels were set to keep."""
    assert load_settings(DEFAULT_CONFIG, environ={}).retention_label_max_age_s == 0
    said = load_settings(write(tmp_path, '[retention]\nmax_age = "2d"\n'), environ={})
    assert said.retention_label_max_age_s == 0
    text = '[retention]\nmax_age = "2d"\nlabel_max_age = "30d"\n'
    assert load_settings(write(tmp_path, text), environ={}).retention_label_max_age_s == 30 * 86400
    text = '[retention]\nmax_age = "2d"\nlabel_max_age = "2d"\n'
    assert load_settings(write(tmp_path, text), environ={}).retention_label_max_age_s == 2 * 86400
    text = '[retention]\nmax_age = "0"\nlabel_max_age = "0"\n'
    assert load_settings(write(tmp_path, text), environ={}).retention_label_max_age_s == 0


def test_tcp_with_tls_variables_is_refused_not_sent_in_clear() -> None:
    env = {"DOCKER_HOST": "tcp://10.9.8.7:2376", "DOCKER_TLS_VERIFY": "1"}
    with pytest.raises(ConfigError, match="plain HTTP"):
        load_settings(DEFAULT_CONFIG, environ=env)
    assert load_settings(DEFAULT_CONFIG, environ={"DOCKER_HOST": "tcp://h:2375"}).docker_url == ""


def test_hint_rules_and_default_rate_are_read(tmp_path: Path) -> None:
    from agent.shaping.hints import hints_for
    from agent.shaping.rate import Rate

    text = (
        '[hints]\nrate = "1000/s"\n'
        '[[hints.rules]]\nimages = ["legacy/*"]\nmultiline = "java"\n'
        '[[hints.rules]]\nnames = ["batch-*"]\nmultiline.start = "^\\\\d{4}-"\n'
        'multiline.max_lines = 50\nretention = "3d"\n'
    )
    s = load_settings(write(tmp_path, text), environ={})
    assert s.default_rate == Rate(1000, 1)
    legacy = hints_for(
        {}, name="x", image="legacy/app", rules=s.hint_rules, default_rate=Rate(1, 1)
    )
    assert legacy.multiline == "java"
    batch = hints_for({}, name="batch-1", image="y", rules=s.hint_rules)
    assert (batch.multiline_start, batch.max_lines, batch.retention_s) == (r"^\d{4}-", 50, 259200)
    assert "multiline.start=^\\d{4}- (hints.rules[1])" in batch.given


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[hints]\nrate = "lots"\n', "hints.rate: 'lots' is not a rate"),
        ('[[hints.rules]]\nmultiline = "java"\n', "hints.rules[0]: needs names, images or labels"),
        ('[[hints.rules]]\nnames = ["a"]\nmultiline = "cobol"\n', "hints.rules[0].multiline:"),
        ('[[hints.rules]]\nnames = ["a"]\ncolour = "x"\n', "hints.rules[0].colour: unknown key"),
        ('[[hints.rules]]\nnames = ["a"]\ninclude_lines = "(a"\n', "include_lines: pattern"),
        # a string was read as globs of one character each ("*" among them: every container)
        ('[[hints.rules]]\nnames = "batch-*"\nrate = "1/s"\n', "hints.rules[0].names: expected a"),
        ('[[hints.rules]]\nimages = 5\nrate = "1/s"\n', "hints.rules[0].images: expected a"),
    ],
)
def test_bad_hint_rules_name_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(write(tmp_path, text), environ={})


def test_reading_the_config_loads_no_docker_client() -> None:
    """Every command reads the config first: `logagent logs` must not pay for aiodocker
    (about 0.3 s of imports) to read a default. In a fresh interpreter."""
    script = (
        "import sys, agent.cli\n"
        "from agent.config import load_settings\n"
        "load_settings(None)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] == 'aiodocker']\n"
        "assert not heavy, heavy\n"
    )
    in_fresh_python(script)


def test_the_config_s_defaults_load_neither_the_docker_client_nor_the_orm() -> None:
    """Its defaults live in light modules (collectors/options.py, storage/options.py); only
    checking a db_url asks tortoise's own parser."""
    script = (
        "import sys\n"
        "import agent.config\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('aiodocker', 'tortoise')]\n"
        "assert not heavy, heavy\n"
    )
    in_fresh_python(script)


def test_the_readme_s_configuration_example_is_a_config_the_agent_takes(tmp_path: Path) -> None:
    """The newcomer's page shows a config by example: it must load as shown."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    settings = load_settings(write(tmp_path, example), environ={})
    assert settings.db_url == "sqlite:///var/lib/logagent/logs.db"
    assert not settings.policy.collect_all

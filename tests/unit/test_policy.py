"""Who is collected: labels, then exclude, then include, then the mode."""

from __future__ import annotations

import pytest

from agent.policy import Matchers, PatternError, Policy, check_glob, decide


def d(
    policy: Policy, *, name: str = "web-1", image: str = "nginx:1", **labels: str
) -> tuple[bool, str]:
    result = decide(policy, container_id="a" * 64, name=name, image=image, labels=labels)
    return result.collect, result.reason


def test_collect_all_takes_unlabelled_containers() -> None:
    assert d(Policy()) == (True, "included: collect_all")


def test_label_false_excludes_and_says_so() -> None:
    assert d(Policy(), **{"logagent.enable": "false"}) == (
        False,
        "excluded by label logagent.enable=false",
    )


def test_opt_in_mode_takes_only_labelled_containers() -> None:
    policy = Policy(collect_all=False)
    assert d(policy)[0] is False
    assert d(policy, **{"logagent.enable": "true"})[0] is True


def test_exclude_wins_over_include() -> None:
    policy = Policy(include=Matchers(names=("web-*",)), exclude=Matchers(images=("nginx:*",)))
    assert d(policy) == (False, "excluded by config exclude image nginx:*")


def test_label_wins_over_exclude_list() -> None:
    policy = Policy(exclude=Matchers(names=("web-*",)))
    assert d(policy, **{"logagent.enable": "true"})[0] is True


def test_include_lists_restrict_collect_all() -> None:
    policy = Policy(include=Matchers(labels=("team=pay*",)))
    assert d(policy, team="payments") == (True, "included by config include label team=pay*")
    assert d(policy, team="search")[0] is False
    assert d(Policy(include=Matchers(labels=("team",))), team="x")[0] is True


def test_own_container_is_never_collected_even_when_labelled() -> None:
    result = decide(
        Policy(),
        container_id="abc123" + "0" * 58,
        name="logagent",
        image="logagent",
        labels={"logagent.enable": "true"},
        self_ids=["abc123"],
    )
    assert (result.collect, result.reason) == (False, "excluded: this is the agent's own container")


@pytest.mark.parametrize("pattern", ["", "web-[", "a[b"])
def test_bad_globs_are_refused(pattern: str) -> None:
    with pytest.raises(PatternError):
        check_glob(pattern)


def test_the_scope_is_one_filter_for_docker_and_one_check_for_a_hand_start() -> None:
    from agent.policy import Scope

    scope = Scope(("team", "env=prod"))
    assert scope.filters() == {"label": ["team", "env=prod"]}
    assert Scope().filters() == {}
    assert scope.missing({"team": "a", "env": "prod"}) is None
    assert scope.missing({"team": "a", "env": "dev"}) == "env=prod"
    assert scope.missing({"env": "prod"}) == "team"
    assert Scope().missing({}) is None

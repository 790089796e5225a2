"""The multi-turn scenario: in the plan and selectable alone, its bars computed from the
arms' figures, and run end to end on tiny sizes (real simulators, adapters and edges) with
behaviour that does not depend on speed or load: every turn answered, the hit rates from
the simulators' own counters, and each conversation kept on one replica by the prefix
policy, through one edge and through two. No speed or ratio is asserted."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from switchyard.bench.multiturn import (
    Arm,
    MultiTurnResult,
    Setup,
    conversations,
    measure_multiturn,
    multiturn_checks,
)
from switchyard.bench.report import document, markdown
from switchyard.bench.runner import Run as BenchRun
from switchyard.bench.scenarios import MULTITURN_TURNS, default_plan, multi_turn, select
from switchyard.devstack.components import EngineOptions

INFO = {"cpu": "test", "logical_cores": 2, "memory_gib": 1, "python": "3", "commit": None}


def test_it_is_in_the_plan_and_selectable_alone() -> None:
    plan = default_plan()
    (scenario,) = select(plan, ["multiturn"])
    assert scenario.group == "multiturn"
    assert scenario not in select(plan, ["unary", "noisy"])
    # The size: at least 64 conversations x 8 turns, streamed.
    assert conversations(scenario, Setup()) >= 64
    assert MULTITURN_TURNS >= 8
    assert scenario.workload.stream
    # Scaled (`--scale`), it runs fewer whole conversations.
    small = scenario.scaled(0.1)
    assert 1 <= conversations(small, Setup()) < conversations(scenario, Setup())


def _arm(policy: str, edges: int, hits: int, p50: float, requests: tuple[int, ...]) -> Arm:
    return Arm(policy, edges, 8, 64, 0, (), 1.0, p50, 2 * p50, 1000.0, 1000, hits, requests, 8, 8)


def test_the_checks_compare_the_arms() -> None:
    result = MultiTurnResult(
        multi_turn(),
        Setup(),
        (
            _arm("load", 1, 200, 0.3, (16, 16, 16, 16)),
            _arm("prefix", 1, 700, 0.1, (20, 16, 16, 12)),  # 1.25x the mean
            _arm("prefix", 2, 650, 0.1, (22, 16, 14, 12)),  # 1.375x
        ),
    )
    checks = {c["target"].split(":")[0]: c for c in multiturn_checks(result)}
    hit, ttft, one, two, edges = checks.values()
    assert (hit["ratio"], hit["holds"]) == (pytest.approx(3.5), True)
    assert (ttft["ratio"], ttft["holds"]) == (pytest.approx(3.0), True)
    assert (one["ratio"], one["holds"]) == (pytest.approx(1.25), True)
    assert (two["ratio"], two["holds"]) == (pytest.approx(1.375), False)
    assert (edges["ratio"], edges["holds"]) == (
        pytest.approx(50 / 700, abs=1e-4),
        False,
    )  # 7% apart


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_scenario_runs_and_keeps_conversations_on_one_replica(tmp_path: Path) -> None:
    # Two replicas, caches that hold every conversation (so the prefix arms hit whatever
    # the timing), and a load factor that never spills a key (bounded loads would move a
    # turn when one replica has most of the requests in flight). The prefix arms only: each
    # arm starts its own processes (~15 s here), and the load arm differs by one setting.
    setup = Setup(
        replicas=2,
        turns=3,
        system_words=40,
        user_words=20,
        cache_blocks=512,
        sim=EngineOptions(max_model_len=4096, max_running=64, ttft_s=0.0, itl_s=0.0),
        load_factor=10.0,
        arms=(("prefix", 1), ("prefix", 2)),
    )
    scenario = multi_turn(conversations=6, at_once=6, cap_s=120, turns=3)
    said: list[str] = []
    result = await measure_multiturn(scenario, tmp_path, said.append, setup)

    assert [(a.policy, a.edges) for a in result.arms] == [("prefix", 1), ("prefix", 2)]
    for arm in result.arms:
        assert (arm.turns_ok, arm.turns_failed, arm.errors) == (18, 0, ()), arm
        # From the simulators' counters: every turn's prompt was looked up, on some replica.
        assert sum(arm.replica_requests) == 18
        assert 0 <= arm.hits < arm.queries
        assert not math.isnan(arm.ttft_p50_s)
        assert arm.last_prompt_tokens > 0
        assert arm.logged == 6  # every conversation's turns are in the edges' request logs
    prefix, two_edges = result.arms
    # Every turn of a conversation on one replica, so from turn 2 on its history is cached.
    for arm in (prefix, two_edges):
        assert arm.sticky == 6, arm
        assert arm.hits > 0
    assert any("prefix, 2 edges" in line for line in said)

    text = markdown(BenchRun(multiturn=[result]), INFO, "test")
    assert "## Multi-turn conversations" in text
    assert "| prefix, 2 edges | 18 | 0 |" in text
    doc = document(BenchRun(multiturn=[result]), INFO, "test")
    (multiturn,) = doc["multiturn"]
    assert [a["edges"] for a in multiturn["arms"]] == [1, 2]
    assert multiturn["arms"][0]["hit_rate"] == prefix.hit_rate
    # Without the load arm, no ratio to it: the load and two-edge checks only.
    assert [c["target"].split(":")[0] for c in multiturn["checks"]] == [
        "prefix, 1 edge",
        "prefix, 2 edges",
        "two edges' hit rate within 5% of one edge's",
    ]

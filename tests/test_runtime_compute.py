"""The worker's compute and sender threads, without sockets: what each job comes to, and that a
job of a run that is over does nothing."""

from __future__ import annotations

import select
import time

import pytest
import torch
from runtime_support import two_segments, whole_model_on

from halp.model.zoo import ModelSpec
from halp.runtime.compute import (
    BlockReady,
    BuildModel,
    Computed,
    ComputeThreads,
    Failed,
    InstallPlan,
    ModelBuilt,
    PeerDone,
    PlanChecked,
    RunRequest,
)
from halp.runtime.device import BlockStore, Mailbox
from halp.runtime.installed import Installed, ModelCache

SPEC = ModelSpec("mobilenet_v1", width=0.25, resolution=128, seed=3)


class Threads:
    def __init__(self) -> None:
        self.store, self.mailbox = BlockStore(), Mailbox()
        self.plans: dict[int, Installed] = {}
        self.models = ModelCache(None)
        self.threads = ComputeThreads(self.store, self.mailbox, self.plans, self.models)

    def outcomes(self, count: int, timeout_s: float = 10.0) -> list:
        got: list = []
        deadline = time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            select.select([self.mailbox.fileno()], [], [], 0.05)
            got.extend(self.mailbox.drain())
        return got

    def install(self) -> None:
        plan = whole_model_on(self.models.get(SPEC).graph, SPEC.variant, "w1")
        self.threads.put(InstallPlan(self.store.generation, SPEC, 0, plan, "w1"))
        assert self.outcomes(1)[0].error is None


@pytest.fixture
def threads():
    made = Threads()
    yield made
    made.store.fail("the test is over")
    made.threads.stop()
    made.mailbox.close()


def test_a_new_session_builds_its_model_and_installs_plans_that_fit(threads):
    threads.threads.put(BuildModel(0, SPEC))
    digest = threads.models.get(SPEC).digest
    assert threads.outcomes(1) == [ModelBuilt(0, digest, None)]
    plan = whole_model_on(threads.models.get(SPEC).graph, SPEC.variant, "w1")
    threads.threads.put(InstallPlan(0, SPEC, 4, plan, "w1"))
    assert threads.outcomes(1) == [PlanChecked(0, 4, digest, None)]
    assert threads.plans[4].plan is plan
    other = ModelSpec("mobilenet_v1", width=0.5, resolution=128, seed=3)
    threads.threads.put(InstallPlan(0, other, 5, plan, "w1"))
    [refused] = threads.outcomes(1)
    assert refused.digest is None and "PlanError: plan is for 0.25_128" in refused.error
    assert 5 not in threads.plans


def test_a_request_is_computed_and_its_block_handed_over_for_sending(threads):
    threads.install()
    built = threads.models.get(SPEC)
    x = torch.randn(1, *built.graph.input_shape)
    threads.store.put(9, "t1", (built.graph.full(0), x))
    threads.threads.run(RunRequest(0, 9, 0, "w1"), compute=True, peers=["h"])
    got = {type(o): o for o in threads.outcomes(3)}
    assert set(got) == {Computed, BlockReady, PeerDone}
    assert [r[0] for r in got[Computed].records] == ["c2"]
    ready = got[BlockReady]
    assert (ready.request, ready.plan_id, ready.op.id, ready.op.dst) == (9, 0, "t3", "h")
    with torch.no_grad():
        assert torch.allclose(ready.block[1].reshape(-1), built.module(x).reshape(-1), atol=1e-5)


def test_the_model_keeps_the_stages_of_every_plan_in_the_table(threads):
    built = threads.models.get(SPEC)
    graph = built.graph
    cut = graph.cut_points()[2]
    head = two_segments(graph, SPEC.variant, cut, "w1", "h")
    tail = two_segments(graph, SPEC.variant, cut, "h", "w1")
    threads.threads.put(InstallPlan(0, SPEC, 0, head, "w1"))
    assert threads.outcomes(1)[0].error is None
    assert built.released == frozenset(range(cut, len(graph)))
    threads.threads.put(InstallPlan(0, SPEC, 1, tail, "w1"))
    assert threads.outcomes(1)[0].error is None
    assert built.released == frozenset()  # plan 0 is still installed: its stages stay
    x = torch.randn(1, *graph.input_shape)
    threads.store.put(9, "t1", (graph.full(0), x))  # the host's input, sent to w1 (plan 0)
    threads.threads.run(RunRequest(0, 9, 0, "w1"), compute=True, peers=["h"])
    got = {type(o): o for o in threads.outcomes(3)}
    assert set(got) == {Computed, BlockReady, PeerDone} and got[Computed].records


def test_a_job_of_a_run_that_is_over_does_nothing(threads):
    threads.install()
    old = threads.store.generation
    threads.store.reset()  # the run ended (or the host said RESET)
    threads.threads.run(RunRequest(old, 9, 0, "w1"), compute=True, peers=["h"])
    assert threads.outcomes(1, timeout_s=0.3) == []
    plan = threads.plans[0].plan
    threads.threads.put(InstallPlan(old, SPEC, 1, plan, "w1"))  # checked, but not installed
    assert threads.outcomes(1)[0].error is None and 1 not in threads.plans


def test_a_request_that_fails_is_reported_as_failed(threads):
    threads.install()
    graph = threads.models.get(SPEC).graph
    threads.store.put(9, "t1", (graph.full(0), torch.zeros(1, 2, 128, 128)))  # 2 channels, not 3
    threads.threads.run(RunRequest(0, 9, 0, "w1"), compute=True, peers=["h"])
    [failed] = threads.outcomes(1)
    assert isinstance(failed, Failed) and failed.request == 9 and failed.error

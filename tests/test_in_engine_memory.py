"""Room for the reward model on the engine's device (``in_engine.memory``): the largest guided step
comes from vLLM's own config, runs on both backends at that shape, nothing is reserved on CPU, and -
where there is a GPU - the buffer held through vLLM's profiling is the step's measured peak and is
given back at the first guided request."""

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from pargs_batch.config import RewardConfig  # noqa: E402
from pargs_batch.in_engine.memory import LargestStep, Reservation, run_largest_step  # noqa: E402
from pargs_batch.rewards.factory import make_scorer  # noqa: E402


def test_the_largest_step_is_read_from_the_engines_own_config(engine):
    vc = engine.llm.llm_engine.vllm_config
    step = LargestStep.of(vc)
    assert step == LargestStep(rows=vc.scheduler_config.max_num_seqs, k=vc.model_config.max_logprobs,
                               tokens=vc.model_config.max_model_len)
    assert step.tokens == 256 and step.k == 20 and step.rows >= 64


@pytest.mark.parametrize("backend", ["hf", "causal"])
def test_the_largest_step_runs_at_its_shape_and_nothing_is_reserved_on_cpu(reduced_world, backend):
    path = reduced_world["rm_partial_causal" if backend == "causal" else "rm_partial"]
    scorer = make_scorer(RewardConfig(path=path, backend=backend, batch_size=48))
    step = LargestStep(rows=6, k=5, tokens=96)
    calls = []
    if backend == "causal":
        start, score = scorer.start, scorer.score_candidates
        scorer.start = lambda seqs: calls.append(("start", len(seqs), len(seqs[0]))) or start(seqs)
        scorer.score_candidates = lambda s, cand: calls.append(("score", cand.shape)) or score(s, cand)
        run_largest_step(scorer, step)
        assert calls == [("start", 6, 95), ("score", (6, 5))]  # every row's session, full length
    else:
        costed = scorer.score_costed
        scorer.score_costed = lambda c, r: calls.append((len(c), len(r[0]))) or costed(c, r)
        run_largest_step(scorer, step)
        assert calls == [(30, 2 * 96)]  # rows x k candidates (<= batch_size), each as long as the context
    reservation = Reservation(scorer, step)
    assert reservation.bytes == 0 and reservation.buffers == [] and reservation.member_bytes == [0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_reservation_is_the_steps_peak_and_is_released(reduced_world):
    scorer = make_scorer(RewardConfig(path=reduced_world["rm_partial"], batch_size=256, device="cuda"))
    step = LargestStep(rows=64, k=10, tokens=128)
    base = torch.cuda.memory_allocated()
    reservation = Reservation(scorer, step)
    assert reservation.bytes > 0 and sum(b.numel() for b in reservation.buffers) == reservation.bytes
    assert torch.cuda.memory_allocated() - base == reservation.bytes  # held through vLLM's profile
    reservation.release()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= base + (1 << 20)  # given back
    # what a real step at this shape takes, measured again once the buffer is gone: the reservation
    torch.cuda.reset_peak_memory_stats()
    run_largest_step(scorer, step)
    peak = torch.cuda.max_memory_allocated() - base
    assert abs(peak - reservation.bytes) <= 0.05 * reservation.bytes + (1 << 20)


def test_a_processor_built_without_vllms_scheduler_reserves_nothing(world):
    from pargs_batch.guidance import GuideSetup
    from pargs_batch.in_engine.guide import Guide

    guide = Guide(SimpleNamespace(additional_config=GuideSetup(
        tokenizer=world["llm"], reward={"path": world["reward_model"]}).to_wire()))
    assert guide.info().reserved_bytes == 0 and guide.info().reward_load_s > 0


def test_every_member_of_several_reward_models_is_measured(world):
    """reward.models: each member's largest step is measured (on CPU each is 0 bytes: nothing is held),
    where a scorer of several models was once reserved nothing without a look."""
    config = RewardConfig(models=[{"path": world["reward_model"]}, {"path": world["reward_model"], "weight": 0.5}],
                          batch_size=8)
    reservation = Reservation(make_scorer(config), LargestStep(rows=4, k=3, tokens=32))
    assert reservation.member_bytes == [0, 0] and reservation.bytes == 0 and reservation.buffers == []

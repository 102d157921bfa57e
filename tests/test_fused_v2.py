"""The Model Runner V2 processor, driven on CPU tensors with vLLM's own V2 interface (``LogitsContext``;
the request state is an object with the runner's fields, since a real one needs a GPU runner) in the
layouts the runner produces: rows reordered every step, slots recycled, a request preempted and added
back with its output so far, a row still in chunked prefill. Its logits equal the V1 processor's on
the same histories, and its choices and recorded rewards equal the stepped rule's.

The logits come from a fixed pseudo-random "LM" (a function of the token history), so every driver
see the same distribution for the same history; the reward model is the tiny world's (hf backend)."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext  # noqa: E402

from pargs_batch import decoding  # noqa: E402
from pargs_batch.fused import EXTRA_KEY, PargsLogitsProcessor  # noqa: E402
from pargs_batch.fused_v2 import PargsLogitsProcessorV2  # noqa: E402

K, BETA, STEPS, SLOTS, MAX_LEN = 6, 2.0, 10, 8, 64


def fake_logits(history: list[int], vocab: int) -> torch.Tensor:
    """A deterministic 'LM': logits seeded by the history (ties are tests/test_fused_rule.py's part:
    here they would leave the choice to float noise between differently batched reward calls)."""
    seed = hash(tuple(history)) % 2**32
    return torch.tensor(np.random.default_rng(seed).normal(0, 2, vocab).astype(np.float32))


@pytest.fixture(scope="module")
def setup(world, tokenizer):
    config = SimpleNamespace(additional_config={EXTRA_KEY: {
        "tokenizer": world["llm"], "reward": {"path": world["reward_model"], "batch_size": 64}}})
    prompts = ["review of the cafe :", "review of the train :", "review of my phone :", "review of the movie :"]
    return config, prompts, [tokenizer(p)["input_ids"] for p in prompts]


def params(key: str, prompt: str) -> SamplingParams:
    return SamplingParams(extra_args={EXTRA_KEY: {"key": key, "k": K, "beta": BETA, "guided": True,
                                                  "greedy": True, "prompt": prompt}})


def request_state(vocab: int):
    """The fields of the runner's LogitsProcRequestState that a processor reads."""
    return SimpleNamespace(device=torch.device("cpu"), max_num_reqs=SLOTS, vocab_size=vocab,
                           all_token_ids=SimpleNamespace(gpu=torch.zeros((SLOTS, MAX_LEN), dtype=torch.int32)),
                           prompt_len=SimpleNamespace(np=np.zeros(SLOTS, dtype=np.int32)),
                           prefill_len=SimpleNamespace(np=np.zeros(SLOTS, dtype=np.int32)))


def run_v2(config, prompts, prompt_ids, vocab):
    """Generate greedily through the V2 processor; returns tokens per request and the processor."""
    state = request_state(vocab)
    proc = PargsLogitsProcessorV2(config, state)
    rng = np.random.default_rng(0)
    outs = {r: [] for r in range(len(prompts))}
    slot_of, free = {}, list(range(SLOTS))[::-1]

    def admit(r):
        slot = free.pop()
        slot_of[r] = slot
        ids = prompt_ids[r] + outs[r]
        state.all_token_ids.gpu[slot, : len(ids)] = torch.tensor(ids)
        state.prompt_len.np[slot], state.prefill_len.np[slot] = len(prompt_ids[r]), len(ids)
        assert proc.add_request(slot, params(f"req{r}", prompts[r]))

    for r in range(3):
        admit(r)
    assert not proc.add_request(free[-1], SamplingParams())  # a request that is not guided
    for step in range(STEPS):
        if step == 2:
            admit(3)  # joins late
        if step == 4:  # request 1 is preempted; another engine request takes its slot at once
            assert not proc.add_request(slot_of.pop(1), SamplingParams())
        if step == 6:
            admit(1)  # added back with its output so far, in whichever slot is free
        active = sorted(slot_of, key=lambda _: rng.random())  # rows reordered every step
        lengths = [len(prompt_ids[r]) + len(outs[r]) for r in active]
        logits = torch.stack([fake_logits(prompt_ids[r] + outs[r], vocab) for r in active])
        if step == 3:  # one more row, still in chunked prefill: left alone, its token discarded
            partial = free.pop()
            state.prompt_len.np[partial], state.prefill_len.np[partial] = 40, 40
            assert proc.add_request(partial, params("prefill", "a long prompt"))
            active_slots = [slot_of[r] for r in active] + [partial]
            logits = torch.cat([logits, torch.zeros((1, vocab))])
            lengths = lengths + [10]
        else:
            active_slots = [slot_of[r] for r in active]
        ctx = LogitsContext(expanded_idx_mapping=torch.tensor(active_slots), idx_mapping=torch.tensor(active_slots),
                            idx_mapping_np=np.array(active_slots), expanded_local_pos=torch.zeros(len(active_slots)),
                            input_ids=torch.zeros(len(active_slots), dtype=torch.int32),
                            pos=torch.tensor(lengths) - 1, seq_lens_upper_bound_np=np.array(lengths, dtype=np.int32))
        before = logits.clone()
        new = proc.apply(logits, ctx)
        if step == 3:
            assert torch.equal(new[-1], before[-1])
        for row, r in enumerate(active):
            token = int(new[row].argmax())
            outs[r].append(token)
            slot = slot_of[r]
            state.all_token_ids.gpu[slot, lengths[row]] = token  # the runner's post_update
    return outs, proc


def run_v1(config, prompts, prompt_ids, vocab):
    """The same requests through the V1 processor (a fixed layout, no preemption)."""
    proc = PargsLogitsProcessor(config, "cpu", False)
    outs = {r: [] for r in range(len(prompts))}
    proc.update_state(BatchUpdate(batch_size=len(prompts), removed=[], moved=[],
                                  added=[(r, params(f"req{r}", prompts[r]), prompt_ids[r], outs[r])
                                         for r in range(len(prompts))]))
    for _ in range(STEPS):
        proc.update_state(None)
        logits = torch.stack([fake_logits(prompt_ids[r] + outs[r], vocab) for r in range(len(prompts))])
        new = proc.apply(logits)
        for r in range(len(prompts)):
            outs[r].append(int(new[r].argmax()))
    return outs, proc


def stepped_rule(prompt: str, prompt_ids: list[int], out: list[int], scorer, tokenizer, vocab):
    """What the stepped loop chooses after ``out``, and the reward of its choice."""
    logp = torch.log_softmax(fake_logits(prompt_ids + out, vocab), -1).numpy()[None, :].astype(np.float64)
    ids, lps = decoding.order_candidates(np.arange(vocab)[None, :], logp, K)
    texts = [tokenizer.decode(out + [int(c)], skip_special_tokens=True) for c in ids[0]]
    rewards = scorer.score([prompt] * K, texts)[None, :]
    j = decoding.choose("pargs-greedy", lps, rewards, BETA, 1.0, np.zeros(1))[0]
    return int(ids[0, j]), float(rewards[0, j])


def test_the_v2_processor_equals_the_v1_processor_and_the_stepped_rule(setup, scorer, tokenizer):
    config, prompts, prompt_ids = setup
    vocab = len(tokenizer)
    v2, proc2 = run_v2(config, prompts, prompt_ids, vocab)
    v1, proc1 = run_v1(config, prompts, prompt_ids, vocab)
    assert v2 == {r: v1[r][: len(v2[r])] for r in v2}  # request 3 joined late, request 1 sat out 2 steps
    assert len(v2[0]) == STEPS and len(v2[1]) == STEPS - 2 and len(v2[3]) == STEPS - 2
    for r in range(len(prompts)):
        record = proc2.records[f"req{r}"]
        for t, token in enumerate(v2[r]):
            want_token, want_reward = stepped_rule(prompts[r], prompt_ids[r], v2[r][:t], scorer, tokenizer, vocab)
            assert token == want_token, (r, t)
            if t < len(record.rewards):  # the last token's reward waits in the row's pending step
                assert record.rewards[t] == pytest.approx(want_reward, abs=1e-5), (r, t)
        assert len(record.rewards) == len(v2[r]) - 1
        assert record.rewards == pytest.approx(proc1.records[f"req{r}"].rewards[: len(record.rewards)], abs=1e-6)

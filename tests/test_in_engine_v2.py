"""in_engine/v2.py: the guidance processor on Model Runner V2's interface, driven on CPU tensors through vLLM's own V2
dataclasses (``LogitsProcRequestState``, ``LogitsContext``; the runner's token buffers are CPU tensors
and numpy arrays, since a real runner needs a GPU) in the layouts the runner produces: rows reordered
every step, slots recycled, a request preempted and added back with its output so far (or with fewer
tokens than it had), a row still in chunked prefill. Its logits equal the V1 interface's on the same
histories, its choices and recorded rewards equal the stepped rule's, each step reads only the tokens
a row has not seen, and speculative decoding is refused when the processor is built.

The logits come from a fixed pseudo-random "LM" (a function of the token history), so every driver
see the same distribution for the same history; the reward model is the tiny world's (hf backend)."""

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate  # noqa: E402
from vllm.v1.worker.gpu.sample.logits_processor import LogitsContext, LogitsProcRequestState  # noqa: E402

from pargs_batch import decoding  # noqa: E402
from pargs_batch.guidance import GuideArgs, GuideSetup  # noqa: E402
from pargs_batch.in_engine.guide import SPECULATIVE_REFUSAL  # noqa: E402
from pargs_batch.in_engine.processor import PargsLogitsProcessor  # noqa: E402

K, BETA, STEPS, SLOTS, MAX_LEN = 6, 2.0, 10, 8, 64


def fake_logits(history: list[int], vocab: int) -> torch.Tensor:
    """A deterministic 'LM': logits seeded by the history (ties are tests/test_in_engine_guide.py's part:
    here they would leave the choice to float noise between differently batched reward calls)."""
    seed = hash(tuple(history)) % 2**32
    return torch.tensor(np.random.default_rng(seed).normal(0, 2, vocab).astype(np.float32))


@pytest.fixture(scope="module")
def setup(world, tokenizer):
    config = SimpleNamespace(additional_config=GuideSetup(
        tokenizer=world["llm"], reward={"path": world["reward_model"], "batch_size": 64}).to_wire())
    prompts = ["review of the cafe :", "review of the train :", "review of my phone :", "review of the movie :"]
    return config, prompts, [tokenizer(p)["input_ids"] for p in prompts]


def params(key: str, prompt: str) -> SamplingParams:
    return SamplingParams(extra_args=GuideArgs(key=key, k=K, beta=BETA, guided=True, greedy=True,
                                               prompt=prompt).to_wire())


class CountedBuffer:
    """The runner's device token buffer (``StagedWriteTensor.gpu``), counting the ids read from it."""

    def __init__(self, tensor):
        self.tensor, self.read = tensor, 0

    @property
    def device(self):
        return self.tensor.device

    def __getitem__(self, index):
        out = self.tensor[index]
        self.read += out.numel()
        return out

    def __setitem__(self, index, value):
        self.tensor[index] = value


def request_state(vocab: int) -> LogitsProcRequestState:
    """vLLM's own request-state dataclass over CPU buffers laid out as the runner's."""
    buffer = lambda: SimpleNamespace(np=np.zeros(SLOTS, dtype=np.int32))  # noqa: E731
    return LogitsProcRequestState(
        device=torch.device("cpu"), max_num_reqs=SLOTS, vocab_size=vocab,
        all_token_ids=SimpleNamespace(gpu=CountedBuffer(torch.zeros((SLOTS, MAX_LEN), dtype=torch.int32))),
        prompt_len=buffer(), prefill_len=buffer(), total_len=buffer())


def run_v2(config, prompts, prompt_ids, vocab, drop: int = 0):
    """Generate greedily through the processor as V2 builds and calls it; returns tokens per request,
    the processor and the ids it read per step. Request 1 is preempted at step 4 and added back at
    step 6 with ``drop`` fewer output tokens than it had (what a resume that loses tokens does)."""
    state = request_state(vocab)
    proc = PargsLogitsProcessor(config, state)
    reads, buffer = [], state.all_token_ids.gpu
    rng = np.random.default_rng(0)
    outs = {r: [] for r in range(len(prompts))}
    slot_of, free = {}, list(range(SLOTS))[::-1]

    def admit(r):
        slot = free.pop()
        slot_of[r] = slot
        del outs[r][len(outs[r]) - drop if r == 1 and outs[r] else len(outs[r]):]
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
        read = buffer.read
        new = proc.apply(logits, ctx)
        reads.append(buffer.read - read)
        if step == 3:
            assert torch.equal(new[-1], before[-1])
        for row, r in enumerate(active):
            token = int(new[row].argmax())
            outs[r].append(token)
            slot = slot_of[r]
            state.all_token_ids.gpu[slot, lengths[row]] = token  # the runner's post_update
    return outs, proc, reads


def run_v1(config, prompts, prompt_ids, vocab, drop: int | None = None):
    """The same requests through the processor as the V1 runner builds and calls it (a fixed layout);
    with ``drop`` set, request 1 leaves the batch at step 4 and is added back at step 6 with ``drop``
    fewer output tokens than it had."""
    proc = PargsLogitsProcessor(config, "cpu", False)
    outs = {r: [] for r in range(len(prompts))}
    proc.update_state(BatchUpdate(batch_size=len(prompts), removed=[], moved=[],
                                  added=[(r, params(f"req{r}", prompts[r]), prompt_ids[r], outs[r])
                                         for r in range(len(prompts))]))
    for step in range(STEPS):
        if drop is not None and step in (4, 6):
            if step == 6:
                outs[1] = outs[1][:len(outs[1]) - drop]  # vLLM's output list as the resumed request brings it
            added = [(1, params("req1", prompts[1]), prompt_ids[1], outs[1])] if step == 6 else []
            proc.update_state(BatchUpdate(batch_size=len(prompts), removed=[1] if step == 4 else [], moved=[],
                                          added=added))
        proc.update_state(None)
        active = [r for r in range(len(prompts)) if not (drop is not None and 4 <= step < 6 and r == 1)]
        logits = torch.stack([fake_logits(prompt_ids[r] + outs[r], vocab) for r in range(len(prompts))])
        new = proc.apply(logits)
        for r in active:
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
    v2, proc2, _ = run_v2(config, prompts, prompt_ids, vocab)
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


def test_each_step_reads_only_the_tokens_a_row_has_not_seen(setup, tokenizer):
    """A row's history is read whole once, when its request is added (new, or added back); after
    that one token per row per step - not the O(rows x length) of re-reading every history."""
    config, prompts, prompt_ids = setup
    outs, _, reads = run_v2(config, prompts, prompt_ids, len(tokenizer))
    lengths = [len(p) for p in prompt_ids]
    assert reads[0] == sum(lengths[:3])  # three prompts, read once
    assert reads[1] == 3  # then the one new token of each row
    assert reads[2] == 3 + lengths[3]  # request 3 joins: its prompt; the other rows one token each
    assert reads[3] == 4  # the row still in chunked prefill is not read
    assert reads[4] == reads[5] == 3  # request 1 out of the batch
    assert reads[6] == 3 + lengths[1] + 4  # request 1 back: its prompt and the 4 tokens it kept
    assert reads[7:] == [4] * (STEPS - 7)


@pytest.mark.parametrize("interface", ["v1", "v2"])
def test_a_request_resumed_with_fewer_tokens_is_cut_back_and_continues_as_without_the_drop(setup, tokenizer,
                                                                                          interface):
    """Request 1 comes back with 2 of its tokens gone: its row drops their rewards and text, guides
    on, and ends with the tokens and rewards of a run without the drop."""
    config, prompts, prompt_ids = setup
    run = run_v2 if interface == "v2" else run_v1
    plain, proc_plain = run(config, prompts, prompt_ids, len(tokenizer), drop=0)[:2]
    dropped, proc = run(config, prompts, prompt_ids, len(tokenizer), drop=2)[:2]
    assert len(dropped[1]) == len(plain[1]) - 2 and dropped[1] == plain[1][: len(dropped[1])]
    assert all(dropped[r] == plain[r] for r in (0, 2, 3))
    for r in range(len(prompts)):
        row, want = proc.records[f"req{r}"], proc_plain.records[f"req{r}"]
        assert len(row.rewards) == len(dropped[r]) - 1 and row.committed == dropped[r][:-1]
        assert row.rewards == pytest.approx(want.rewards[: len(row.rewards)], abs=1e-6)
    detok = proc.records["req1"].detok  # the text follows the tokens kept (an unfinished character waits)
    assert detok.text == tokenizer.decode(dropped[1][:-1], skip_special_tokens=True).rstrip("\ufffd")


@pytest.mark.parametrize("interface", ["v1", "v2"])
def test_speculative_decoding_is_refused_when_the_processor_is_built(setup, tokenizer, interface):
    config, _, _ = setup
    speculative = SimpleNamespace(additional_config=config.additional_config,
                                  speculative_config=SimpleNamespace(method="ngram", num_speculative_tokens=3))
    args = (request_state(len(tokenizer)),) if interface == "v2" else ("cpu", False)
    with pytest.raises(ValueError) as refused:
        PargsLogitsProcessor(speculative, *args)
    assert str(refused.value) == SPECULATIVE_REFUSAL and "\n" not in SPECULATIVE_REFUSAL

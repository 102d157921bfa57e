"""The transformers reward scorer: batching, truncation and templates against direct forwards."""

import numpy as np
import torch

from pargs_batch.config import RewardConfig
from pargs_batch.rewards.hf import HFRewardScorer, length_sorted_batches


def direct(scorer, text):
    enc = scorer.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return float(scorer.model(**enc).logits[0, 0])


def test_length_sorted_batches_cover_every_index_once():
    lengths = [5, 1, 9, 3, 9, 2, 7]
    batches = length_sorted_batches(lengths, 3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(7))
    assert [len(b) for b in batches] == [3, 3, 1]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)


def test_batched_scores_equal_one_at_a_time(scorer):
    prompts = ["review of the cafe :"] * 5 + ["review of this book :"] * 4
    responses = ["", " staff", " staff was lovely", " staff was lovely and the food was warm .",
                 " food was rude", " music", " music was noisy but the view was calm .", " x", " "]
    batched = scorer.score(prompts, responses)
    assert batched.dtype == np.float32 and batched.shape == (9,)
    single = [direct(scorer, p + r) for p, r in zip(prompts, responses)]
    assert np.allclose(batched, single, atol=1e-4)


def test_the_tiny_reward_model_prefers_pleasant_prefixes(scorer):
    good, bad = scorer.score(["review of the cafe :"] * 2,
                             [" staff was lovely , food was warm", " staff was rude , food was stale"])
    assert good > bad + 1.0


def test_template_joins_prompt_and_response(world):
    scorer = HFRewardScorer(RewardConfig(path=world["reward_model"],
                                         template="question: {prompt} answer:{response}"))
    assert scorer.texts(["p {x}"], [" r"]) == ["question: p {x} answer: r"]
    assert np.isclose(scorer.score(["hi"], [" staff was warm"])[0],
                      direct(scorer, "question: hi answer: staff was warm"), atol=1e-4)


def test_long_prompts_are_cut_from_the_left_keeping_the_response(world):
    scorer = HFRewardScorer(RewardConfig(path=world["reward_model"], max_length=16))
    response = " staff was lovely , view was calm"
    long_prompt = "review of the cafe : " * 40
    (score,) = scorer.score([long_prompt], [response])
    ids = scorer.tokenizer(long_prompt + response, add_special_tokens=False)["input_ids"]
    kept = scorer.tokenizer.decode(ids[-14:])  # 16 minus [CLS] and [SEP]
    assert len(ids) > 100 and kept.split()[-1] == "calm"
    assert np.isclose(score, direct(scorer, kept), atol=1e-4)
    # a different start of the prompt, beyond the cut, changes nothing
    (other,) = scorer.score(["completely different words here " * 10 + long_prompt], [response])
    assert np.isclose(score, other, atol=1e-5)


def test_a_gpt2_reward_model_without_pad_token_gets_eos(tmp_path, caplog):
    from transformers import AutoTokenizer, GPT2Config, GPT2ForSequenceClassification

    from experiments.world.tiny import TinyWorldSpec, make_corpus
    from experiments.world.builders import train_llm_tokenizer

    spec = TinyWorldSpec(corpus_size=200)
    tok = train_llm_tokenizer([p + r for p, r in make_corpus(spec)], spec.llm_vocab_size, spec.llm_positions)
    tok.pad_token = None
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1,
                                                     n_head=1, num_labels=1))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).pad_token is None
    with caplog.at_level("WARNING"):
        scorer = HFRewardScorer(RewardConfig(path=str(tmp_path), batch_size=4))
    assert "no pad token" in caplog.text
    texts = [" a", " staff was lovely", " b c", " food"]
    batched = scorer.score(["p :"] * 4, texts)
    # GPT-2 reads the reward at the last real token: right padding must not change it
    single = [scorer.score(["p :"], [t])[0] for t in texts]
    assert np.allclose(batched, single, atol=1e-5)

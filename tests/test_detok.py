"""Incremental detokenisation gives the text a full decode gives, step by step."""

import numpy as np

from pargs_batch.models.detok import IncrementalDetokenizer


def replay(tokenizer, prompt: str, response: str):
    detok = IncrementalDetokenizer(tokenizer)
    state = detok.start(tokenizer(prompt)["input_ids"])
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    texts = []
    for i, token in enumerate(ids):
        # offer the true token among two others, as a step offers k candidates
        candidates = np.array([[token, ids[0], tokenizer.eos_token_id]])
        windows = detok.decode_with([state], candidates)
        candidate_text = detok.extended_text(state, windows[0])
        detok.commit([state], [token], [windows[0]])
        assert state.text == candidate_text
        texts.append(state.text)
    return ids, texts


def test_incremental_text_equals_full_decode_at_every_step(tokenizer):
    response = " staff was lovely , the food was warm . i would go back ."
    ids, texts = replay(tokenizer, "review of the cafe :", response)
    for i, text in enumerate(texts):
        full = tokenizer.decode(ids[: i + 1], skip_special_tokens=True)
        assert text == full
    assert texts[-1] == response


def test_multibyte_characters_wait_until_complete(tokenizer):
    response = " café ☕ was lovely 🙂 ."
    ids, texts = replay(tokenizer, "review of the cafe :", response)
    assert len(ids) > len(response.split())  # byte-level pieces: some tokens end mid-character
    assert texts[-1] == response
    assert all("\ufffd" not in t for t in texts)
    assert all(texts[i + 1].startswith(texts[i]) for i in range(len(texts) - 1))


def test_eos_candidate_adds_no_text(tokenizer):
    detok = IncrementalDetokenizer(tokenizer)
    state = detok.start(tokenizer("review of the cafe :")["input_ids"])
    ids = tokenizer(" staff was", add_special_tokens=False)["input_ids"]
    for token in ids:
        (window,) = detok.decode_with([state], [[token]])
        detok.commit([state], [token], [window])
    (window,) = detok.decode_with([state], [[tokenizer.eos_token_id]])
    assert detok.extended_text(state, window) == " staff was"

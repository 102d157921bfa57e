"""Incremental detokenisation: the response text grows by one token's worth per step.

Each sequence keeps a short window of its latest tokens (starting with a few prompt tokens, so
SentencePiece's leading spaces come out right) and the text that window already produced. A
candidate's text is the response so far plus what decoding the window with the candidate appended
adds; a token that ends inside a multi-byte character adds nothing until the character completes.
So a step decodes B x k windows of a few tokens each, never a whole prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

_INCOMPLETE = "\ufffd"


@dataclass
class DetokState:
    tokens: list[int]        # window: a few prompt tokens, then response tokens
    prefix_offset: int = 0   # the window's decoding starts here
    read_offset: int = 0     # tokens before this are already in ``text``
    prefix_text: str = ""    # decode(tokens[prefix_offset:read_offset])
    text: str = field(default="")


class IncrementalDetokenizer:
    def __init__(self, tokenizer, context_tokens: int = 4):
        self.tokenizer = tokenizer
        self.context_tokens = context_tokens

    def _decode(self, windows: list[list[int]]) -> list[str]:
        return self.tokenizer.batch_decode(windows, skip_special_tokens=True)

    def start(self, prompt_ids: list[int]) -> DetokState:
        tail = list(prompt_ids[-self.context_tokens:])
        return DetokState(tokens=tail, read_offset=len(tail), prefix_text=self._decode([tail])[0])

    def decode_with(self, states: list[DetokState], next_tokens) -> list[str]:
        """Decoded windows with each candidate appended: row b, candidate j at b * m + j."""
        windows = [s.tokens[s.prefix_offset:] + [int(t)] for s, row in zip(states, next_tokens) for t in row]
        return self._decode(windows)

    @staticmethod
    def extended_text(state: DetokState, window_text: str) -> str:
        """The response text if the window decoding to ``window_text`` were committed."""
        if window_text.endswith(_INCOMPLETE) or len(window_text) <= len(state.prefix_text):
            return state.text
        return state.text + window_text[len(state.prefix_text):]

    def commit(self, states: list[DetokState], tokens, window_texts: list[str]) -> None:
        """Append each chosen token; ``window_texts`` are their ``decode_with`` results."""
        moved = []
        for state, token, window_text in zip(states, tokens, window_texts):
            state.tokens.append(int(token))
            new_text = self.extended_text(state, window_text)
            if new_text is not state.text:
                state.text = new_text
                state.prefix_offset, state.read_offset = state.read_offset, len(state.tokens)
                moved.append(state)
        if moved:
            texts = self._decode([s.tokens[s.prefix_offset:s.read_offset] for s in moved])
            for state, text in zip(moved, texts):
                state.prefix_text = text

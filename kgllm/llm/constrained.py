"""Constrained decoding: a prefix trie over token ids, so generation can only spell one of the candidates.

Each candidate is encoded as it would follow the prompt (give it its leading space,
``" Eastern Africa"``) and ends with the end-of-sequence token, so a finished candidate
stops the sequence and a candidate that is a prefix of another (``" Niger"``,
``" Nigeria"``) can still be chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

from kgllm.exceptions import InputError


class TokenTrie:
    """Candidates as token-id sequences sharing their prefixes."""

    def __init__(self, sequences: Sequence[Sequence[int]], eos_id: int):
        if not sequences:
            raise InputError("constrained decoding needs at least one candidate")
        self.eos_id = eos_id
        self.root: dict[int, dict] = {}
        self.longest = 0
        for ids in sequences:
            if not ids:
                raise InputError("a candidate encodes to no tokens")
            node = self.root
            for token in [*ids, eos_id]:
                node = node.setdefault(token, {})
            self.longest = max(self.longest, len(ids) + 1)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        """Tokens that may follow ``prefix`` (generated tokens so far); only EOS once a candidate is complete."""
        node = self.root
        for token in prefix:
            node = node.get(token)
            if node is None:
                return [self.eos_id]
        return list(node) or [self.eos_id]


def prefix_allowed_tokens_fn(trie: TokenTrie, prompt_len: int):
    """The callback transformers' ``generate`` asks, per row and step, for the tokens it may emit."""

    def allowed(batch_id: int, input_ids) -> list[int]:
        return trie.allowed(input_ids[prompt_len:].tolist())

    return allowed

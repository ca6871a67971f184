"""Constrained decoding: rules that say, at each step, which tokens generation may emit.

Any object with ``prefix_allowed_tokens(batch_id, generated)`` is a
:class:`~kgllm.llm.base.Constraint`. :class:`TokenTrie` holds generation to one of a list of
candidates (what ``generate(..., allowed=[...])`` builds); :class:`PerPrompt` gives each prompt
of a batch its own rule (a grammar per text chunk, for one).

Each candidate is encoded as it would follow the prompt (give it its leading space,
``" Eastern Africa"``) and ends with the end-of-sequence token, so a finished candidate
stops the sequence and a candidate that is a prefix of another (``" Niger"``,
``" Nigeria"``) can still be chosen.
"""

from __future__ import annotations

from collections.abc import Sequence

from kgllm.exceptions import InputError
from kgllm.llm.base import Constraint


class TokenTrie:
    """Candidates as token-id sequences sharing their prefixes.

    Example::

        trie = TokenTrie(lm.tokenizer([" Lima", " Lisbon"], add_special_tokens=False)["input_ids"],
                         lm.tokenizer.eos_token_id)
        lm.generate("The capital of Peru is", constraint=trie)
    """

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
            child = node.get(token)
            if child is None:
                return [self.eos_id]
            node = child
        return list(node) or [self.eos_id]

    def prefix_allowed_tokens(self, batch_id: int, generated: Sequence[int]) -> list[int]:
        """The :class:`~kgllm.llm.base.Constraint` method: the same candidates for every prompt."""
        return self.allowed(generated)


class PerPrompt:
    """One constraint per prompt of a batch, in the order of the prompts."""

    def __init__(self, constraints: Sequence[Constraint]):
        self.constraints = list(constraints)

    def prefix_allowed_tokens(self, batch_id: int, generated: Sequence[int]) -> Sequence[int]:
        """What the constraint of prompt ``batch_id`` allows after ``generated``."""
        return self.constraints[batch_id].prefix_allowed_tokens(batch_id, generated)

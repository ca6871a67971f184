"""JSON-schema-constrained decoding: a local model can only write JSON that parses and validates.

A schema is compiled into a small character-level pushdown automaton. At each decoding step the
vocabulary (held as a character trie of the tokens' texts) is walked from the automaton's state, and
only the tokens that keep the text a prefix of a valid document are allowed. A token is allowed
only if the document can still be finished within the tokens left (every character the closing
needs is a token of its own in a byte-level vocabulary), so a reply cut by ``max_new_tokens`` still
parses. Once the document is complete only end-of-sequence is allowed.

The output is compact JSON (no whitespace outside strings; strings without escapes or control
characters). Supported: ``type`` (``object``, ``array``, ``string``, ``integer``, ``number``,
``boolean``, ``null``, or a list of them), ``properties`` (written in the schema's order; optional
ones may be left out), ``required``, ``additionalProperties`` (only ``false`` or absent on typed
objects), ``items``, ``minItems``, ``maxItems``, ``minLength``, ``maxLength``, ``enum``, ``const``,
``anyOf`` / ``oneOf``, and ``$ref`` into ``$defs`` / ``definitions`` (not recursive). An object with no
``properties`` takes any keys and values, as ``response_format={"type": "json_object"}`` does.
Any other constraining keyword raises ``InputError`` naming it; annotations (``title``,
``description``, ``default``, ``examples``, ...) are ignored.

Example::

    model = HFCausalLM.from_pretrained("models/countries")
    schema = {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}
    generate_json(model, "Question: Where is Kenya located?\\nAnswer:", schema)   # ['{"country":" Kenya"}']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kgllm.exceptions import InputError
from kgllm.llm.base import GenerationConfig

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$defs",
        "definitions",
        "strict",
    }
)
_DIGITS = "0123456789"
_FORBIDDEN_IN_STRINGS = frozenset('"\\') | frozenset(chr(i) for i in range(32)) | {"\x7f"}

# ------------------------------------------------------------------ compiled schema


@dataclass(eq=False)
class _Node:
    """One schema, compiled. ``kind``: object, anyobject, array, string, number, literal, union, any."""

    kind: str
    integer: bool = False  # number
    min_length: int = 0  # string
    max_length: int | None = None
    literals: tuple[str, ...] = ()  # literal: JSON texts
    options: tuple[_Node, ...] = ()  # union
    properties: tuple[tuple[str, _Node, bool], ...] = ()  # object: (key, value, required)
    items: _Node | None = None  # array
    min_items: int = 0
    max_items: int | None = None
    shortest: int = 0  # fewest characters of a valid value
    rest: tuple[int, ...] = field(default=())  # object: characters to close after property i is written

    def __repr__(self) -> str:
        return f"_Node({self.kind})"


def compile_schema(schema: dict[str, Any] | None) -> _Node:
    """The automaton's root for ``schema``; ``None`` means any JSON object (``json_object`` mode)."""
    if schema is None:
        return _finish(_Node("anyobject"))
    if not isinstance(schema, dict):
        raise InputError("a JSON schema must be an object")
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    return _compile(schema, defs, ())


def _compile(schema: Any, defs: dict[str, Any], refs: tuple[str, ...]) -> _Node:
    if schema is True or schema == {}:
        return _finish(_Node("any"))
    if not isinstance(schema, dict):
        raise InputError(f"unsupported JSON schema {schema!r}")
    if "$ref" in schema:
        ref = schema["$ref"]
        name = ref.rsplit("/", 1)[-1]
        if not isinstance(ref, str) or not ref.startswith(("#/$defs/", "#/definitions/")) or name not in defs:
            raise InputError(f"JSON schema $ref {ref!r} does not point into $defs")
        if name in refs:
            raise InputError(f"recursive JSON schemas are not supported ($ref {ref!r})")
        others = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k != "$ref"}
        if others:
            raise InputError(f"JSON schema keywords beside $ref are not supported: {sorted(others)}")
        return _compile(defs[name], defs, (*refs, name))
    known = {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "enum",
        "const",
        "anyOf",
        "oneOf",
    }
    unknown = sorted(set(schema) - known - ANNOTATIONS)
    if unknown:
        raise InputError(f"JSON schema keyword {unknown[0]!r} is not supported in constrained decoding")
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        if not isinstance(values, list) or not values:
            raise InputError("JSON schema enum must be a non-empty list")
        texts = tuple(dict.fromkeys(json.dumps(v, separators=(",", ":"), ensure_ascii=True) for v in values))
        return _finish(_Node("literal", literals=texts))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = schema[key]
            if not isinstance(options, list) or not options:
                raise InputError(f"JSON schema {key} must be a non-empty list")
            rest = {k: v for k, v in schema.items() if k != key}
            return _finish(_Node("union", options=tuple(_compile({**rest, **o}, defs, refs) for o in options)))
    kind = schema.get("type")
    if isinstance(kind, list):
        if not kind:
            raise InputError("JSON schema type list must not be empty")
        return _finish(_Node("union", options=tuple(_compile({**schema, "type": t}, defs, refs) for t in kind)))
    if kind is None:
        if "properties" in schema:
            kind = "object"
        elif "items" in schema:
            kind = "array"
        else:
            return _finish(_Node("any"))
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if not isinstance(low, int) or low < 0 or (high is not None and (not isinstance(high, int) or high < low)):
            raise InputError("JSON schema minLength/maxLength must be integers with 0 <= minLength <= maxLength")
        return _finish(_Node("string", min_length=low, max_length=high))
    if kind in ("integer", "number"):
        return _finish(_Node("number", integer=kind == "integer"))
    if kind == "boolean":
        return _finish(_Node("literal", literals=("true", "false")))
    if kind == "null":
        return _finish(_Node("literal", literals=("null",)))
    if kind == "array":
        low, high = schema.get("minItems", 0), schema.get("maxItems")
        if not isinstance(low, int) or low < 0 or (high is not None and (not isinstance(high, int) or high < low)):
            raise InputError("JSON schema minItems/maxItems must be integers with 0 <= minItems <= maxItems")
        items = _compile(schema.get("items", True), defs, refs)
        return _finish(_Node("array", items=items, min_items=low, max_items=high))
    if kind == "object":
        properties = schema.get("properties")
        if not properties:
            return _finish(_Node("anyobject"))
        if not isinstance(properties, dict):
            raise InputError("JSON schema properties must be an object")
        if schema.get("additionalProperties", False) not in (False, True, {}):
            raise InputError("JSON schema additionalProperties with a schema is not supported; use false")
        required = schema.get("required", [])
        missing = sorted(set(required) - set(properties))
        if missing:
            raise InputError(f"JSON schema requires {missing[0]!r}, which is not among its properties")
        for key in properties:
            if not key or any(ch in _FORBIDDEN_IN_STRINGS or ord(ch) > 126 for ch in key):
                raise InputError(f"JSON schema property name {key!r} needs escaping; use plain ASCII names")
        compiled = tuple((key, _compile(value, defs, refs), key in required) for key, value in properties.items())
        return _finish(_Node("object", properties=compiled))
    raise InputError(f"JSON schema type {kind!r} is not supported")


def _finish(node: _Node) -> _Node:
    """Fill in the shortest lengths the budget check needs."""
    kind = node.kind
    if kind == "string":
        node.shortest = 2 + node.min_length
    elif kind == "number" or kind == "any":
        node.shortest = 1
    elif kind == "literal":
        node.shortest = min(map(len, node.literals))
    elif kind == "union":
        node.shortest = min(o.shortest for o in node.options)
    elif kind == "anyobject":
        node.shortest = 2
    elif kind == "array":
        n = node.min_items
        assert node.items is not None  # an array node always has its item schema
        node.shortest = 2 + n * node.items.shortest + max(0, n - 1)
    elif kind == "object":
        # rest[i]: characters to close the object once properties before i are settled and at least one written
        rest = [1] * (len(node.properties) + 1)
        for i in range(len(node.properties) - 1, -1, -1):
            key, value, required = node.properties[i]
            rest[i] = rest[i + 1] + (1 + len(key) + 3 + value.shortest if required else 0)
        node.rest = tuple(rest)
        first = next((i for i, p in enumerate(node.properties) if p[2]), None)
        node.shortest = 2 if first is None else 1 + _property_cost(node, first) + node.rest[first + 1]
    return node


def _property_cost(node: _Node, i: int) -> int:
    key, value, _ = node.properties[i]
    return len(key) + 3 + value.shortest


def _candidates(node: _Node, pos: int) -> Iterable[int]:
    """Properties that may come next: the one at ``pos`` and any after it, if those between are optional."""
    for i in range(pos, len(node.properties)):
        yield i
        if node.properties[i][2]:
            return


# ------------------------------------------------------------------ the automaton
# A state is a tuple of frames, the innermost last; a frame is a tuple starting with its kind.
# ("value", node)                          a value of node starts with the next character
# ("str", node, n)                         inside a string of n characters (n kept only when bounded)
# ("num", node, phase)                     inside a number: sign, zero, int, dot, frac, e, esign, exp
# ("lit", node, prefix)                    inside one of node's literal texts
# ("obj", node, pos, phase, prefix)        object; phase start, key, colon, after, next
# ("any", phase, prefix)                   object of any keys; phase start, key, colon, after, next
# ("arr", node, count, phase)              array; phase start, after, next

State = tuple
_NUMBER_STEPS = {
    "sign": {"0": "zero", **dict.fromkeys("123456789", "int")},
    "zero": {".": "dot", "e": "e", "E": "e"},
    "int": {**dict.fromkeys(_DIGITS, "int"), ".": "dot", "e": "e", "E": "e"},
    "dot": dict.fromkeys(_DIGITS, "frac"),
    "frac": {**dict.fromkeys(_DIGITS, "frac"), "e": "e", "E": "e"},
    "e": {"+": "esign", "-": "esign", **dict.fromkeys(_DIGITS, "exp")},
    "esign": dict.fromkeys(_DIGITS, "exp"),
    "exp": dict.fromkeys(_DIGITS, "exp"),
}
_NUMBER_DONE = {"zero", "int", "frac", "exp"}
_ANY = _finish(_Node("any"))


def initial_state(node: _Node) -> State:
    return (("value", node),)


def feed(state: State, ch: str) -> list[State]:
    """The states after ``ch`` (several only where a union is still undecided; none if ``ch`` is not allowed)."""
    if not state:
        return []
    frame, below = state[-1], state[:-1]
    kind = frame[0]
    if kind == "value":
        return _start_value(below, frame[1], ch)
    if kind == "str":
        node, n = frame[1], frame[2]
        if ch == '"':
            return [below] if n >= node.min_length else []
        if ch in _FORBIDDEN_IN_STRINGS or (node.max_length is not None and n >= node.max_length):
            return []
        bounded = node.min_length or node.max_length is not None
        return [(*below, ("str", node, n + 1))] if bounded else [state]
    if kind == "num":
        node, phase = frame[1], frame[2]
        step = _NUMBER_STEPS[phase].get(ch)
        if step is not None and not (node.integer and step in ("dot", "e")):
            return [(*below, ("num", node, step))]
        return feed(below, ch) if phase in _NUMBER_DONE else []
    if kind == "lit":
        node, prefix = frame[1], frame[2] + ch
        if any(text.startswith(prefix) for text in node.literals):
            return [(*below, ("lit", node, prefix))]
        return feed(below, ch) if frame[2] in node.literals else []
    if kind == "obj":
        return _object(below, frame, ch)
    if kind == "any":
        return _any_object(below, frame, ch)
    if kind == "arr":
        return _array(below, frame, ch)
    raise AssertionError(kind)


def _start_value(below: State, node: _Node, ch: str) -> list[State]:
    kind = node.kind
    if kind == "union":
        out: list[State] = []
        for option in node.options:
            out.extend(s for s in _start_value(below, option, ch) if s not in out)
        return out
    if kind == "any":
        return [s for option in _ANY_OPTIONS for s in _start_value(below, option, ch)]
    if kind == "string":
        return [(*below, ("str", node, 0))] if ch == '"' else []
    if kind == "number":
        if ch == "-":
            return [(*below, ("num", node, "sign"))]
        step = _NUMBER_STEPS["sign"].get(ch)
        return [(*below, ("num", node, step))] if step else []
    if kind == "literal":
        return [(*below, ("lit", node, ch))] if any(t.startswith(ch) for t in node.literals) else []
    if kind == "object":
        return [(*below, ("obj", node, 0, "start", ""))] if ch == "{" else []
    if kind == "anyobject":
        return [(*below, ("any", "start", ""))] if ch == "{" else []
    if kind == "array":
        return [(*below, ("arr", node, 0, "start"))] if ch == "[" else []
    raise AssertionError(kind)


def _object(below: State, frame: tuple, ch: str) -> list[State]:
    _, node, pos, phase, prefix = frame
    if phase in ("start", "next"):
        if ch == '"':
            return [(*below, ("obj", node, pos, "key", ""))]
        closable = phase == "start" and all(not p[2] for p in node.properties[pos:])
        return [below] if ch == "}" and closable else []
    if phase == "key":
        matches = [i for i in _candidates(node, pos) if node.properties[i][0] == prefix]
        if ch == '"':
            return [(*below, ("obj", node, i, "colon", prefix)) for i in matches]
        grown = prefix + ch
        if any(node.properties[i][0].startswith(grown) for i in _candidates(node, pos)):
            return [(*below, ("obj", node, pos, "key", grown))]
        return []
    if phase == "colon":
        if ch != ":":
            return []
        return [(*below, ("obj", node, pos + 1, "after", ""), ("value", node.properties[pos][1]))]
    if phase == "after":
        if ch == ",":
            return [(*below, ("obj", node, pos, "next", ""))] if pos < len(node.properties) else []
        return [below] if ch == "}" and all(not p[2] for p in node.properties[pos:]) else []
    raise AssertionError(phase)


def _any_object(below: State, frame: tuple, ch: str) -> list[State]:
    _, phase, _ = frame
    if phase in ("start", "next"):
        if ch == '"':
            return [(*below, ("any", "key", ""))]
        return [below] if ch == "}" and phase == "start" else []
    if phase == "key":
        if ch == '"':
            return [(*below, ("any", "colon", ""))]
        return [] if ch in _FORBIDDEN_IN_STRINGS else [(*below, frame)]
    if phase == "colon":
        return [(*below, ("any", "after", ""), ("value", _ANY))] if ch == ":" else []
    if phase == "after":
        if ch == ",":
            return [(*below, ("any", "next", ""))]
        return [below] if ch == "}" else []
    raise AssertionError(phase)


def _array(below: State, frame: tuple, ch: str) -> list[State]:
    _, node, count, phase = frame
    if phase == "start" and ch == "]":
        return [below] if node.min_items == 0 else []
    if phase in ("start", "next"):
        if node.max_items is not None and count >= node.max_items:
            return []
        return _start_value((*below, ("arr", node, count + 1, "after")), node.items, ch)
    if phase == "after":
        if ch == ",":
            full = node.max_items is not None and count >= node.max_items
            return [] if full else [(*below, ("arr", node, count, "next"))]
        return [below] if ch == "]" and count >= node.min_items else []
    raise AssertionError(phase)


def cost(state: State) -> int:
    """Fewest characters that complete the document from ``state``."""
    total = 0
    for frame in state:
        kind = frame[0]
        if kind == "value":
            total += frame[1].shortest
        elif kind == "str":
            total += max(0, frame[1].min_length - frame[2]) + 1
        elif kind == "num":
            total += 0 if frame[2] in _NUMBER_DONE else 1
        elif kind == "lit":
            node, prefix = frame[1], frame[2]
            total += min(len(t) for t in node.literals if t.startswith(prefix)) - len(prefix)
        elif kind == "obj":
            total += _object_cost(frame)
        elif kind == "any":
            total += {"start": 1, "key": 4, "colon": 3, "after": 1, "next": 5}[frame[1]]
        elif kind == "arr":
            node, count, phase = frame[1], frame[2], frame[3]
            item = node.items.shortest
            if phase == "start":
                total += node.shortest - 1
            elif phase == "after":
                total += max(0, node.min_items - count) * (1 + item) + 1
            else:  # next: one item is owed, and any others still required
                total += item + max(0, node.min_items - count - 1) * (1 + item) + 1
    return total


def _object_cost(frame: tuple) -> int:
    _, node, pos, phase, prefix = frame
    if phase == "start":
        return node.shortest - 1
    if phase == "after":
        return node.rest[pos]
    if phase == "colon":
        return 1 + node.properties[pos][1].shortest + node.rest[pos + 1]
    if phase == "next":
        return min(_property_cost(node, i) + node.rest[i + 1] for i in _candidates(node, pos))
    # key: the rest of a matching name, its closing quote, the colon and the shortest value
    return min(
        len(node.properties[i][0]) - len(prefix) + 2 + node.properties[i][1].shortest + node.rest[i + 1]
        for i in _candidates(node, pos)
        if node.properties[i][0].startswith(prefix)
    )


_ANY_OPTIONS = (
    _finish(_Node("string")),
    _finish(_Node("number")),
    _finish(_Node("literal", literals=("true", "false", "null"))),
    _finish(_Node("anyobject")),
    # arrays of anything: the item is looked up lazily through the same "any" node
    _finish(_Node("array", items=_ANY)),
)


# ------------------------------------------------------------------ tokens


class _Trie:
    __slots__ = ("children", "tokens")

    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.tokens: list[int] = []


class JsonSchemaConstraint:
    """Which tokens may come next so the generated text stays a prefix of a document valid under ``schema``.

    ``vocabulary`` maps token ids to their texts (tokens whose text is empty or holds a broken
    UTF-8 sequence are never allowed); ``eos_id`` is allowed once the document is complete.
    ``schema=None`` accepts any JSON object.
    """

    def __init__(self, schema: dict[str, Any] | None, vocabulary: dict[int, str], eos_id: int):
        self.root = compile_schema(schema)
        self.eos_id = eos_id
        self.trie = _Trie()
        for token, text in vocabulary.items():
            if not text or "\ufffd" in text:
                continue
            node = self.trie
            for ch in text:
                node = node.children.setdefault(ch, _Trie())
            node.tokens.append(token)
        single = {text for text in vocabulary.values() if len(text) == 1}
        missing = sorted(set('{}[]":,-0123456789.truefalsn') - single)
        if missing:
            raise InputError(f"the tokenizer has no single-character tokens for {missing}; JSON decoding needs them")
        self._states: dict[tuple[int, ...], list[State]] = {(): [initial_state(self.root)]}
        self._texts = vocabulary
        self._options: dict[tuple[State, ...], list[tuple[int, int]]] = {}

    @classmethod
    def for_tokenizer(cls, schema: dict[str, Any] | None, tokenizer: Any) -> JsonSchemaConstraint:
        """The constraint over a Hugging Face tokenizer's vocabulary (its special tokens excluded)."""
        special = set(tokenizer.all_special_ids)
        ids = [i for i in range(len(tokenizer)) if i not in special]
        texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
        if tokenizer.eos_token_id is None:
            raise InputError("JSON decoding needs a tokenizer with an end-of-sequence token")
        return cls(schema, dict(zip(ids, texts)), tokenizer.eos_token_id)

    @property
    def shortest(self) -> int:
        """Fewest characters (hence tokens) of a valid document."""
        return self.root.shortest

    def states(self, generated: tuple[int, ...]) -> list[State]:
        """The automaton's states after the tokens ``generated`` (remembered per prefix)."""
        states = self._states.get(generated)
        if states is None:
            states = self.states(generated[:-1])
            for ch in self._texts.get(generated[-1], ""):
                states = _step(states, ch)
            self._states[generated] = states
        return states

    def allowed(self, generated: tuple[int, ...], budget: int) -> list[int]:
        """Tokens that may follow ``generated`` when at most ``budget`` tokens (this one included) remain."""
        states = self.states(generated)
        if not states or any(not s for s in states):
            return [self.eos_id]
        key = tuple(states)
        options = self._options.get(key)
        if options is None:  # every token that fits, with the fewest characters that finish after it
            options = []
            self._walk(self.trie, states, options)
            self._options[key] = options
        return [token for token, rest in options if rest < budget] or [self.eos_id]

    def _walk(self, trie: _Trie, states: list[State], out: list[tuple[int, int]]) -> None:
        for ch, child in trie.children.items():
            after = _step(states, ch)
            if not after:
                continue
            if child.tokens:
                rest = min(map(cost, after))
                out.extend((token, rest) for token in child.tokens)
            if child.children:
                self._walk(child, after, out)

    def within(self, max_new_tokens: int) -> _Budgeted:
        """This constraint as a :class:`~kgllm.llm.base.Constraint` for ``generate``: documents that
        close within ``max_new_tokens`` tokens."""
        return _Budgeted(self, max_new_tokens)

    def complete(self, text: str) -> bool:
        """Whether ``text`` is a whole document under the schema."""
        states = [initial_state(self.root)]
        for ch in text:
            states = _step(states, ch)
        return any(not s for s in states)


def _step(states: list[State], ch: str) -> list[State]:
    if len(states) == 1:
        return feed(states[0], ch)
    out: list[State] = []
    for state in states:
        out.extend(s for s in feed(state, ch) if s not in out)
    return out


class _Budgeted:
    def __init__(self, constraint: JsonSchemaConstraint, max_new_tokens: int):
        self.constraint = constraint
        self.max_new_tokens = max_new_tokens

    def prefix_allowed_tokens(self, batch_id: int, generated: Sequence[int]) -> Sequence[int]:
        return self.constraint.allowed(tuple(generated), self.max_new_tokens - len(generated))


def generate_json(lm: Any, prompt: str, schema: dict[str, Any] | None, config: GenerationConfig) -> list[str]:
    """``config.num_return_sequences`` JSON documents continuing ``prompt``, each valid under ``schema``
    (any JSON object when ``None``), from a local Hugging Face model (``HFCausalLM``).

    Decoding follows ``config`` (greedy, beams or sampling); stop strings do not apply. Raises
    ``InputError`` for a schema outside the supported subset or one whose shortest document does
    not fit in ``config.max_new_tokens``.
    """
    constraint = JsonSchemaConstraint.for_tokenizer(schema, lm.tokenizer)
    if constraint.shortest > config.max_new_tokens:
        raise InputError(
            f"the shortest JSON document for this schema may need {constraint.shortest} tokens; "
            f"max_tokens is {config.max_new_tokens}"
        )
    return lm.generate(prompt, replace(config, stop=()), constraint=constraint.within(config.max_new_tokens))[0]

"""Query programs: count, yes/no, set operations, superlatives and comparisons over any graph store.

- :mod:`.language`: the typed program language and its text form;
- :mod:`.executor`: read-only, bounded execution over the ``GraphStore`` protocol;
- :mod:`.parser`: question -> program, zero-shot (entity links, schema names, the sentence encoder);
- :mod:`.answerer`: :class:`ProgramAnswerer` and :func:`route`.
"""

from kgllm.pipelines.programs.answerer import ProgramAnswerer, route
from kgllm.pipelines.programs.executor import Executor, ExecutorConfig, ProgramError, ProgramLimitError, Result
from kgllm.pipelines.programs.language import format_program, parse_program
from kgllm.pipelines.programs.parser import Parse, ParserConfig, QuestionParser
from kgllm.pipelines.programs.schema import Schema

__all__ = [
    "Executor",
    "ExecutorConfig",
    "Parse",
    "ParserConfig",
    "ProgramAnswerer",
    "ProgramError",
    "ProgramLimitError",
    "QuestionParser",
    "Result",
    "Schema",
    "format_program",
    "parse_program",
    "route",
]

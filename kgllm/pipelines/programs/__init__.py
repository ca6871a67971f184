"""Query programs: count, yes/no, set operations, superlatives and comparisons over any graph store.

- :mod:`.language`: the typed program language and its text form;
- :mod:`.compiler`: a program as one parameterized SPARQL or Cypher query;
- :mod:`.executor`: read-only, bounded execution: the store runs the compiled query, or the
  program is evaluated over the ``GraphStore`` protocol;
- :mod:`.parser`: question -> program, zero-shot (entity links, schema names, the sentence encoder);
- :mod:`.answerer`: :class:`ProgramAnswerer` and :func:`route`;
- :mod:`.text_to_query`: a user's model writes SPARQL / Cypher, checked before it runs, programs as fallback.
"""

from kgllm.pipelines.programs.answerer import ProgramAnswerer, route
from kgllm.pipelines.programs.compiler import CompiledQuery, compile_program
from kgllm.pipelines.programs.executor import Executor, ExecutorConfig, ProgramError, ProgramLimitError, Result
from kgllm.pipelines.programs.language import format_program, parse_program
from kgllm.pipelines.programs.parser import Parse, ParserConfig, QuestionParser
from kgllm.pipelines.programs.schema import Schema
from kgllm.pipelines.programs.text_to_query import TextToQueryAnswerer, TextToQueryConfig

__all__ = [
    "CompiledQuery",
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
    "TextToQueryAnswerer",
    "TextToQueryConfig",
    "compile_program",
    "format_program",
    "parse_program",
    "route",
]

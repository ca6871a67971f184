"""One exception family for kgllm: catch ``KGLLMError`` to catch them all."""


class KGLLMError(Exception):
    """Root of every error kgllm raises on purpose."""


class ConfigurationError(KGLLMError):
    """A setting, option or keyword argument is wrong or ignored."""


class MissingDependencyError(ConfigurationError):
    """An optional dependency is not installed; the message names the extra."""


class InputError(KGLLMError):
    """User input (a file, a question, a query) is malformed."""


class ParseError(InputError):
    """A data file could not be parsed; ``path`` and ``line`` say where."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class GraphStoreError(KGLLMError):
    """A graph store failed or refused an operation."""


class EntityNotFoundError(GraphStoreError):
    """An entity id is not in the store."""


class StoreUnavailableError(GraphStoreError):
    """A remote store cannot be reached; retrying later may help."""

    retryable = True


class RetrievalError(KGLLMError):
    """Encoding, indexing or linking failed."""


class ModelError(KGLLMError):
    """A language model could not be loaded, trained or run."""


class QueryRefusedError(InputError):
    """A query (SPARQL, Cypher) that is malformed, writes, or reaches outside the graph; it was not run."""


class QueryLimitError(GraphStoreError):
    """A query that ran past its time limit or would return more rows than allowed; it was stopped."""


class ModelUnavailableError(ModelError):
    """A model server timed out, could not be reached or failed on its side; retrying later may help."""

    retryable = True


class ModelOutputError(ModelError):
    """A model answered with text that cannot be used (empty, or citing no given fact); asking again may help."""

    retryable = True

"""One settings object; every component is built from it. Env vars: ``KGLLM_*``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    import os

    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kgllm"


class Settings(BaseSettings):
    """Configuration for a kgllm session. Each field reads ``KGLLM_<NAME>`` from the environment."""

    model_config = SettingsConfigDict(env_prefix="KGLLM_", env_file=None, extra="forbid")

    cache_dir: Path = Field(
        default_factory=default_cache_dir, description="Where trained models and indexes are cached."
    )
    store: str = Field("rdflib", description="Graph store back-end: a registered name (rdflib, neo4j, or a plugin's).")
    graph: Path | None = Field(
        None, description="Graph file (rdflib store) or folder (oxigraph store); default: the bundled demo graph."
    )
    neo4j_uri: str = Field("bolt://localhost:7687", description="Bolt URI of the Neo4j (or compatible) server.")
    neo4j_user: str = Field("neo4j", description="Bolt user name.")
    neo4j_password: str = Field("", description="Bolt password.")
    neo4j_database: str | None = Field(None, description="Database name; the server default when unset.")
    encoder: str = Field(
        "minilm", description="Sentence encoder: 'minilm' (bundled all-MiniLM-L6-v2) or a local model path."
    )
    encoder_backend: Literal["auto", "torch", "onnx"] = Field(
        "auto",
        description="Runs the encoder in torch or ONNX Runtime (same vectors, a third of the CPU per question); "
        "'auto': ONNX Runtime on CPU.",
    )
    llm: str = Field(
        "auto",
        description="Language-model backend: a registered name (hf, openai, or a plugin's); "
        "'auto' is openai when openai_base_url is set, else hf.",
    )
    model: Path | None = Field(
        None, description="Local Hugging Face causal LM directory; default: the model trained on the graph."
    )
    planner: Path | None = Field(
        None,
        description="A relation-path planner made by `kgllm train planner`: the path reasoner ranks plans with it, "
        "at the weight and floor chosen when it was trained.",
    )
    construction_data: Path | None = Field(
        None,
        description="WebNLG-style JSON lines to train your own extraction and KG-to-text adapters on "
        "(once, then cached), e.g. the WebNLG train split; default: the adapters shipped with kgllm.",
    )
    train_minutes: float = Field(4.0, gt=0, description="Time budget for training the default model on first use.")
    device: str = Field(
        "cpu", description="Torch device for the language model and the encoder ('cpu', 'cuda', 'cuda:1', 'mps')."
    )
    threads: int = Field(2, ge=1, description="CPU threads for torch.")
    max_hops: int = Field(2, ge=1, le=4, description="Longest relation path the reasoner follows.")
    max_fanout: int = Field(
        2000,
        ge=1,
        description="Most edges read from one entity in one step (bounds hub entities; a hub's are spread "
        "over all its relations).",
    )
    index_facts: bool = Field(
        True,
        description="Index every fact of the graph for nearest-fact search; false defers it (entity labels are "
        "indexed either way, and the facts near a question's entities are scored as it is asked).",
    )
    beam_width: int = Field(
        0,
        ge=0,
        description="0: the reasoner ranks every relation path; N: it grows only the best N partial paths per hop.",
    )
    lm_weight: float = Field(
        0.005,
        ge=0,
        description="Weight of the language model's plan likelihood in ranking plans "
        "(the default suits the small model trained here; raise it for a stronger model).",
    )
    api_key: str | None = Field(
        None,
        description="When set, `kgllm serve` requires the header 'Authorization: Bearer <key>' "
        "(the page and /health stay open).",
    )
    openai_base_url: str | None = Field(
        None,
        description="Base URL of an OpenAI-compatible server (e.g. http://host:8000/v1); "
        "when set, the language model runs there instead of locally.",
    )
    openai_model: str | None = Field(None, description="Model name on that server; default: the first one it lists.")
    openai_api_key: str | None = Field(None, description="Bearer key for that server.")

    @field_validator("store")
    @classmethod
    def _known_store(cls, name: str) -> str:
        from kgllm.graph import stores

        return stores.check(name)

    @field_validator("llm")
    @classmethod
    def _known_llm(cls, name: str) -> str:
        from kgllm.llm import models

        return name.lower() if name.lower() == "auto" else models.check(name)

    def backend_name(self) -> str:
        """The language-model backend in use, with 'auto' decided."""
        if self.llm == "auto":
            return "openai" if self.openai_base_url else "hf"
        return self.llm

"""A sentence encoder's transformer exported to ONNX and run by ONNX Runtime, on CPU.

On CPU, torch spends most of a short text's encoding on per-operator overhead, not arithmetic:
all-MiniLM-L6-v2 takes about 13 ms for one question on one thread, ONNX Runtime about 5 ms for
the same vector. Questions are encoded one at a time (every ``/ask``), so this is most of a
request's CPU. Long batches (indexing) cost the same on both.

The transformer is traced once per model and library versions and cached as a folder under
the cache directory (built once, even by concurrent processes). Before a trace is cached,
ONNX Runtime's token vectors for a padded batch are compared with torch's: a trace that does
not reproduce them is refused, never used.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from kgllm.cache import cached_artifact
from kgllm.exceptions import RetrievalError

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
OPSET = 17
# Texts of different lengths, so that the trace sees a padded batch: traced on one unpadded text,
# transformers would drop the attention mask from the graph.
PROBE = ["Chad", "Which subregions are the neighbours of the neighbours of Chad located in?"]
TOLERANCE = 1e-4  # largest difference allowed between torch's and ONNX Runtime's token vectors


def export_key(model_dir: Path) -> str:
    """A key for the trace of the model in ``model_dir``: its weights and config, and the versions
    of the libraries that trace it."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.suffix in {".safetensors", ".bin", ".json"} and path.is_file():
            digest.update(path.name.encode())
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    for package in ("torch", "transformers", "onnx"):
        digest.update(importlib.metadata.version(package).encode())
    return digest.hexdigest()[:16]


class OnnxTransformer:
    """Token vectors from ONNX Runtime for the features the sentence-transformers model prepares.

    ``threads`` follows torch's setting at each call (a session per thread count), so that the
    server's one-thread-per-request rule holds for both back-ends.
    """

    def __init__(self, path: Path, input_names: list[str]):
        self.path = path
        self.input_names = input_names
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, features: dict[str, Any]) -> np.ndarray:
        inputs = {name: features[name].numpy().astype(np.int64) for name in self.input_names}
        return self._session().run(None, inputs)[0]

    def _session(self) -> Any:
        import onnxruntime
        import torch

        threads = torch.get_num_threads()
        with self._lock:
            if threads not in self._sessions:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                # idle threads sleep instead of spinning, which would take the cores from torch's next call
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[threads] = onnxruntime.InferenceSession(
                    str(self.path), options, providers=["CPUExecutionProvider"]
                )
            return self._sessions[threads]


def onnx_transformer(model: Any, model_dir: Path, name: str, cache_dir: Path) -> OnnxTransformer:
    """The ONNX form of ``model``'s first module (a sentence-transformers ``Transformer``, loaded
    from ``model_dir``), traced and checked on first use, then read from ``cache_dir``."""
    transformer = model[0]
    input_names = list(transformer.tokenizer.model_input_names)
    folder = cached_artifact(
        cache_dir / "encoders" / f"{name}-{export_key(model_dir)}",
        lambda staging: _export(model, input_names, staging / MODEL_FILE),
        marker=MODEL_FILE,
    )
    return OnnxTransformer(folder / MODEL_FILE, input_names)


def _token_vectors(hf_model: Any, input_names: list[str]) -> Any:
    """The Hugging Face model as a module of positional token tensors (what tracing needs)."""
    import torch

    class TokenVectors(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = hf_model

        def forward(self, *tensors: Any) -> Any:
            return self.inner(**dict(zip(input_names, tensors)), return_dict=True).last_hidden_state

    return TokenVectors().eval()


def _export(model: Any, input_names: list[str], target: Path) -> None:
    import torch

    log.info("tracing the sentence encoder to ONNX (once per model and library versions)")
    from kgllm.retrieval.encoder import tokenized

    features = tokenized(model, PROBE)
    tensors = tuple(features[name] for name in input_names)
    wrapped = _token_vectors(model[0].auto_model, input_names)
    axes = {name: {0: "batch", 1: "tokens"} for name in [*input_names, "token_vectors"]}
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants; the check below is what counts
        torch.onnx.export(
            wrapped,
            tensors,
            str(target),
            input_names=input_names,
            output_names=["token_vectors"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        expected = wrapped(*tensors).numpy()
    _check(OnnxTransformer(target, input_names)(features), expected, features["attention_mask"].numpy())


def _check(got: np.ndarray, expected: np.ndarray, mask: np.ndarray) -> None:
    real = mask.astype(bool)  # padded positions are never read by pooling
    error = float(np.abs(got[real] - expected[real]).max())
    if error > TOLERANCE:
        raise RetrievalError(
            f"the ONNX trace of the sentence encoder differs from torch by {error:.2g} (allowed {TOLERANCE}); "
            "use encoder_backend='torch'"
        )

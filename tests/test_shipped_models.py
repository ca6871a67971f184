"""The construction models shipped inside the package: intact, and good enough to extract on first use."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from kgllm.exceptions import ConfigurationError, ModelError
from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.construction.constructor import KGConstructor
from kgllm.pipelines.construction.extraction import load_extractor
from kgllm.pipelines.construction.kg2text import load_verbalizer
from kgllm.pipelines.construction.shipped import MANIFEST, MODELS_DIR, shipped_models
from kgllm.settings import Settings


def test_manifest_lists_every_shipped_file_with_its_sha256():
    listed = json.loads((MODELS_DIR / MANIFEST).read_text(encoding="utf-8"))["files"]
    on_disk = {p.relative_to(MODELS_DIR).as_posix() for p in MODELS_DIR.rglob("*") if p.is_file()} - {MANIFEST}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((MODELS_DIR / name).read_bytes()).hexdigest() == digest, name
    for part in ("base/model.safetensors", "extract/adapter_model.safetensors", "verbalize/adapter_model.safetensors"):
        assert part in listed


def test_a_damaged_file_is_named_when_loading(tmp_path):
    copy = tmp_path / "construction"
    shutil.copytree(MODELS_DIR, copy)
    assert shipped_models(copy).extract == copy / "extract"
    weights = copy / "extract" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="extract/adapter_model.safetensors: checksum"):
        shipped_models(copy)
    weights.unlink()
    with pytest.raises(ModelError, match="extract/adapter_model.safetensors: listed in MANIFEST.json but missing"):
        shipped_models(copy)


def test_shipped_extractor_reads_facts_of_webnlg_style_sentences(tmp_path):
    """The shipped models are trained on WebNLG: sentences in its style give its relations."""
    settings = Settings(cache_dir=tmp_path / "cache", construction_data=None, model=None)
    graph = tmp_path / "g.ttl"
    store = RDFLibStore(graph)
    document = tmp_path / "notes.txt"
    document.write_text("Alan Shepard was born in New Hampshire.\n", encoding="utf-8")
    constructor = KGConstructor(store, load_extractor(settings))
    [result] = constructor.run([document], write=False, progress=False)
    facts = {(store.label(t.head), store.label(t.relation), store.label(t.tail)) for t in result.added}
    assert ("Alan Shepard", "Birth Place", "New Hampshire") in facts, facts
    assert not graph.exists()  # a dry run writes nothing


def test_shipped_verbalizer_says_each_fact_with_its_names(tmp_path):
    verbalizer = load_verbalizer(Settings(cache_dir=tmp_path / "cache", construction_data=None, model=None))
    [text] = verbalizer.verbalize([[("Chad", "capital", "N'Djamena"), ("Chad", "location", "Africa")]])
    assert all(name in text for name in ("Chad", "N'Djamena", "Africa")), text


def test_a_base_model_of_ones_own_needs_a_training_file(tmp_path):
    settings = Settings(cache_dir=tmp_path / "cache", construction_data=None, model=tmp_path)
    with pytest.raises(ConfigurationError, match="--train FILE"):
        load_extractor(settings)

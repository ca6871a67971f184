"""Entity resolution tiers and relation normalization against a real store and the real encoder."""

from __future__ import annotations

import pytest

from kgllm.graph.rdflib_store import RDFLibStore
from kgllm.pipelines.construction.resolution import (
    EntityResolver,
    RelationNormalizer,
    ResolverConfig,
    acronym,
    new_entity_id,
    new_relation_id,
)
from kgllm.types import Entity, Triple

EX = "http://example.org/"
USA, CAR, KENYA, EAST_ASIA, AUSTRIA, AUSTRALIA = (
    EX + n for n in ("usa", "car", "kenya", "eastern_asia", "austria", "australia")
)
IN, BORDERS = EX + "locatedIn", EX + "neighborOf"


@pytest.fixture
def store():
    store = RDFLibStore()
    store.add(
        [
            Triple(KENYA, IN, EX + "africa"),
            Triple(CAR, BORDERS, EX + "chad"),
            Triple(USA, IN, EX + "americas"),
            Triple(EAST_ASIA, IN, EX + "asia"),
            Triple(AUSTRIA, IN, EX + "europe"),
            Triple(AUSTRALIA, IN, EX + "oceania"),
        ],
        [
            Entity(USA, "United States", aliases=("United States of America",)),
            Entity(CAR, "Central African Republic"),
            Entity(EAST_ASIA, "Eastern Asia"),
            Entity(IN, "located in"),
            Entity(BORDERS, "neighbor of"),
        ],
    )
    return store


@pytest.mark.parametrize(
    "mention, entity, method",
    [
        ("united_states", USA, "exact"),
        ("CENTRAL AFRICAN REPUBLIC", CAR, "exact"),
        ("CAR", CAR, "acronym"),
        ("Kenia", KENYA, "fuzzy"),
        ("Cental African Republic", CAR, "fuzzy"),
        ("Republic Central African", CAR, "fuzzy"),
        ("East Asia", EAST_ASIA, "embedding"),
    ],
)
def test_each_tier_merges_a_perturbed_name(store, encoder, mention, entity, method):
    resolved = EntityResolver(store, encoder).resolve([mention])[mention]
    assert (resolved.entity, resolved.merge.method) == (entity, method)
    assert resolved.label == store.label(entity)


def test_ambiguous_or_unknown_names_stay_new_entities(store, encoder):
    resolved = EntityResolver(store, encoder).resolve(["Austrlia", "Atlantis", "Africa"])
    assert resolved["Austrlia"].entity == new_entity_id("Austrlia")  # one typo from Austria and from Australia
    assert resolved["Atlantis"].merge is None and resolved["Atlantis"].entity == new_entity_id("Atlantis")
    assert resolved["Africa"].entity == EX + "africa" and resolved["Africa"].merge is None


def test_names_in_one_batch_join_the_longest_name_when_the_evidence_is_unique(store, encoder):
    resolved = EntityResolver(store, encoder).resolve(
        ["Holmes", "Sherlock Holmes", "sherlock_holmes", "Watson", "John Watson"]
    )
    holmes = new_entity_id("Sherlock Holmes")
    assert {m: r.entity for m, r in resolved.items() if r.entity == holmes} == {
        "Holmes": holmes,
        "Sherlock Holmes": holmes,
        "sherlock_holmes": holmes,
    }
    assert resolved["Holmes"].merge.method == "partial" and resolved["sherlock_holmes"].merge.method == "exact"
    assert resolved["Watson"].entity == resolved["John Watson"].entity
    again = EntityResolver(store, encoder).resolve(["Holmes", "Sherlock Holmes", "Mycroft Holmes"])
    assert again["Holmes"].entity == new_entity_id("Holmes")  # two Holmeses: no merge


def test_a_merge_kept_apart_is_not_made_again(store, encoder):
    config = ResolverConfig(keep_apart={("car", CAR)})
    assert EntityResolver(store, encoder, config).resolve(["CAR"])["CAR"].entity == new_entity_id("CAR")


def test_relations_map_to_the_store_vocabulary_or_are_minted(store, encoder):
    normalizer = RelationNormalizer(store, encoder)
    assert normalizer.normalize("locatedIn")[:2] == (IN, "exact")
    assert normalizer.normalize("located in")[:2] == (IN, "exact")
    assert normalizer.normalize("neighbour")[:2] == (BORDERS, "embedding")
    assert normalizer.normalize("birth place") == (new_relation_id("birthPlace"), "new", 0.0)
    assert new_relation_id("birth place").endswith("/birthPlace") and new_relation_id("isPartOf").endswith("/isPartOf")


def test_acronyms_skip_small_words():
    assert acronym("United States of America") == "USA"
    assert acronym("Central African Republic") == "CAR"

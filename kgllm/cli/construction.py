"""What ``kgllm extract``, ``kgllm unmerge`` and ``kgllm describe`` do, printed with rich."""

from __future__ import annotations

from pathlib import Path

from kgllm.cli.output import make_console
from kgllm.exceptions import ConfigurationError
from kgllm.graph import open_store
from kgllm.graph.base import GraphStore
from kgllm.settings import Settings

console = make_console()


def construction_data(train: Path | None, settings: Settings) -> Path | None:
    """The training file of the construction adapters: ``--train``, else ``KGLLM_CONSTRUCTION_DATA``;
    ``None`` (the shipped adapters) when neither is given."""
    path = train or settings.construction_data
    if path is not None and not path.is_file():
        raise ConfigurationError(f"{path}: no such training file for the construction adapters")
    return path


def merge_log_path(store: GraphStore, settings: Settings) -> Path:
    return store.index_dir(settings.cache_dir) / "merges.jsonl"


def run_extract(
    files: list[Path],
    graph: Path | None,
    store: str | None,
    schema: Path | None,
    write: bool,
    delete: bool,
    force: bool,
    train: Path | None,
    settings: Settings,
    review: bool = False,
) -> None:
    from kgllm.api import connect
    from kgllm.pipelines.construction.constructor import KGConstructor, delete_document, read_schema
    from kgllm.pipelines.construction.extraction import load_extractor
    from kgllm.retrieval.encoder import encoder_from_settings

    kg = open_store(graph, store=store, settings=settings, writable=True)
    rules = read_schema(schema) if schema is not None else None
    if delete:
        results = [delete_document(kg, f) for f in files]
    else:
        extractor = load_extractor(settings, train, rules.relations if rules else None)
        constructor = KGConstructor(
            kg, extractor, encoder_from_settings(settings), rules, merge_log=merge_log_path(kg, settings)
        )
        results = constructor.run(files, write=write, force=force)
    for result in results:
        print_result(kg, result, verbose=not write)
    changed = write and any(r.added or r.removed for r in results)
    if changed:
        connect(kg, use_model=False, settings=settings, progress=False)  # brings the FAISS indexes in step
    if review:
        queued = queue_for_review(kg, results, settings)
        console.print(f"{queued} facts queued for review (kgllm serve --graph ..., then the page's Review view)")
    failed = sum(r.status == "failed" for r in results)
    console.print(
        f"{len(results)} documents: {sum(len(r.added) for r in results)} triples "
        f"{'added' if write else 'would be added'}, {sum(len(r.removed) for r in results)} removed, "
        f"{sum(len(r.merges) for r in results)} merges, {failed} failed"
        + ("; retrieval indexes are up to date" if changed else "")
    )


def queue_for_review(kg: GraphStore, results, settings: Settings) -> int:
    """Put a dry run's facts on the graph's review queue; returns how many facts were new there."""
    from kgllm.graph.review import ReviewQueue

    queue = ReviewQueue.for_store(kg, settings.cache_dir)
    queued = 0
    for result in results:
        if result.proposed:
            triples, records, texts = zip(*result.proposed)
            queued += len(queue.propose(kg, triples, records, result.new_entities, texts))
    return queued


def print_result(kg: GraphStore, result, verbose: bool) -> None:
    if result.status == "failed":
        console.print(
            f"[red]{result.error if result.path in result.error else f'{result.path}: {result.error}'}[/]",
            highlight=False,
        )
        return
    console.print(
        f"[bold]{result.path}[/]: {result.status}, {len(result.added)} new triples, "
        f"{len(result.removed)} removed, {len(result.merges)} merges, {len(result.skipped)} skipped"
        + (f" ({result.chunks} chunks)" if result.chunks else ""),
        highlight=False,
    )
    if not verbose:
        return
    for t in result.added:
        console.print(f"  + {kg.label(t.head)} [cyan]{kg.label(t.relation)}[/] {kg.label(t.tail)}", highlight=False)
    for merge in result.merges:
        console.print(
            f"  = {merge.mention!r} -> {kg.label(merge.entity)} ({merge.method}, {merge.score:.2f})", highlight=False
        )
    for relation in result.new_relations:
        console.print(f"  new relation {kg.label(relation)}", highlight=False)
    for reason in result.skipped:
        console.print(f"  [dim]skipped {reason}[/]", highlight=False)


def run_unmerge(mention: str, graph: Path | None, store: str | None, train: Path | None, settings: Settings) -> None:
    """Keep ``mention`` apart from the entities it was merged into, and re-extract the documents concerned."""
    from kgllm.pipelines.construction.constructor import undo_merges

    kg = open_store(graph, store=store, settings=settings, writable=True)
    undone = undo_merges(merge_log_path(kg, settings), mention)
    if not undone:
        console.print(f"no merge of {mention!r} is logged")
        return
    documents = sorted({Path(e["source"].rsplit("@", 1)[0]) for e in undone})
    console.print(
        f"{mention!r} is kept apart from {len({e['entity'] for e in undone})} entities; "
        f"re-extracting {len(documents)} documents"
    )
    run_extract(
        [d for d in documents if d.is_file()],
        graph,
        store,
        None,
        write=True,
        delete=False,
        force=True,
        train=train,
        settings=settings,
    )


def run_describe(entity: str, graph: Path | None, store: str | None, train: Path | None, settings: Settings) -> None:
    from kgllm.exceptions import EntityNotFoundError
    from kgllm.pipelines.construction.kg2text import entity_facts, load_verbalizer

    kg = open_store(graph, store=store, settings=settings)
    found = kg.entity(entity) or next(iter(kg.find_by_label(entity) or kg.search(entity, 1)), None)
    if found is None:
        raise EntityNotFoundError(f"no entity is named {entity!r} in the graph")
    facts = entity_facts(kg, found.id)
    if not facts:
        console.print(f"{found.label}: the graph holds no facts about it")
        return
    text = load_verbalizer(settings, train).verbalize([facts])[0]
    console.print(f"[bold]{found.label}[/]: {text}", highlight=False)
    for s, r, o in facts:
        console.print(f"  [dim]{s} [cyan]{r}[/] {o}[/]", highlight=False)

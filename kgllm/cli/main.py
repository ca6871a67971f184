"""The ``kgllm`` command line: load graphs, ask questions, train the model, run the demo."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.tree import Tree

from kgllm.cli.llm import list_adapters, train_app
from kgllm.cli.output import make_console
from kgllm.exceptions import ConfigurationError, KGLLMError
from kgllm.settings import Settings

app = typer.Typer(
    help="Knowledge-graph-augmented language models: answers with evidence from your graph.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = make_console()
errors = make_console(stderr=True)

DEMO_QUESTIONS = (
    "Which countries border Chad?",
    "In which region is Kenya?",
    "Which subregion are the neighbours of Chad located in?",
    "What is the capital of France?",
)

GraphOption = Annotated[
    Optional[Path],
    typer.Option("--graph", "-g", help="Graph file (Turtle, N-Triples, JSON-LD, TSV, CSV); default: the demo graph."),
]
StoreOption = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        help=(
            "A registered store: 'rdflib' (embedded, default), "
            "'neo4j' (Bolt server from KGLLM_NEO4J_* settings) or a plugin's."
        ),
    ),
]
TrainDataOption = Annotated[
    Optional[Path],
    typer.Option(
        "--train",
        help="WebNLG-style JSON lines to train your own adapter on (once, then cached); default: "
        "KGLLM_CONSTRUCTION_DATA, else the adapter shipped with kgllm.",
    ),
]
NoModelOption = Annotated[
    bool, typer.Option("--no-model", help="Answer with the encoder and the graph only (no language model).")
]
RestartOption = Annotated[
    bool,
    typer.Option(
        "--restart",
        help="Drop output lines whose query is no longer in the input (or the whole output, when written with "
        "other settings); lines still current are kept. Without it the job refuses such an output.",
    ),
]
RepairOption = Annotated[
    bool,
    typer.Option("--repair", help="Drop corrupt output lines (reported with their line numbers) and resume."),
]
RayOption = Annotated[
    Optional[str],
    typer.Option(
        "--ray",
        help="Run shards of the job on a Ray cluster: 'auto' (the cluster this node joined), its address, "
        "or 'local' (Ray on this machine). This process still writes every line.",
    ),
]


def main() -> None:
    """Entry point that turns kgllm's errors into one line on stderr."""
    try:
        app()
    except KGLLMError as exc:
        errors.print(f"[bold red]error:[/] {' '.join(str(exc).split())}", highlight=False, soft_wrap=True)
        sys.exit(1)


def _print_version(value: bool) -> None:
    if value:
        from kgllm import __version__

        console.print(f"kgllm {__version__}")
        raise typer.Exit()


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def load(
    source: Annotated[Path, typer.Argument(help="File to load: .tsv/.txt triples, .csv with a header, or RDF.")],
    into: Annotated[
        Optional[Path],
        typer.Option("--into", help="Graph to load into: an RDF file, or an oxigraph folder (created if missing)."),
    ] = None,
    store: StoreOption = None,
    format: Annotated[
        Optional[str], typer.Option("--format", help="tsv, csv, turtle, nt, json-ld, xml (default: from the suffix).")
    ] = None,
    index: Annotated[bool, typer.Option(help="Also build the retrieval indexes.")] = True,
) -> None:
    """Load a file of triples into a store (all or nothing) and index it."""
    from kgllm.api import connect
    from kgllm.graph import open_store
    from kgllm.graph.loaders import load_report

    settings = Settings()
    target = open_store(into, store=store, settings=settings, writable=True)
    with console.status(f"loading {source}"):
        report = load_report(target, source, format=format)
    console.print(f"{report.line()} ({target.count_triples()} triples in the store)")
    if index:
        connect(target, use_model=False, settings=settings)
        console.print("retrieval indexes are up to date")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, in plain language.")],
    graph: GraphOption = None,
    store: StoreOption = None,
    no_model: NoModelOption = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as one JSON object.")] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Also show the relation paths considered and their scores, or the query program run."
        ),
    ] = False,
    picture: Annotated[
        Optional[Path], typer.Option("--picture", help="Save the evidence subgraph as a .png or .svg picture.")
    ] = None,
    verbalize: Annotated[
        bool, typer.Option("--verbalize", help="Also say the best evidence path in words (the KG-to-text adapter).")
    ] = False,
    train: TrainDataOption = None,
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            help="auto (chosen from the question's shape), paths (relation chains), programs (counts, "
            "yes/no, sets, comparisons), generate (the model writes the answer from retrieved facts, "
            "citing them as [n]), or another answerer the session has.",
        ),
    ] = "auto",
    stream: Annotated[
        bool,
        typer.Option(
            "--stream",
            help="Print the answer as it is written (with --json: one JSON line per piece, then the answer).",
        ),
    ] = False,
) -> None:
    """Answer a question from the graph, with the paths that support the answer."""
    from kgllm.api import connect

    if not question.strip():
        raise typer.BadParameter("the question is empty")
    session = connect(graph, store=store, use_model=not no_model, progress=not as_json)
    if stream:
        answer, streamed = _streamed_answer(session.ask_stream(question, mode), question, as_json)
    else:
        answer, streamed = session.ask(question, mode), False
    if as_json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False))
    elif not streamed:
        _print_answer(answer)
    if explain and not as_json:
        _print_plans(answer)
        _print_program(answer)
    if verbalize and not as_json:
        from kgllm.cli.construction import construction_data
        from kgllm.pipelines.construction.kg2text import answer_facts, load_verbalizer

        if facts := answer_facts(answer):
            settings = Settings()
            verbalizer = load_verbalizer(settings, construction_data(train, settings))
            console.print(
                f"[bold]In words:[/] {verbalizer.verbalize([facts])[0]}",
                highlight=False,
            )
    if picture is not None:
        from kgllm.explain import save_picture

        errors.print(f"evidence picture saved to {save_picture(answer, picture)}")


app.add_typer(train_app, name="train")
app.command("adapters")(list_adapters)


@app.command()
def check(
    text: Annotated[str, typer.Argument(help="The text to check, or a file holding it.")],
    graph: GraphOption = None,
    store: StoreOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the claims as one JSON object.")] = False,
    extractor: Annotated[
        bool,
        typer.Option("--extractor", help="Also read triples with the construction extractor (trained on first use)."),
    ] = False,
    train: TrainDataOption = None,
) -> None:
    """Check what a text claims against the graph: each claim supported, contradicted or not in the graph."""
    from kgllm.api import connect
    from kgllm.pipelines.enhance.claims import ClaimChecker, read_text

    content = read_text(text)
    if not content.strip():
        raise typer.BadParameter("the text is empty")
    session = connect(graph, store=store, use_model=False, progress=not as_json)
    if extractor:
        from kgllm.cli.construction import construction_data
        from kgllm.pipelines.construction.extraction import load_extractor

        settings = Settings()
        found = load_extractor(settings, construction_data(train, settings), progress=not as_json)
        report = ClaimChecker(session.store, session.retriever, found).check(content)
    else:
        report = session.check(content)
    if as_json:
        print(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    colours = {"supported": "green", "contradicted": "red", "not_in_graph": "yellow"}
    for claim in report.to_dict()["claims"]:
        colour = colours[claim["status"]]
        console.print(
            f"[{colour}]{claim['status']:>12}[/]  {claim['text']}  [dim]{claim['reason']}[/]", highlight=False
        )
        for triple in claim["triples"]:
            for fact in triple["evidence"]:
                console.print(f"{'':14}[dim]graph: {' — '.join(fact)}[/]", highlight=False)


@app.command()
def demo(no_model: NoModelOption = False) -> None:
    """Load the demo geography graph, index it, make the model ready and answer demo questions."""
    from kgllm.api import connect

    started = time.perf_counter()
    session = connect(use_model=not no_model)
    console.print(
        f"[dim]demo graph: {session.store.count_triples()} facts, {session.store.count_entities()} entities; "
        f"ready in {time.perf_counter() - started:.1f} s[/]"
    )
    for question in DEMO_QUESTIONS:
        _print_answer(session.ask(question))


@app.command()
def run(
    job_file: Annotated[Path, typer.Argument(help="A job file, e.g. pipelines/ask-demo.yaml.")],
    restart: RestartOption = False,
    repair: RepairOption = False,
    ray: RayOption = None,
) -> None:
    """Run a batch job described in YAML; an interrupted job resumes where it stopped."""
    from kgllm.api import connect
    from kgllm.jobs import read_job, run_ask_job

    job = read_job(job_file)
    if job.job == "complete":
        from kgllm.pipelines.completion.jobs import open_and_complete

        console.print(open_and_complete(job, Settings(), restart=restart, repair=repair, ray=ray))
        return
    started = time.perf_counter()
    session = None if ray else connect(job.graph, store=job.store, use_model=job.use_model)
    counts = run_ask_job(job, session, restart=restart, repair=repair, ray=ray)
    seconds = time.perf_counter() - started
    console.print(
        f"{counts['answered']} questions answered, {counts['skipped']} already done, in {seconds:.1f} s -> {job.output}"
    )


@app.command()
def serve(
    graph: GraphOption = None,
    store: StoreOption = None,
    no_model: NoModelOption = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
    load_if_empty: Annotated[
        Optional[Path],
        typer.Option("--load-if-empty", help="Load this graph file into the store first when it holds no triples."),
    ] = None,
    wait: Annotated[
        float, typer.Option("--wait", help="Seconds to keep trying while the store's server cannot be reached.")
    ] = 0.0,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve on a non-loopback --host without an API key (KGLLM_API_KEY); refused otherwise.",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (/ask, graph browsing, OpenAI-compatible /v1), its docs (/docs) and the web page (/).

    A --host other than loopback needs an API key (KGLLM_API_KEY), or --insecure."""
    from kgllm.api import connect
    from kgllm.server import create_app
    from kgllm.server import serve as run_server
    from kgllm.server.run import check_exposure
    from kgllm.server.startup import load_if_empty as load_once
    from kgllm.server.startup import wait_for_store

    settings = Settings()
    check_exposure(host, settings.api_key or None, insecure)
    if insecure and not settings.api_key:
        errors.print(f"[bold red]warning:[/] serving on {host} with no API key (--insecure)", highlight=False)
    kg = wait_for_store(graph, store or settings.store, settings, wait_seconds=wait)
    if load_if_empty is not None:
        load_once(kg, load_if_empty)
    session = connect(kg, use_model=not no_model, settings=settings)
    console.print(
        f"serving {session.store.count_triples()} facts on http://{host}:{port} "
        f"(page: /, API docs: /docs{', API key required' if settings.api_key else ''})"
    )
    run_server(create_app(session, api_key=settings.api_key or None), host, port)


@app.command()
def mcp(
    transport: Annotated[
        str, typer.Option("--transport", help="'stdio' (the agent starts this command) or 'http' (streamable HTTP).")
    ] = "stdio",
    graph: GraphOption = None,
    store: StoreOption = None,
    no_model: NoModelOption = False,
    host: Annotated[str, typer.Option("--host", help="Address to listen on, with --transport http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on, with --transport http.")] = 8001,
    train_completion: Annotated[
        bool,
        typer.Option(
            "--train-completion", help="Train the model of the complete tool before serving, if none is cached."
        ),
    ] = False,
    scorers: Annotated[
        Optional[str],
        typer.Option(
            "--scorers",
            help="Re-rankers of the complete tool, as for `kgllm complete` (default: rules,lm,encoder; "
            "rules,encoder with --no-model).",
        ),
    ] = None,
    kge_seconds: Annotated[
        float, typer.Option("--kge-seconds", help="Training budget of the complete tool's structural model.")
    ] = 60.0,
) -> None:
    """Serve the graph to agents over MCP: tools ask, search, entity, neighbours and complete.

    Over HTTP, a set KGLLM_API_KEY makes every request need 'Authorization: Bearer <key>'."""
    from kgllm.api import connect
    from kgllm.integrations.mcp import TRANSPORTS, GraphTools, completion_config, create_server
    from kgllm.integrations.mcp import serve as run_server

    if transport not in TRANSPORTS:
        raise typer.BadParameter(f"--transport must be {' or '.join(TRANSPORTS)}, not {transport!r}")
    default = "rules,encoder" if no_model else "rules,lm,encoder"
    names = [s.strip() for s in (scorers or default).split(",") if s.strip() and s.strip() != "none"]
    session = connect(graph, store=store, use_model=not no_model, progress=False)
    tools = GraphTools(session, completion_config(names, kge_seconds))
    if train_completion:
        started = time.perf_counter()
        errors.print("loading or training the completion model ...")
        name = tools.train_completion()
        errors.print(f"completion model {name} ready in {time.perf_counter() - started:.1f} s", highlight=False)
    api_key = session.settings.api_key if transport == "http" else None
    where = f"http://{host}:{port}/mcp{', API key required' if api_key else ''}" if transport == "http" else "stdio"
    errors.print(f"serving {session.store.count_triples()} facts over MCP on {where}", highlight=False)
    run_server(create_server(tools), transport, host, port, api_key=api_key)


@app.command()
def complete(
    queries: Annotated[
        str,
        typer.Option(
            "--queries",
            "-q",
            help="TSV of 'head<TAB>relation<TAB>?' or '?<TAB>relation<TAB>tail' (ids or labels), or 'all'.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="JSON lines, one per query; an interrupted job resumes.")],
    graph: GraphOption = None,
    store: StoreOption = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Predictions per query.")] = 10,
    write_back: Annotated[
        bool, typer.Option("--write-back", help="Add the predictions to the store, marked as predicted.")
    ] = False,
    review: Annotated[
        bool,
        typer.Option("--review", help="Queue the predictions for review (the page's Review view) instead of writing."),
    ] = False,
    min_score: Annotated[
        float, typer.Option("--min-score", help="Keep (and write back) predictions scoring at least this (0-1).")
    ] = 0.0,
    scorers: Annotated[
        str,
        typer.Option(
            "--scorers", help="Re-rankers fused with the KGE score (comma-separated; 'none' for the KGE alone)."
        ),
    ] = "rules,lm,encoder",
    kge_seconds: Annotated[
        float, typer.Option("--kge-seconds", help="Training budget of the structural model (cached per graph).")
    ] = 60.0,
    restart: RestartOption = False,
    repair: RepairOption = False,
    ray: RayOption = None,
) -> None:
    """Predict missing heads or tails (KG completion) for a file of queries, as a resumable batch job."""
    from kgllm.pipelines.completion.jobs import job_from_options, open_and_complete

    names = [s.strip() for s in scorers.split(",") if s.strip() and s.strip() != "none"]
    job = job_from_options(
        queries=queries if queries == "all" else Path(queries),
        output=out,
        graph=graph,
        store=store,
        top_k=top_k,
        min_score=min_score,
        write_back=write_back,
        review=review,
        kge_seconds=kge_seconds,
        scorers=names,
    )
    console.print(open_and_complete(job, Settings(), restart=restart, repair=repair, ray=ray))


bench = typer.Typer(help="Benchmarks that print a table (and save it as Markdown with --out).", no_args_is_help=True)
app.add_typer(bench, name="bench")


@bench.command("ask")
def bench_ask(
    questions: Annotated[
        Optional[list[Path]], typer.Option("--questions", "-q", help="Question set(s), JSON lines with gold answers.")
    ] = None,
    graph: GraphOption = None,
    modes: Annotated[
        str,
        typer.Option(
            "--modes", help="Comma-separated: 'graph' (encoder and graph), 'model' (plus the language model)."
        ),
    ] = "graph,model",
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Accuracy (answer set fully correct) and warm latency of ask on question sets."""
    from kgllm.api import connect
    from kgllm.bench.ask import run_ask_benchmark
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.graph.demo import demo_question_sets

    sets = questions or demo_question_sets()
    if not sets:
        raise typer.BadParameter("no question set found; pass --questions FILE")
    rows, failures = [], []
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        if mode not in ("graph", "model"):
            raise typer.BadParameter(f"unknown mode {mode!r}; use graph and/or model")
        session = connect(graph, use_model=mode == "model")
        label = "graph + encoder" if mode == "graph" else f"graph + encoder + model ({_model_name(session)})"
        for path in sets:
            result = run_ask_benchmark(session, path, label)
            rows.append(result.row())
            failures += [{"mode": mode, **f} for f in result.failures]
    print_table(rows, "kgllm ask on question sets")
    for failure in failures:
        console.print(
            f"[dim]missed ({failure['mode']}) {failure['id']}: {failure['question']}  plan: {failure['plan']}[/]",
            highlight=False,
        )
    if out:
        save_markdown(rows, out, "ask: accuracy and warm latency", "kgllm bench ask" + (f" --out {out}" if out else ""))


@bench.command("claims")
def bench_claims(
    countries: Annotated[int, typer.Option("--countries", help="Countries sampled for sentences.")] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample and the perturbations.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Claim checking on true and perturbed sentences about the demo graph: precision and recall per status."""
    from kgllm.api import connect
    from kgllm.bench.claims import build_cases, run_claims_benchmark
    from kgllm.bench.report import print_table, save_markdown

    session = connect(use_model=False)
    cases = build_cases(session.store, countries, seed)
    result = run_claims_benchmark(session.claim_checker, cases)
    rows = result.rows()
    print_table(rows, f"claim checking on {len(cases)} sentences about the demo graph")
    for case, got in result.misses:
        console.print(
            f"[dim]missed ({case.kind}): {case.text}  expected {[s.value for s in case.expected]}, got {got}[/]"
        )
    if out:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(Counter(c.kind for c in cases).items()))
        command = f"kgllm bench claims --countries {countries} --seed {seed} --out {out}"
        save_markdown(
            rows, out, "claim checking: perturbed sentences about the demo graph", command, f"Sentences: {kinds}."
        )


@bench.command("stream")
def bench_stream(
    questions: Annotated[
        Optional[Path], typer.Option("--questions", "-q", help="Question set (JSON lines); default: the demo's.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Questions (prompts) measured.")] = 40,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Warm latency of the first streamed token with the default model, in process and over HTTP."""
    import os

    from kgllm.api import connect
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.bench.stream import run_stream_benchmark
    from kgllm.graph.demo import demo_question_sets

    session = connect()
    rows = [r.row() for r in run_stream_benchmark(session, questions or demo_question_sets()[0], limit)]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    title = f"first streamed token, warm ({_model_name(session)}, {session.settings.threads} threads)"
    print_table(rows, title)
    console.print(f"[dim]load average: {load}[/]")
    if out:
        command = f"kgllm bench stream --limit {limit} --out {out}"
        save_markdown(rows, out, title, command, f"Load average while measured: {load} (1, 5, 15 min).")


@bench.command("inject")
def bench_inject(
    questions: Annotated[
        Optional[list[Path]], typer.Option("--questions", "-q", help="Question set(s), JSON lines with gold answers.")
    ] = None,
    limit: Annotated[
        Optional[int], typer.Option("--limit", help="Ask N questions of each set, spread evenly over it.", min=1)
    ] = None,
    minutes: Annotated[
        float, typer.Option("--minutes", help="Training budget of the knowledge-injected model (held-out facts).")
    ] = 4.0,
    reader_minutes: Annotated[
        float, typer.Option("--reader-minutes", help="Training budget of the reader (cached once trained).")
    ] = 5.0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Closed-book vs facts injected: exact answers, citation precision and uncited entity names."""
    import os

    from kgllm.api import connect
    from kgllm.bench.inject import run_inject_benchmark
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.graph.demo import demo_question_sets

    session = connect()
    load = os.getloadavg()[0]
    rows = run_inject_benchmark(session, questions or demo_question_sets(), minutes, reader_minutes, limit)
    print_table(rows, "closed-book vs facts injected")
    if out:
        command = f"kgllm bench inject --minutes {minutes:g} --reader-minutes {reader_minutes:g}"
        command += (f" --limit {limit}" if limit else "") + f" --out {out}"
        notes = (
            f"Load average {load:.1f} (1 minute) at the start, on {os.cpu_count()} cores: training budgets are "
            "wall-clock minutes, so a busier machine trains fewer steps."
        )
        save_markdown(rows, out, "inject: closed-book vs facts injected", command, notes)


@bench.command("shapes")
def bench_shapes(
    graph: GraphOption = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the tables as Markdown here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Print every question and its answer.")] = False,
) -> None:
    """Counts, yes/no, set operations, superlatives and comparisons on the demo graph, by question shape,
    split by template family; and the relation-chain questions under auto routing."""
    from kgllm.api import connect
    from kgllm.bench.report import markdown, print_table
    from kgllm.bench.shapes import run_shapes_benchmark
    from kgllm.graph.demo import demo_question_sets

    session = connect(graph, use_model=False)
    chains = demo_question_sets()[:1]
    report = run_shapes_benchmark(session, chains, progress=verbose)
    for title, rows in report.tables.items():
        print_table(rows, title)
    if out:
        command = "kgllm bench shapes" + (f" --out {out}" if out else "")
        parts = [f"## {title}\n\n{markdown(rows)}" for title, rows in report.tables.items()]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f"# Question shapes\n\n`{command}` (graph + encoder, no language model)\n\n" + "\n".join(parts))


@bench.command("load")
def bench_load(
    graph: GraphOption = None,
    write_triples: Annotated[
        int, typer.Option("--write-triples", help="Triples for the batched vs one-MERGE-per-triple comparison.")
    ] = 2000,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Load + index time per 1,000 triples on both stores; batched against per-triple Neo4j writes."""
    import tempfile

    from kgllm.bench.load import run_load_benchmark
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.graph.demo import demo_graph_path
    from kgllm.retrieval.encoder import encoder_from_settings
    from kgllm.testing import arcadedb_bolt_server

    encoder = encoder_from_settings(Settings())
    encoder.encode(["warm up"])
    with (
        tempfile.TemporaryDirectory() as root,
        console.status("starting a Bolt server (ArcadeDB)"),
        arcadedb_bolt_server(root) as server,
    ):
        rows = [t.row() for t in run_load_benchmark(graph or demo_graph_path(), encoder, server, write_triples)]
    print_table(rows, "load and index")
    if out:
        save_markdown(rows, out, "load, index and write rates", "kgllm bench load" + (f" --out {out}" if out else ""))


@bench.command("scale")
def bench_scale(
    sizes: Annotated[
        str, typer.Option("--sizes", help="Triples in each generated power-law graph, comma-separated.")
    ] = "10000,100000,1000000",
    data: Annotated[
        Optional[Path], typer.Option("--data", help="FB15k-237 folder (train.txt, entity2text.txt, relation2text.txt).")
    ] = None,
    index_facts: Annotated[bool, typer.Option(help="Index every fact too (else labels only; facts deferred).")] = False,
    beam: Annotated[int, typer.Option("--beam", min=0, help="Reasoner beam width (0: rank every plan).")] = 5,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Load, index, warm ask (no model) and peak memory as the graph grows, with each cost's growth exponent."""
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.bench.scale import growth_exponents, load_average, run_scale_benchmark

    try:
        counts = [int(x.replace("_", "")) for x in sizes.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"--sizes takes comma-separated whole numbers, not {sizes!r}") from None
    if not counts or min(counts) < 100:
        raise typer.BadParameter("--sizes needs at least one size of 100 triples or more")
    command = f"kgllm bench scale --sizes {sizes}" + (f" --data {data}" if data else "")
    command += " --index-facts" * index_facts + f" --beam {beam}" + (f" --out {out}" if out else "")

    def report(results) -> str:
        slopes = ", ".join(f"{name} {slope:.2f}" for name, slope in growth_exponents(results).items())
        notes = f"Growth exponents (log-log slope against triples, generated graphs): {slopes}.\n\n" if slopes else ""
        notes += (
            f"Measured at {load_average()} (2 cores, shared); facts {'indexed' if index_facts else 'deferred'}; "
            f"reasoner beam {beam}, no language model; {len(results)} graph(s) done."
        )
        if out:
            rows = [r.row() for r in results]
            save_markdown(rows, out, "scale: load, index, ask and memory as the graph grows", command, notes)
        return notes

    results = run_scale_benchmark(counts, data, index_facts, beam, progress=console.print, measured=report)
    print_table([r.row() for r in results], "scale (Oxigraph store, no model)")
    console.print(report(results))


@bench.command("kgqa")
def bench_kgqa(
    kb: Annotated[Path, typer.Option("--kb", help="Knowledge base, head<TAB>relation<TAB>tail.")],
    test: Annotated[list[Path], typer.Option("--test", help="Question file(s): question<TAB>answer(a/b/)<TAB>path.")],
    train: Annotated[
        Optional[Path],
        typer.Option(
            "--train",
            help=(
                "Train split: also run with a relation-path planner (LoRA) trained on its gold paths; "
                "settings chosen on the .dev. split beside it."
            ),
        ),
    ] = None,
    schema_questions: Annotated[
        int,
        typer.Option(
            "--schema-questions",
            help=(
                "Also run with a planner trained on N questions generated from the KB's own facts and "
                "schema (no benchmark question); settings chosen on generated questions in unseen phrasings."
            ),
        ),
    ] = 0,
    minutes: Annotated[float, typer.Option("--minutes", help="Time budget for training each planner.")] = 8.0,
    hops: Annotated[int, typer.Option("--hops", help="Longest relation path to search.")] = 3,
    beam: Annotated[
        int, typer.Option("--beam", help="Grow only the best N partial paths per hop (0: rank every path).")
    ] = 0,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Only the first N questions of each file.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Multi-hop KGQA (PathQuestion format): Hits@1, latency, answers with a supporting path."""
    from kgllm.api import connect
    from kgllm.bench.kgqa import run_kgqa_benchmark, split_files, trained_reasoner
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.pipelines.synergize.questions import chain_question_splits

    settings = Settings(max_hops=hops, beam_width=beam)
    session = connect(kb, use_model=False, settings=settings)
    search = f"beam {beam}" if beam else "every path"
    rows = [
        run_kgqa_benchmark(session.reasoner, path, f"zero-shot graph search (encoder, {search})", limit).row()
        for path in test
    ]
    planners = []
    if schema_questions:
        generated = chain_question_splits(session.store, schema_questions, hops)
        planners.append(("planner trained on schema-generated questions", generated))
    if train:
        planners.append(("planner trained on the train split", split_files(train)))
    for name, (train_items, dev_items) in planners:
        reasoner = trained_reasoner(session, train_items, dev_items, minutes, settings)
        rows += [run_kgqa_benchmark(reasoner, path, f"{name} (LoRA, {search})", limit).row() for path in test]
    print_table(rows, f"KGQA on {kb.name}")
    if out:
        tests = " ".join(f"--test {t}" for t in test)
        trained = f" --train {train}" if train else ""
        trained += f" --schema-questions {schema_questions}" if schema_questions else ""
        trained += f" --minutes {minutes}" if planners else ""
        save_markdown(
            rows, out, f"KGQA on {kb.name}", f"kgllm bench kgqa --kb {kb} {tests}{trained} --hops {hops} --beam {beam}"
        )


@bench.command("serve")
def bench_serve(
    requests: Annotated[int, typer.Option("--requests", help="Questions sent in one burst.")] = 50,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Most requests in flight at once.")] = 50,
    modes: Annotated[
        str,
        typer.Option(
            "--modes", help="Comma-separated: 'graph' (encoder and graph), 'model' (plus the language model)."
        ),
    ] = "graph,model",
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Concurrent POST /ask against the demo served on loopback: errors, p50/p95 latency, requests/s."""
    import os

    from kgllm.api import connect
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.bench.serve import run_serve_benchmark
    from kgllm.graph.demo import demo_question_sets

    if requests < 1 or concurrency < 1:
        raise typer.BadParameter("--requests and --concurrency must be at least 1")
    rows = []
    for mode in [m.strip() for m in modes.split(",") if m.strip()]:
        if mode not in ("graph", "model"):
            raise typer.BadParameter(f"unknown mode {mode!r}; use graph and/or model")
        session = connect(use_model=mode == "model")
        label = "graph + encoder" if mode == "graph" else f"graph + encoder + model ({_model_name(session)})"
        rows.append(run_serve_benchmark(session, demo_question_sets()[0], label, requests, concurrency).row())
    print_table(rows, f"kgllm serve: {requests} concurrent /ask requests")
    if out:
        save_markdown(
            rows,
            out,
            "serve: concurrent /ask requests on loopback",
            f"kgllm bench serve --requests {requests} --concurrency {concurrency} --modes {modes} --out {out}",
            notes=f"{os.cpu_count()} CPU cores, torch threads {Settings().threads}; requests run side by side on the "
            "server's worker threads, and latency includes the time queued for one.",
        )


@bench.command("reliability")
def bench_reliability(
    requests: Annotated[int, typer.Option("--requests", help="Questions sent in each burst.")] = 200,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Most requests in flight at once.")] = 50,
    modes: Annotated[
        str,
        typer.Option("--modes", help="Comma-separated: 'graph' (no model, --no-model), 'model' (the default model)."),
    ] = "graph",
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """A fresh server on loopback per phase: a burst of /ask, then one with a heavy question in flight;
    /health throughout."""
    import os

    from kgllm.bench.reliability import run_reliability
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.server.limits import REQUEST_SECONDS

    if requests < 1 or concurrency < 1:
        raise typer.BadParameter("--requests and --concurrency must be at least 1")
    chosen = [m.strip() for m in modes.split(",") if m.strip()]
    if not chosen or set(chosen) - {"graph", "model"}:
        raise typer.BadParameter(f"unknown mode in {modes!r}; use graph and/or model")
    rows, load = [], [os.getloadavg()[0]]
    for mode in chosen:
        for phase in run_reliability(model=mode == "model", requests=requests, concurrency=concurrency):
            rows.append({"server": "no model" if mode == "graph" else "default model", **phase.row()})
    load.append(os.getloadavg()[0])
    print_table(rows, f"kgllm serve under load: {requests} /ask at concurrency {concurrency}")
    if out:
        save_markdown(
            rows,
            out,
            "reliability: kgllm serve under load, on loopback",
            f"kgllm bench reliability --requests {requests} --concurrency {concurrency} --modes {modes} --out {out}",
            notes=f"{os.cpu_count()} CPU cores, one torch thread per request; demo graph; a fresh server per "
            f"phase, warmed up with four questions; request time budget {REQUEST_SECONDS:g} s; the {requests} "
            "requests cycle through the demo question set (82 questions), so later rounds may be answered from "
            "the answer cache (a complete answer of the last 10 s): the hits column counts them. "
            "The heavy question: 1,000 characters naming many "
            "entities, max_hops=4, sent 0.2 s before the burst; its column is its own latency, status and whether "
            "its search was cut by the budget. /health polled every 50 ms by a separate client during each burst. "
            "Server CPU ms/request: the CPU time the server process spent during the phase, per request; it "
            "depends far less than latency on other work on the machine, and on idle cores it bounds throughput at "
            "(cores x 1000 / that) requests/s. "
            f"Load average {load[0]:.1f} at the start and {load[1]:.1f} at the end (1 minute; other work shares "
            "the machine when it is above the core count, and every figure is slower for it).",
        )


@bench.command("llm")
def bench_llm(
    sections: Annotated[
        str, typer.Option("--sections", help="Comma-separated: lora-vs-full, methods, injection, throughput.")
    ] = "lora-vs-full,methods,injection,throughput",
    minutes: Annotated[float, typer.Option("--minutes", help="Time budget of each training run.")] = 1.5,
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the tables as Markdown here.")] = None,
) -> None:
    """The LLM module on the demo graph: LoRA vs full fine-tuning, the four PEFT methods, knowledge injection,
    throughput."""
    from kgllm.bench.llm import run_llm_benchmarks

    run_llm_benchmarks([s.strip() for s in sections.split(",") if s.strip()], minutes, out)


@bench.command("complete")
def bench_complete(
    data: Annotated[
        Path, typer.Option("--data", help="Folder with train.txt, valid.txt and test.txt (head<TAB>relation<TAB>tail).")
    ],
    budget: Annotated[
        float, typer.Option("--budget", help="Wall-clock training seconds, the same for every model.")
    ] = 60.0,
    scorers: Annotated[
        str,
        typer.Option(
            "--scorers", help="Re-rankers fused with the KGE score: rules, lm, encoder (comma-separated, or 'none')."
        ),
    ] = "rules,lm,encoder",
    throughput_triples: Annotated[
        int,
        typer.Option(
            "--throughput-triples",
            help="Also time `kgllm complete` on a generated graph of this many triples (0: skip).",
        ),
    ] = 0,
    budgets: Annotated[
        Optional[str],
        typer.Option(
            "--budgets",
            help="Instead: MRR against training time, e.g. 5m,15m,60m (or 90s): kgllm's ComplEx and PyKEEN's "
            "ComplEx and RotatE (sLCWA and LCWA + inverse), one run each, ranked at every budget; "
            "with --out also a PNG of the curve.",
        ),
    ] = None,
    test_sample: Annotated[
        int,
        typer.Option(
            "--test-sample", help="With --budgets: rank a fixed random sample of this many test triples (0: all)."
        ),
    ] = 0,
    peers: Annotated[
        str,
        typer.Option(
            "--peers",
            help="With --budgets: the PyKEEN recipes to run: all, none, or some of complex-slcwa, rotate-slcwa, "
            "complex-lcwa, rotate-lcwa.",
        ),
    ] = "all",
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the tables as Markdown here.")] = None,
) -> None:
    """Link prediction (filtered MRR, Hits@1/3/10) against PyKEEN TransE, ComplEx and RotatE under one budget,
    or (--budgets) against PyKEEN's ComplEx and RotatE at several equal budgets."""
    from kgllm.bench.completion import completion_benchmark_report, curve_report

    if budgets:
        curve_report(data, budgets, test_sample, out, peers)
    else:
        completion_benchmark_report(data, budget, scorers, throughput_triples, out, Settings())


def _model_name(session) -> str:
    model = getattr(session.lm, "model", None)
    if model is None:
        return "none"
    return f"{model.config.model_type}, {model.num_parameters() / 1e6:.1f} M parameters"


def _path_line(answer, path) -> str:
    """``Chad —neighbor of→ Niger ←located in— Mali``: arrows show each fact's direction."""
    line = answer.label(path.start)
    for triple, node in zip(path.triples, path.nodes):
        relation = f"[cyan]{answer.label(triple.relation)}[/]"
        if triple.head == node:
            line += f" —{relation}→ {answer.label(triple.tail)}"
        else:
            line += f" ←{relation}— {answer.label(triple.head)}"
    return line


def _print_plans(answer) -> None:
    from rich.table import Table

    plans = answer.metadata.get("plans", [])
    if not plans:
        return
    table = Table(title="relation paths considered (best first)")
    parts = sorted({k for plan in plans for k in plan["scores"]})
    for column in ("from", "plan", "total", *parts):
        table.add_column(column, justify="left" if column in ("from", "plan") else "right")
    for plan in plans:
        scores = plan["scores"]
        table.add_row(
            plan["topic"],
            plan["plan"],
            f"{sum(scores.values()):.3f}",
            *(f"{scores[k]:+.3f}" if k in scores else "" for k in parts),
        )
    console.print(table)


def _print_program(answer) -> None:
    """The query program, the engine that ran it and its compiled query with the bound parameters."""
    program = answer.metadata.get("program")
    if not program:
        return
    console.print(f"[bold]program:[/] {program}", highlight=False)
    query = answer.metadata.get("query")
    engine = answer.metadata.get("engine", "protocol")
    if not query:
        console.print(f"[dim]run by: {engine}[/]")
        return
    how = "run by the store" if query["ran"] else "equivalent; the program was evaluated over the store protocol"
    console.print(f"[bold]{query['language'].upper()}[/] [dim]({how}):[/]")
    console.print(query["text"], highlight=False, markup=False)
    for name, value in query["parameters"].items():
        sigil = "$" if query["language"] == "cypher" else "?"
        console.print(f"  [dim]{sigil}{name} =[/] {value}", highlight=False)


def _streamed_answer(items, question: str, as_json: bool):
    """The answer, its text printed piece by piece as it is written (JSON lines with ``as_json``),
    and whether any text came that way (an answerer that cannot stream gives the answer only)."""
    from kgllm.types import Answer

    streamed = False
    for item in items:
        if isinstance(item, Answer):
            if streamed and not as_json:
                print(flush=True)
                _print_evidence(item)
            return item, streamed
        if not streamed and not as_json:
            console.print(f"\n[bold]Q:[/] {question}\n[bold green]A:[/] ", end="")
        streamed = True
        print(
            json.dumps({"text": item}, ensure_ascii=False) if as_json else item, end="\n" if as_json else "", flush=True
        )
    raise KGLLMError("the answerer's stream ended without an answer")


def _print_answer(answer) -> None:
    console.print(f"\n[bold]Q:[/] {answer.question}")
    console.print(f"[bold green]A:[/] {answer.text}  [dim](confidence {answer.confidence:.2f})[/]", highlight=False)
    _print_evidence(answer)


def _print_evidence(answer) -> None:
    if answer.metadata.get("citations"):
        numbered = {fact["n"]: fact["fact"] for fact in answer.metadata["facts"]}
        cited = Tree("[dim]cited facts[/]")
        for n in answer.metadata["citations"]:
            cited.add(escape(f"[{n}] {numbered[n]}"), highlight=False)
        console.print(cited)
    if not answer.evidence.paths:
        if answer.evidence.triples:
            tree = Tree("[dim]closest facts in the graph (context, not an answer)[/]")
            for t in answer.evidence.triples:
                tree.add(f"{answer.label(t.head)} [cyan]{answer.label(t.relation)}[/] {answer.label(t.tail)}")
            console.print(tree)
        return
    tree = Tree(f"[dim]evidence: {answer.metadata.get('path', '')}[/]")
    for path in answer.evidence.paths[:12]:
        tree.add(_path_line(answer, path))
    if len(answer.evidence.paths) > 12:
        tree.add(f"[dim]… {len(answer.evidence.paths) - 12} more paths[/]")
    console.print(tree)


# ---------------------------------------------------------------- documents <-> graph
BaseModelOption = Annotated[
    Optional[Path],
    typer.Option(
        "--model",
        help="Local Hugging Face causal LM to train the adapter on (needs --train; default: the shipped small model).",
    ),
]


def _augment_settings(model: Optional[Path]) -> Settings:
    overrides: dict[str, Any] = {"model": model} if model else {}
    return Settings(**overrides)


@app.command()
def extract(
    files: Annotated[list[Path], typer.Argument(help="Text documents (UTF-8).")],
    graph: Annotated[
        Optional[Path], typer.Option("--graph", "-g", help="RDF graph file to write (created if missing).")
    ] = None,
    store: StoreOption = None,
    schema: Annotated[
        Optional[Path], typer.Option("--schema", help="YAML/JSON schema: the relation names (and classes) to extract.")
    ] = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write/--dry-run", help="Write to the graph, or only print what would be added, merged and skipped."
        ),
    ] = True,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove the documents' triples (those no other source supports) instead.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Extract documents again even when unchanged.")] = False,
    review: Annotated[
        bool,
        typer.Option(
            "--review", help="With --dry-run: queue the facts for review (the page's Review view, GET /review)."
        ),
    ] = False,
    train: TrainDataOption = None,
    model: BaseModelOption = None,
) -> None:
    """Extract triples from documents into the graph, resolved against it, with provenance."""
    from kgllm.cli.construction import construction_data, run_extract

    if review and (write or delete):
        raise ConfigurationError("--review queues a dry run's facts: use it with --dry-run")
    settings = _augment_settings(model)
    data = construction_data(train, settings)
    run_extract(files, graph, store, schema, write, delete, force, data, settings, review=review)


@app.command()
def unmerge(
    mention: Annotated[str, typer.Argument(help="A name that was merged into another entity by extraction.")],
    graph: Annotated[Optional[Path], typer.Option("--graph", "-g", help="RDF graph file.")] = None,
    store: StoreOption = None,
    train: TrainDataOption = None,
    model: BaseModelOption = None,
) -> None:
    """Undo the logged merges of a name and re-extract the documents that made them."""
    from kgllm.cli.construction import construction_data, run_unmerge

    settings = _augment_settings(model)
    run_unmerge(mention, graph, store, construction_data(train, settings), settings)


@app.command()
def describe(
    entity: Annotated[str, typer.Argument(help="Entity id or name.")],
    graph: GraphOption = None,
    store: StoreOption = None,
    train: TrainDataOption = None,
    model: BaseModelOption = None,
) -> None:
    """Say in plain text what the graph holds about an entity (a trained KG-to-text adapter)."""
    from kgllm.cli.construction import construction_data, run_describe

    settings = _augment_settings(model)
    run_describe(entity, graph, store, construction_data(train, settings), settings)


@bench.command("webnlg")
def bench_webnlg(
    dev: Annotated[Path, typer.Option("--dev", help="WebNLG dev, JSON lines.")],
    train: TrainDataOption = None,
    model: BaseModelOption = None,
    size: Annotated[int, typer.Option("--size", help="Entries evenly spaced over dev (0: all).")] = 200,
    tasks: Annotated[
        str, typer.Option("--tasks", help="Comma-separated: extract (text -> triples), verbalize (triples -> text).")
    ] = "extract,verbalize",
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the tables as Markdown here.")] = None,
) -> None:
    """Text -> triples P/R/F1 (strict, exact) and triples -> text BLEU / chrF++ on WebNLG dev."""
    from kgllm.bench.construct import webnlg_report
    from kgllm.cli.construction import construction_data

    chosen = [t.strip() for t in tasks.split(",") if t.strip()]
    if not chosen or set(chosen) - {"extract", "verbalize"}:
        raise typer.BadParameter(f"--tasks takes extract and/or verbalize, not {tasks!r}")
    settings = _augment_settings(model)
    webnlg_report(dev, construction_data(train, settings), size, chosen, settings, out)


@bench.command("resolution")
def bench_resolution(
    out: Annotated[Optional[Path], typer.Option("--out", help="Save the table as Markdown here.")] = None,
) -> None:
    """Merge precision and recall on perturbed demo-graph names (a fifth of the entities held out)."""
    from kgllm.bench.construct import resolution_benchmark
    from kgllm.bench.report import print_table, save_markdown
    from kgllm.graph.demo import demo_graph_path
    from kgllm.graph.rdflib_store import RDFLibStore
    from kgllm.retrieval.encoder import encoder_from_settings

    rows = resolution_benchmark(RDFLibStore(demo_graph_path()), encoder_from_settings(Settings()))
    print_table(rows, "entity resolution on perturbed demo-graph names")
    if out:
        save_markdown(
            rows, out, "entity resolution: perturbed demo-graph names", "kgllm bench resolution --out " + str(out)
        )

"""The web page in headless Chromium (Debian's chromium, driven by Playwright), against a real server.

The tests act through what the page exposes — buttons found by their accessible names, data
attributes, and the page's own ``window.kgllm`` functions — never through pixel positions, and
they wait for the page's state attributes (``<body data-state data-revision>``), never for time.
Label overlap is checked as a property of the drawing (Cytoscape's labelled bounding boxes), so it
holds whatever fonts and layout a machine gives. Screenshots go to pytest's temporary directory;
their paths are printed (``pytest -s`` or ``-rP`` shows them).
"""

import os
import time

import httpx
import pytest

import kgllm
from kgllm.server import create_app, running_server
from kgllm.settings import Settings

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CHAD_QUESTION = "Which subregion are the neighbours of Chad located in?"
BRAZIL_QUESTION = "Which countries border Brazil?"
NO_ANSWER_QUESTION = "What is the capital of France?"
BRAZIL_NEIGHBOURS = {
    "Argentina",
    "Bolivia",
    "Colombia",
    "French Guiana",
    "Guyana",
    "Paraguay",
    "Peru",
    "Suriname",
    "Uruguay",
    "Venezuela",
}
NIGER = "https://kgllm.dev/countries/niger"
MALI = "https://kgllm.dev/countries/mali"
ACTION_TIMEOUT_MS = 120_000  # the first question warms the reasoner up; CI machines are busy

# Pairs of visible nodes whose boxes, labels included, overlap: layout-independent, so a fair test.
LABEL_OVERLAPS = """() => {
  const boxes = window.kgllm.cy.nodes(':visible').map(n => [n.data('label'), n.boundingBox({includeLabels: true})]);
  const overlaps = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [la, a] = boxes[i], [lb, b] = boxes[j];
    if (a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2) overlaps.push([la, lb]);
  }
  return overlaps;
}"""
OLD_LAYOUT = """() => {
  const cy = window.kgllm.cy;
  cy.layout({name: 'breadthfirst', roots: cy.nodes("[role = 'question']"), directed: false, spacingFactor: 1.1,
             padding: 20, animate: false}).run();
}"""
VISIBLE_EDGES = "(label) => window.kgllm.cy.edges(':visible').filter(e => !label || e.data('label') === label).length"
NODE_LABELS = "() => window.kgllm.cy.nodes().map(n => n.data('label'))"
NODE_ROLES = "() => Object.fromEntries(window.kgllm.cy.nodes().map(n => [n.data('label'), n.data('role')]))"


@pytest.fixture(scope="module")
def site(encoder):
    """The server's URL and a Chromium browser, shared by the module's tests."""
    sync_api = pytest.importorskip("playwright.sync_api", reason='needs playwright: pip install "kgllm[test]"')
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("needs Debian's chromium: apt-get install chromium (make test installs it)")
    with (
        kgllm.connect(use_model=False, encoder=encoder) as session,
        running_server(create_app(session)) as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield url, browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    """Where the tests leave screenshots for people to look at."""
    return tmp_path_factory.mktemp("web-screenshots")


def open_page(site, **context_options):
    """A fresh page (its own browser context) on the kgllm page, once the page says it is ready."""
    url, browser = site
    context = browser.new_context(**{"viewport": {"width": 1300, "height": 850}, **context_options})
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(f"{url}/")
    page.wait_for_selector("body[data-state='ready']")
    return page


@pytest.fixture
def page(site):
    page = open_page(site)
    yield page
    errors = page.errors
    page.context.close()
    assert errors == []


def settled(page, act) -> None:
    """Does ``act`` (a user action) and waits until the page has finished it; fails on an error state."""
    before = int(page.get_attribute("body", "data-revision"))
    act()
    page.wait_for_function(
        f"Number(document.body.dataset.revision) > {before} && document.body.dataset.state !== 'busy'",
        timeout=ACTION_TIMEOUT_MS,
    )
    state = page.get_attribute("body", "data-state")
    assert state == "ready", f"page state {state}: {page.text_content('#status')}"


def ask(page, question: str) -> None:
    page.get_by_role("textbox", name="Question").fill(question)
    settled(page, lambda: page.get_by_role("button", name="Ask", exact=True).click())


def node_button(page, label: str):
    """The button for a node in the page's node list (the drawing's accessible twin)."""
    return page.get_by_role("list", name="Nodes").get_by_role("button", name=label, exact=True)


def shoot(page, screenshots, name: str, **options) -> None:
    path = screenshots / name
    page.screenshot(path=path, **options)
    print(f"screenshot: {path}")


def test_ask_shows_the_answer_and_draws_the_evidence_graph(page, screenshots):
    ask(page, CHAD_QUESTION)
    assert page.text_content("#answer") == "Middle Africa, Northern Africa and Western Africa."
    assert page.get_attribute("#result", "data-found") == "true"
    assert page.text_content("#evidence-heading") == "Evidence"
    assert page.is_visible("#confidence-meter")
    assert page.text_content("#confidence") == page.evaluate(
        "document.getElementById('confidence-meter').value.toFixed(2)"
    )
    assert page.locator("#paths li").count() == 7
    assert page.evaluate(VISIBLE_EDGES, None) == 14
    roles = page.evaluate(NODE_ROLES)
    assert roles["Chad"] == "question"
    assert {label for label, role in roles.items() if role == "answer"} == {
        "Middle Africa",
        "Northern Africa",
        "Western Africa",
    }
    # the node list holds the same nodes as the drawing, with their roles
    buttons = page.locator("#node-list button[data-node-id]")
    assert sorted(buttons.all_text_contents()) == sorted(roles)
    assert node_button(page, "Chad").get_attribute("data-role") == "question"
    assert page.evaluate(LABEL_OVERLAPS) == []
    shoot(page, screenshots, "answer.png")


def test_labels_do_not_overlap_for_ten_answers_nor_at_thirty_nodes(page, screenshots):
    ask(page, BRAZIL_QUESTION)
    roles = page.evaluate(NODE_ROLES)
    assert {label for label, role in roles.items() if role == "answer"} == BRAZIL_NEIGHBOURS
    assert page.evaluate(LABEL_OVERLAPS) == []
    shoot(page, screenshots, "brazil.png")
    for name in ("Brazil", "South America", "Americas"):  # each opened node brings its neighbours
        settled(page, node_button(page, name).click)
    assert page.evaluate("window.kgllm.cy.nodes(':visible').length") >= 30
    assert page.evaluate(LABEL_OVERLAPS) == []
    settled(page, page.get_by_role("button", name="Lay out again").click)  # another random start
    assert page.evaluate(LABEL_OVERLAPS) == []
    shoot(page, screenshots, "brazil-expanded.png")
    # the check can fail: it finds the overlap of the layout the page used to have (ten answers in one row)
    ask(page, BRAZIL_QUESTION)
    page.evaluate(OLD_LAYOUT)
    assert len(page.evaluate(LABEL_OVERLAPS)) >= 5


def test_a_question_without_an_answer_shows_the_closest_facts_as_context(page, screenshots):
    ask_url = page.url.rstrip("/") + "/ask"  # the field the page reads
    assert page.request.post(ask_url, data={"question": NO_ANSWER_QUESTION}).json()["found"] is False
    assert page.request.post(ask_url, data={"question": CHAD_QUESTION}).json()["found"] is True
    ask(page, NO_ANSWER_QUESTION)
    assert page.get_attribute("#result", "data-found") == "false"
    assert page.get_by_role("region", name="No answer in the graph").is_visible()
    assert "no answer" in page.text_content("#answer")
    heading = page.get_by_role("heading", name="Closest facts (context, not an answer)")
    assert heading.is_visible()
    assert page.get_by_role("list", name="Closest facts (context, not an answer)").locator("li").count() == 5
    assert not page.is_visible("#confidence-meter")  # nothing that reads as an answer's confidence
    assert page.get_by_text("Evidence", exact=True).count() == 0
    assert page.is_visible("#graph-caption")
    assert set(page.evaluate(NODE_ROLES).values()) == {"other"}
    shoot(page, screenshots, "not-found.png")
    # a later answer takes the answer's form again
    ask(page, CHAD_QUESTION)
    assert page.get_attribute("#result", "data-found") == "true" and page.is_visible("#confidence-meter")
    assert page.get_by_role("region", name="Answer", exact=True).is_visible()
    assert not page.is_visible("#graph-caption")


def test_opening_a_node_adds_its_neighbourhood(page, screenshots):
    ask(page, CHAD_QUESTION)
    edges_before = page.evaluate(VISIBLE_EDGES, None)
    assert "Mali" not in page.evaluate(NODE_LABELS)
    settled(page, node_button(page, "Niger").click)
    assert "Niger" in page.text_content("#status")
    assert {"Mali", "Algeria", "Benin"} <= set(page.evaluate(NODE_LABELS))  # Niger's neighbours
    assert page.evaluate(VISIBLE_EDGES, None) > edges_before
    assert node_button(page, "Niger").get_attribute("aria-pressed") == "true"
    panel = page.get_by_role("article", name="Niger")
    assert panel.get_attribute("data-entity-id") == NIGER
    assert "Niger neighbor of Mali" in panel.get_by_role("list", name="Facts").locator("li").all_text_contents()
    # a tap on a node in the drawing does the same (the event Cytoscape fires, not a mouse position)
    edges_before = page.evaluate(VISIBLE_EDGES, None)
    # (the script returns nothing: a returned Cytoscape collection would be serialized, cy and all)
    settled(page, lambda: page.evaluate("id => { window.kgllm.cy.$id(id).emit('tap'); }", MALI))
    assert page.get_by_role("article", name="Mali").is_visible()
    assert "Senegal" in page.evaluate(NODE_LABELS) and page.evaluate(VISIBLE_EDGES, None) > edges_before
    assert page.evaluate(LABEL_OVERLAPS) == []
    shoot(page, screenshots, "expanded.png")


def test_the_explorer_finds_an_entity_and_lists_its_facts(page, screenshots):
    page.get_by_role("searchbox", name="Entity name").fill("niger")
    settled(page, page.get_by_role("button", name="Find", exact=True).click)
    results = page.get_by_role("list", name="Matching entities")
    assert results.get_by_role("button").all_text_contents() == ["Niger", "Nigeria"]
    settled(page, results.get_by_role("button", name="Niger", exact=True).click)
    panel = page.get_by_role("article", name="Niger")
    assert "country" in panel.locator("#entity-about").text_content()
    facts = panel.get_by_role("list", name="Facts").locator("li")
    assert facts.count() == page.evaluate("window.kgllm.cy.edges().length")
    assert "Niger neighbor of Chad" in facts.all_text_contents()
    assert page.evaluate(NODE_ROLES)["Niger"] == "other" and "Chad" in page.evaluate(NODE_LABELS)
    # a fact's other end opens that entity in turn
    settled(page, panel.get_by_role("button", name="Chad", exact=True).first.click)
    assert page.get_by_role("article", name="Chad").is_visible()
    assert "Sudan" in page.evaluate(NODE_LABELS)
    shoot(page, screenshots, "explorer.png")


def test_the_relation_filter_hides_and_shows_edges(page):
    ask(page, CHAD_QUESTION)
    located = page.locator("#relation-filter input[data-relation='located in']")
    neighbour = page.locator("#relation-filter input[data-relation='neighbor of']")
    assert located.is_checked() and neighbour.is_checked()
    total, located_edges = page.evaluate(VISIBLE_EDGES, None), page.evaluate(VISIBLE_EDGES, "located in")
    assert 0 < located_edges < total
    settled(page, located.uncheck)
    assert page.evaluate(VISIBLE_EDGES, "located in") == 0
    assert page.evaluate(VISIBLE_EDGES, None) == total - located_edges
    assert "hidden by the relation filter" in page.text_content("#graph-summary")
    assert page.evaluate(LABEL_OVERLAPS) == []
    settled(page, lambda: page.locator("#relation-filter input[data-relation='located in']").check())
    assert page.evaluate(VISIBLE_EDGES, None) == total


def test_the_page_is_readable_on_a_400px_wide_phone(site, screenshots):
    page = open_page(site, viewport={"width": 400, "height": 800}, is_mobile=True, has_touch=True)
    try:
        assert "width=device-width" in page.get_attribute("meta[name='viewport']", "content")
        ask(page, BRAZIL_QUESTION)
        assert page.evaluate("document.documentElement.scrollWidth") <= 400  # nothing wider than the screen
        for selector in ("#answer", "#graph", "#node-list", "#ask"):
            box = page.locator(selector).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 400, (selector, box)
        assert page.locator("#graph").bounding_box()["width"] >= 300
        smallest = page.evaluate(
            "Math.min(...window.kgllm.cy.nodes(':visible').map(n => parseFloat(n.style('font-size')))) "
            "* window.kgllm.cy.zoom()"
        )
        assert smallest >= 12  # node labels at least 12 CSS pixels on screen
        assert page.evaluate(LABEL_OVERLAPS) == []
        shoot(page, screenshots, "phone.png", full_page=True)
        assert page.errors == []
    finally:
        page.context.close()


def test_the_api_docs_render_from_the_packaged_swagger_ui(page, screenshots):
    page.goto(page.url.rstrip("/") + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert "/ask" in paths and "/v1/chat/completions" in paths
    shoot(page, screenshots, "docs.png")


API_KEY = "s3cret"
CHAD = "https://kgllm.dev/countries/chad"


@pytest.fixture(scope="module")
def review_site(site, encoder, copy_demo_graph, tmp_path_factory):
    """A second server, over a writable copy of the demo graph, behind an API key, with a small
    completer (trained on first use), and three predictions for Chad queued for review."""
    from kgllm.pipelines.completion.completer import CompletionConfig
    from kgllm.pipelines.completion.kge import KGEConfig

    folder = tmp_path_factory.mktemp("review-graph")
    graph = copy_demo_graph(folder)
    config = CompletionConfig(
        kge=KGEConfig(dim=64, max_epochs=40, seconds=30), kge_models=("distmult",), scorers=("rules",)
    )
    settings = Settings(cache_dir=folder / "cache")
    with (
        kgllm.connect(graph, use_model=False, encoder=encoder, settings=settings) as session,
        running_server(create_app(session, api_key=API_KEY, completion_config=config, time_budget=600)) as url,
        httpx.Client(base_url=url, timeout=600, headers={"Authorization": f"Bearer {API_KEY}"}) as api,
    ):
        query = {"queries": [{"head": "Chad", "relation": "neighbor of", "tail": "?"}], "top_k": 3, "review": True}
        job = api.post("/complete", json=query).json()  # 202: the completer trains in the background
        deadline = time.monotonic() + 600
        while job.get("status") in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = api.get(f"/jobs/{job['id']}").json()
        assert job["status"] == "done" and job["result"]["proposed"] == 3, job
        yield (url, site[1]), api


def test_reviewed_predictions_are_accepted_into_the_graph_or_rejected_through_the_page(review_site, screenshots):
    site, api = review_site
    page = open_page(site)
    try:
        page.get_by_text("API key", exact=True).click()  # opens the key box
        page.get_by_role("textbox", name="API key").fill(API_KEY)
        settled(page, page.get_by_role("button", name="Load facts to review").click)
        items = page.get_by_role("list", name="Facts awaiting review").locator("li[data-proposal-id]")
        assert items.count() == 3
        pending = api.get("/review").json()["pending"]
        assert items.evaluate_all("items => items.map(li => li.dataset.proposalId)") == [p["id"] for p in pending]
        assert all(m == "predicted" for m in items.evaluate_all("items => items.map(li => li.dataset.method)"))
        first, second = pending[0], pending[1]
        name = " ".join(first["labels"])
        shown = items.first.text_content()
        assert name in shown and "predicted by kgllm complete" in shown and f"score {first['score']:.2f}" in shown
        shoot(page, screenshots, "review.png", full_page=True)

        settled(page, page.get_by_role("button", name=f"Accept: {name}", exact=True).click)
        settled(page, page.get_by_role("button", name=f"Reject: {' '.join(second['labels'])}", exact=True).click)
        assert items.count() == 1 and "1 fact awaits review; 1 rejected so far." in page.text_content("#review-summary")
        # the API says the same: one written with its provenance, one dropped for good
        review = api.get("/review").json()
        assert [p["id"] for p in review["pending"]] == [pending[2]["id"]] and review["rejected"] == 1
        around = api.get("/neighbors", params={"id": CHAD, "limit": 100}).json()
        accepted, rejected = "\t".join(first["triple"]), "\t".join(second["triple"])
        assert around["provenance"][accepted]["asserted"] is False
        assert around["provenance"][accepted]["records"][0]["method"] == "predicted"
        assert rejected not in {edge["id"] for edge in around["graph"]["edges"]}

        # the entity panel shows the accepted fact with where it came from
        page.get_by_role("searchbox", name="Entity name").fill("Chad")
        settled(page, page.get_by_role("button", name="Find", exact=True).click)
        settled(page, page.get_by_role("list", name="Matching entities").get_by_role("button", name="Chad").click)
        facts = page.get_by_role("article", name="Chad").get_by_role("list", name="Facts").locator("li")
        derived = facts.filter(has=page.locator("[data-method='predicted']"))
        assert derived.count() == 1 and derived.get_attribute("data-derived") == "true"
        assert name in derived.text_content() and "predicted by kgllm complete" in derived.text_content()
        assert page.evaluate("id => window.kgllm.cy.$id(id).data('derived')", accepted) is True
        assert page.evaluate("id => window.kgllm.cy.$id(id).style('line-style')", accepted) == "dashed"
        shoot(page, screenshots, "entity-provenance.png")

        # and the review view fits a phone's width
        page.set_viewport_size({"width": 400, "height": 800})  # the drawing follows once it has seen the resize
        page.wait_for_function("document.documentElement.scrollWidth <= 400", timeout=ACTION_TIMEOUT_MS)
        for selector in ("#review-list", "#review-list li button.accept", "#entity-panel"):
            box = page.locator(selector).first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 400, (selector, box)
        shoot(page, screenshots, "review-phone.png", full_page=True)
        assert page.errors == []
    finally:
        page.context.close()


def test_the_review_view_says_the_bundled_demo_graph_is_read_only(page):
    settled(page, page.get_by_role("button", name="Load facts to review").click)
    assert "read-only" in page.text_content("#review-summary")
    assert page.get_by_role("button", name="Accept").count() == 0


@pytest.fixture(scope="module")
def streaming_url(encoder):
    """A server whose session has the default model and a closed-book answerer that streams."""
    from test_streaming import ClosedBookAnswerer

    from kgllm.llm.base import GenerationConfig

    with kgllm.connect(encoder=encoder, progress=False) as session, running_server(create_app(session)) as url:
        session.answerers["closed-book"] = ClosedBookAnswerer(session, GenerationConfig(max_new_tokens=16))
        yield url


def test_a_streamed_answer_is_shown_as_it_arrives_with_its_claims_marked(site, streaming_url):
    page = open_page((streaming_url, site[1]))
    settled(page, lambda: page.evaluate("window.kgllm.ask('Where is Kenya located?', {answerer: 'closed-book'})"))
    assert page.get_attribute("#answer", "data-streamed") == "true"
    assert page.get_attribute("#answer", "data-streaming") == "false"
    claims = page.eval_on_selector_all("#answer span.claim", "spans => spans.map(s => s.dataset.status)")
    assert claims and set(claims) <= {"supported", "contradicted", "not_in_graph"}
    assert page.errors == []
    page.context.close()

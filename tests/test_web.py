"""The web page in headless Chromium (Debian's chromium, driven by Playwright): ask the demo question,
see the answer and the evidence graph, expand a node. A screenshot is saved in tests/artifacts/."""

import os
from pathlib import Path

import pytest

import kgllm
from kgllm.server import create_app, running_server

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
ARTIFACTS = Path(__file__).with_name("artifacts")
DRAWN_EDGES = """() => window.kgllm.cy.edges().filter(e => e.visible() && e.renderedBoundingBox().w > 0).length"""
NODE_CENTRE = """label => {
  const node = window.kgllm.cy.nodes().filter(n => n.data('label') === label)[0];
  const box = document.getElementById('graph').getBoundingClientRect();
  const at = node.renderedPosition();
  return [box.x + at.x, box.y + at.y];
}"""


@pytest.fixture(scope="module")
def page(encoder):
    sync_api = pytest.importorskip("playwright.sync_api", reason='needs playwright: pip install "kgllm[test]"')
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("needs Debian's chromium: apt-get install chromium (make test installs it)")
    with (
        kgllm.connect(use_model=False, encoder=encoder) as session,
        running_server(create_app(session)) as url,
        sync_api.sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 850})
        page.errors = []
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(f"{url}/")
        yield page
        browser.close()


def test_ask_shows_the_answer_and_draws_the_evidence_graph(page):
    page.fill("#question", "Which subregion are the neighbours of Chad located in?")
    page.click("#ask")
    page.wait_for_function(f"({DRAWN_EDGES})() > 0", timeout=30_000)
    assert page.text_content("#answer") == "Middle Africa, Northern Africa and Western Africa."
    assert page.text_content("#confidence") == page.evaluate(
        "document.getElementById('confidence-meter').value.toFixed(2)"
    )
    assert page.locator("#paths li").count() == 7
    assert page.evaluate(DRAWN_EDGES) == 14
    roles = page.evaluate("window.kgllm.cy.nodes().map(n => n.data('label') + ':' + n.data('role'))")
    assert {"Chad:question", "Middle Africa:answer", "Northern Africa:answer", "Western Africa:answer"} <= set(roles)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = page.screenshot(path=ARTIFACTS / "web-answer.png")
    print(f"screenshot: {ARTIFACTS / 'web-answer.png'} ({len(shot)} bytes)")
    assert page.errors == []


def test_clicking_a_node_adds_its_neighbourhood(page):
    before = page.evaluate(DRAWN_EDGES)
    page.mouse.click(*page.evaluate(NODE_CENTRE, "Niger"))
    page.wait_for_function(f"({DRAWN_EDGES})() > {before}", timeout=30_000)
    assert "Niger" in page.text_content("#status")
    labels = page.evaluate("window.kgllm.cy.nodes().map(n => n.data('label'))")
    assert {"Mali", "Algeria", "Benin"} <= set(labels)  # Niger's neighbours, not in the first answer
    page.screenshot(path=ARTIFACTS / "web-expanded.png")
    print(f"screenshot: {ARTIFACTS / 'web-expanded.png'}")
    assert page.errors == []


def test_the_api_docs_render_from_the_packaged_swagger_ui(page):
    page.goto(page.url.rstrip("/") + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=30_000)
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert "/ask" in paths and "/v1/chat/completions" in paths
    page.screenshot(path=ARTIFACTS / "web-docs.png")
    assert page.errors == []

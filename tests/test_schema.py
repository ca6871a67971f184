"""The API against its own OpenAPI schema: schemathesis generates requests for every operation
and checks each response (no server error, a status and a body the schema declares).

Bounded and repeatable: a few examples per operation, derandomized. The server runs without a
language model, so the two generating ``/v1`` endpoints answer 503 by design and are left out;
``/v1/models`` stays in.
"""

import pytest
from hypothesis import HealthCheck, given, settings

import kgllm
from kgllm.server import create_app, running_server
from kgllm.settings import Settings

schemathesis = pytest.importorskip("schemathesis", reason='needs schemathesis: pip install "kgllm[test]"')
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEEDS_A_MODEL = {"/v1/completions", "/v1/chat/completions"}
EXAMPLES = 12


@pytest.fixture(scope="module")
def api_url(encoder, tmp_path_factory):
    from kgllm.pipelines.completion.completer import CompletionConfig
    from kgllm.pipelines.completion.kge import KGEConfig

    tiny = CompletionConfig(kge=KGEConfig(dim=16, max_epochs=3, seconds=5), kge_models=("distmult",), scorers=())
    settings_ = Settings(cache_dir=tmp_path_factory.mktemp("cache"))
    with (
        kgllm.connect(use_model=False, encoder=encoder, settings=settings_) as session,
        running_server(create_app(session, completion_config=tiny, time_budget=300)) as url,
    ):
        yield url


def test_every_operation_answers_as_its_schema_says(api_url):
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    tested = [op for op in operations if op.path not in NEEDS_A_MODEL]
    assert {"/ask", "/complete", "/jobs/{job_id}", "/health", "/search", "/neighbors"} <= {op.path for op in tested}
    failures = []
    for operation in tested:

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case):
            case.call_and_validate(checks=CHECKS, timeout=300)

        try:
            check()
        except Exception as exc:  # one report for every failing operation, not only the first
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)

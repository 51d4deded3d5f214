"""OpenAI's Codex CLI (npm `@openai/codex`) against `gptoss serve`, configured as the README shows: a custom
provider on `wire_api = "responses"`, and `codex exec` as a user runs it.

Codex is installed once into the user's cache ($XDG_CACHE_HOME/gptoss-tests/, ~/.cache by default; pinned
below); without npm, or when the registry cannot be reached and nothing is cached, the test skips saying why.
The random-weight model writes a reply that ends by itself only where it is forced: `--output-schema` makes
Codex ask for a JSON answer, and the server's `--thinking-budget` ends the thinking.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from serveutil import start, stop

pytestmark = pytest.mark.slow
CODEX = "@openai/codex@0.171.0"
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "adult": {"type": "boolean"}},
          "required": ["name", "adult"], "additionalProperties": False}


def _cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gptoss-tests" / CODEX.replace("@", "").replace("/", "-")


@pytest.fixture(scope="module")
def codex() -> Path:
    """The codex executable: cached, or installed from npm now (renamed into place once complete)."""
    home = _cache()
    exe = home / "node_modules" / ".bin" / "codex"
    if exe.exists():
        return exe
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Codex CLI comes from npm")
    try:   # a quick look first, so that a machine without the registry skips in seconds
        subprocess.run([npm, "view", CODEX, "version", "--fetch-retries=0"], check=True, capture_output=True,
                       timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"the npm registry is not reachable for {CODEX}: {exc}")
    partial = home.with_name(home.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    r = subprocess.run([npm, "install", "--prefix", str(partial), "--no-audit", "--no-fund", CODEX],
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"npm install {CODEX} failed: {r.stderr.strip()[-300:]}")
    shutil.rmtree(home, ignore_errors=True)
    partial.rename(home)
    return exe


def test_codex_exec_over_the_responses_api(codex, tiny_gguf, tmp_path):
    served = start(tiny_gguf, "-c", "8192", "--parallel", "1", "--thinking-budget", "4", "--max-tokens", "300")
    model = json.loads(served.request("GET", "/v1/models")[1])["data"][0]["id"]
    codex_home, work = tmp_path / "codex-home", tmp_path / "work"
    codex_home.mkdir()
    work.mkdir()
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\nmodel_provider = "gptoss"\n\n[model_providers.gptoss]\nname = "gptoss"\n'
        f'base_url = "{served.url}"\nwire_api = "responses"\n')
    schema, last = tmp_path / "schema.json", tmp_path / "last.txt"
    schema.write_text(json.dumps(SCHEMA))
    try:
        r = subprocess.run([str(codex), "exec", "--skip-git-repo-check", "--json", "--output-schema", str(schema),
                            "-o", str(last), "Who is Ann?"], cwd=work, capture_output=True, text=True, timeout=300,
                           stdin=subprocess.DEVNULL, env={**os.environ, "CODEX_HOME": str(codex_home)})
    finally:
        assert stop(served) == 130
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    kinds = [e["type"] for e in events]
    assert "turn.completed" in kinds and "turn.failed" not in kinds, r.stdout
    said = [e["item"]["text"] for e in events if e["type"] == "item.completed"
            and e["item"]["type"] == "agent_message"]
    assert len(said) == 1 and last.read_text().strip() == said[0].strip()
    jsonschema.validate(json.loads(said[0]), SCHEMA)
    usage = next(e["usage"] for e in events if e["type"] == "turn.completed")
    assert usage["output_tokens"] > 0 and usage["reasoning_output_tokens"] > 0   # our usage reached Codex

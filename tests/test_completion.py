"""Shell completion: Typer's --show-completion/--install-completion, completing model names and recipes."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli


@pytest.fixture
def models(isolated_home):
    """A models folder with two GGUFs and an imatrix, and a fine-tune pulled into the HF cache."""
    from gptoss_cli import paths

    folder = paths.models_dir()
    folder.mkdir(parents=True)
    for name in ("gpt-oss-20b-mxfp4.gguf", "gpt-oss-20b-ft-q8.gguf", "gpt-oss-20b.imatrix.gguf"):
        (folder / name).write_bytes(b"GGUF")
    (isolated_home / "hf" / "hub" / "models--someorg--gpt-oss-20b-ft" / "snapshots").mkdir(parents=True)
    return folder


def test_model_and_recipe_completion_functions(models):
    from gptoss_cli.completion import complete_gguf_model, complete_recipe, complete_snapshot_model

    values = lambda items: [v for v, _ in items]  # noqa: E731
    assert values(complete_gguf_model("")) == ["20b", "120b", "gpt-oss-20b-ft-q8.gguf", "gpt-oss-20b-mxfp4.gguf"]
    assert values(complete_gguf_model("gpt-oss-20b-m")) == ["gpt-oss-20b-mxfp4.gguf"]
    assert values(complete_gguf_model("12")) == ["120b"]
    assert values(complete_snapshot_model("")) == ["20b", "120b", "someorg/gpt-oss-20b-ft"]
    assert values(complete_recipe("experts-")) == ["experts-q4", "experts-q3", "experts-q2"]
    assert values(complete_recipe("")) == ["mxfp4", "f16", "bf16", "q8", "experts-q4", "experts-q3", "experts-q2"]
    assert all(help_text and "\n" not in help_text for _, help_text in complete_recipe(""))


def test_a_completed_gguf_name_resolves_to_the_models_folder(models, tmp_path, monkeypatch):
    from gptoss_cli import paths

    monkeypatch.chdir(tmp_path)  # nothing of that name here: the models folder's file is meant
    assert paths.resolve_gguf("gpt-oss-20b-ft-q8.gguf") == models / "gpt-oss-20b-ft-q8.gguf"


def _complete(words: str, cword: int) -> list[str]:
    """What bash's completion hook gets for COMP_WORDS / COMP_CWORD, from the real CLI."""
    r = run_cli(env={"_GPTOSS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_the_cli_completes_models_recipes_and_commands(models):
    assert _complete("gptoss chat ", 2) == ["20b", "120b", "gpt-oss-20b-ft-q8.gguf", "gpt-oss-20b-mxfp4.gguf"]
    assert _complete("gptoss quantize --recipe experts-q", 3) == ["experts-q4", "experts-q3", "experts-q2"]
    assert _complete("gptoss pull some", 2) == ["someorg/gpt-oss-20b-ft"]
    assert {"pull", "quantize", "chat"} <= set(_complete("gptoss ", 1))


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
def test_show_completion_prints_a_bash_script_that_bash_accepts(tmp_path):
    # Typer detects the shell from the process tree (shellingham), so run it from bash as a user would;
    # under pytest alone there may be no shell to detect. `; exit $?` keeps bash from exec'ing the command
    # in its own place, which would leave no bash in the tree either.
    bash = shutil.which("bash")
    r = subprocess.run([bash, "-c", f"{sys.executable} -m gptoss_cli --show-completion; exit $?"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "_GPTOSS_COMPLETE=complete_bash" in r.stdout and "complete -o default -F _gptoss_completion gptoss" \
        in r.stdout
    # the script loads in a real bash and registers the completion for `gptoss`
    script = tmp_path / "gptoss.bash"
    script.write_text(r.stdout)
    check = subprocess.run([bash, "-c", f"source {script} && complete -p gptoss"], capture_output=True,
                           text=True, cwd=ROOT)
    assert check.returncode == 0 and "_gptoss_completion" in check.stdout, check.stderr
    assert "--install-completion" in run_cli("--help").stdout

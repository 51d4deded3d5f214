"""GGUF file names follow the repo (or the local folder), never a commit hash; `20b` still means the base model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from hubserver import HubServer

BASE, FINE_TUNE = "openai/gpt-oss-20b", "someorg/gpt-oss-20b-ft"


def test_stems_of_repos_and_folders(tmp_path):
    from gptoss_cli import paths

    assert paths.repo_stem(BASE) == "gpt-oss-20b" and paths.repo_stem(FINE_TUNE) == "gpt-oss-20b-ft"
    commit = "0123456789abcdef0123456789abcdef01234567"
    cached = tmp_path / "hub" / "models--someorg--gpt-oss-20b-ft" / "snapshots" / commit
    assert paths.folder_stem(cached) == "gpt-oss-20b-ft"
    assert paths.folder_stem(tmp_path / "my-finetune") == "my-finetune"
    assert paths.folder_stem(tmp_path / "copies" / commit) == "copies"  # a copied snapshot keeps no hash in names


def test_model_names_pick_their_own_ggufs_only(isolated_home):
    from gptoss_cli import paths

    models = paths.models_dir()
    models.mkdir(parents=True)
    for name in ("gpt-oss-20b-mxfp4", "gpt-oss-20b-ft-mxfp4", "gpt-oss-20b-ft-q8", "gpt-oss-120b-experts-q3",
                 "gpt-oss-20b-mxfp4-custom", "gpt-oss-20b.imatrix"):
        (models / f"{name}.gguf").write_bytes(b"GGUF")
    names = lambda arg: sorted(p.name for p in paths.model_ggufs(arg))  # noqa: E731
    assert names("20b") == names(BASE) == ["gpt-oss-20b-mxfp4-custom.gguf", "gpt-oss-20b-mxfp4.gguf"]
    assert names(FINE_TUNE) == names("gpt-oss-20b-ft") == names("20b-ft") == \
        ["gpt-oss-20b-ft-mxfp4.gguf", "gpt-oss-20b-ft-q8.gguf"]
    assert names("120b") == ["gpt-oss-120b-experts-q3.gguf"]


@pytest.fixture
def hub(tiny_checkpoint, monkeypatch):
    """A loopback hub serving the tiny checkpoint as both the base repo and a fine-tune of it."""
    files = {p.relative_to(tiny_checkpoint).as_posix(): p for p in tiny_checkpoint.rglob("*") if p.is_file()}
    with HubServer() as server:
        server.add_repo(BASE, files)
        server.add_repo(FINE_TUNE, files)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def _quantize_last_pull() -> Path:
    r = run_cli("quantize", "--json")  # no argument: the snapshot just pulled
    assert r.returncode == 0, r.stderr
    return Path(json.loads(r.stdout)["path"])


def test_bare_quantize_names_files_after_the_repo_and_20b_stays_the_base(hub, isolated_home, tmp_path):
    assert run_cli("pull", "20b").returncode == 0
    base = _quantize_last_pull()
    assert base.name == "gpt-oss-20b-mxfp4.gguf"
    assert run_cli("pull", FINE_TUNE).returncode == 0
    tuned = _quantize_last_pull()  # written last: the newest GGUF in the folder
    assert tuned.name == "gpt-oss-20b-ft-mxfp4.gguf" and base.is_file()
    for arg, want in (("20b", base), (FINE_TUNE, tuned), ("gpt-oss-20b-ft", tuned)):
        info = run_cli("info", arg, "--json")
        assert info.returncode == 0 and json.loads(info.stdout)["path"] == str(want), (arg, info.stderr)
    reply = tmp_path / "reply.txt"
    reply.write_text("<|channel|>final<|message|>ok<|return|>")
    chat = run_cli("chat", "20b", "-p", "hi", "--ctx-size", "256", "--json", env={"GPTOSS_TEST_REPLY": str(reply)})
    assert chat.returncode == 0 and json.loads(chat.stdout)["model"] == str(base), chat.stderr
    rm = run_cli("rm", "20b", "--gguf-only", "--yes")
    assert rm.returncode == 0 and not base.exists() and tuned.exists()


def test_local_folder_names_the_file(tiny_checkpoint, tmp_path, isolated_home):
    import shutil

    folder = tmp_path / "my-finetune"
    shutil.copytree(tiny_checkpoint, folder)
    r = run_cli("quantize", str(folder), "--recipe", "q8", "--json")
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["path"]) == isolated_home / "gptoss" / "models" / "my-finetune-q8.gguf"


def test_imatrix_default_name_is_where_quantize_looks_for_it(isolated_home):
    from gptoss_cli.quant.imatrix import default_output
    from gptoss_cli.quant.quantize import imatrix_path

    # a fine-tune's importance matrix must not land under (and overwrite) the base model's
    assert default_output(Path("gpt-oss-20b-ft-experts-q4.gguf")) == imatrix_path("gpt-oss-20b-ft")
    assert default_output(Path("gpt-oss-20b-f16.gguf")) == imatrix_path("gpt-oss-20b")
    assert default_output(Path("gpt-oss-120b-mxfp4-custom.gguf")) == imatrix_path("gpt-oss-120b")

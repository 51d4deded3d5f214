"""With no model argument and no record of a last GGUF (a fresh state folder, a copied GGUF), `gptoss chat`
and `gptoss serve` take the newest GGUF in $GPTOSS_HOME/models and say which on stderr."""

from __future__ import annotations

import json
import os
import shutil

from serveutil import start, stop

from gptoss_cli import paths


def _models_folder_with_two(tiny_gguf):
    """Two copies of the fixture in the models folder, the second newer, and a newer importance matrix."""
    folder = paths.models_dir()
    folder.mkdir(parents=True)
    older, newer = folder / "gpt-oss-tiny-mxfp4.gguf", folder / "gpt-oss-tiny-copy-mxfp4.gguf"
    for i, path in enumerate((older, newer, folder / "gpt-oss-tiny.imatrix.gguf")):
        shutil.copyfile(tiny_gguf, path)
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    assert paths.recall("gguf") is None
    return newer


def test_chat_with_no_record_takes_the_newest_gguf_in_the_models_folder(cli, tiny_gguf):
    newer = _models_folder_with_two(tiny_gguf)
    r = cli("chat", "-p", "hi", "--max-tokens", "3", "--ctx-size", "256", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["model"] == str(newer)
    assert f"using {newer} (the newest GGUF in {paths.models_dir()})" in r.stderr


def test_a_recorded_gguf_still_wins(cli, tiny_gguf):
    _models_folder_with_two(tiny_gguf)
    paths.remember("gguf", tiny_gguf)
    r = cli("chat", "-p", "hi", "--max-tokens", "3", "--ctx-size", "256", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["model"] == str(tiny_gguf), r.stderr
    assert f"using {tiny_gguf} (the last GGUF written)" in r.stderr


def test_an_empty_models_folder_is_a_one_line_error(cli):
    paths.models_dir().mkdir(parents=True)
    (paths.models_dir() / "gpt-oss-tiny.imatrix.gguf").write_bytes(b"GGUF")  # not a model
    r = cli("chat", "-p", "hi")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "no GGUF in" in lines[0]


def test_serve_with_no_record_takes_the_newest_gguf_too(tiny_gguf):
    newer = _models_folder_with_two(tiny_gguf)
    served = start(None, "-c", "256")
    try:
        status, body = served.request("GET", "/v1/models")
        assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [newer.stem]
    finally:
        assert stop(served) == 130
    assert f"using {newer} (the newest GGUF in {paths.models_dir()})" in "".join(served.stderr)

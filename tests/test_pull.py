"""`gptoss pull`, `list` and `rm` against a loopback hub (tests/hubserver.py) laid out like openai/gpt-oss-20b."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA, ROOT, run_cli
from hubserver import HubServer

REPO = "openai/gpt-oss-20b"
SHARDS = {"model-00000-of-00002.safetensors": 6 << 20, "model-00001-of-00002.safetensors": 3 << 20,
          "model-00002-of-00002.safetensors": 2 << 20}
NEEDED = {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json", *SHARDS}
TOKEN = "hf_TESTsecretTOKEN0123456789"
CHUNK = 1 << 20  # downloads are written in 1 MiB chunks (gptoss_cli.hub.client.CHUNK_SIZE): a cut loses at most one


def repo_files(seed: int = 0) -> dict[str, bytes]:
    """The 20b layout: converter files, docs, and the original/ and metal/ decoys (random bytes)."""
    blob = random.Random(seed).randbytes
    index = {"metadata": {"total_size": sum(SHARDS.values())},
             "weight_map": {f"t{i}": name for i, name in enumerate(SHARDS)}}
    files = {"config.json": (DATA / "gpt-oss-20b.config.json").read_bytes(),
             "generation_config.json": b'{"eos_token_id": [200002, 199999, 200012]}',
             "tokenizer.json": blob(300_000), "tokenizer_config.json": b'{"model_max_length": 131072}',
             "special_tokens_map.json": b'{"eos_token": "<|return|>"}',
             "chat_template.jinja": (DATA / "gpt-oss.chat_template.jinja").read_bytes(),
             "model.safetensors.index.json": json.dumps(index).encode(),
             "LICENSE": b"Apache-2.0", "README.md": b"# gpt-oss-20b", "USAGE_POLICY": b"policy",
             "original/config.json": b"{}", "original/dtypes.json": b"{}",
             "original/model.safetensors": blob(4 << 20), "metal/model.bin": blob(4 << 20)}
    files |= {name: blob(size) for name, size in SHARDS.items()}
    return files


@pytest.fixture
def hub(monkeypatch):
    """A loopback hub serving the fixture repo; HF_ENDPOINT points at it."""
    with HubServer() as server:
        server.add_repo(REPO, repo_files(), lfs={"tokenizer.json"})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("GPTOSS_PULL_RETRY_WAIT", "0")  # retries (bounded) without waiting
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def snapshot(home: Path, repo: str = REPO) -> Path:
    storage = home / "hf" / "hub" / ("models--" + repo.replace("/", "--"))
    commit = (storage / "refs" / "main").read_text()
    return storage / "snapshots" / commit


def error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_pull_fetches_only_what_a_converter_needs(hub, isolated_home):
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert folder == snapshot(isolated_home)
    assert {p.name for p in folder.iterdir()} == NEEDED
    assert hub.files_requested() == NEEDED  # never original/, metal/ or the docs
    served = hub.repos[REPO].files
    for name in NEEDED:
        assert (folder / name).read_bytes() == served[name].read(0, served[name].size)
    # huggingface_hub's own cache reader finds every file (so transformers and `hf` do too)
    from huggingface_hub import try_to_load_from_cache
    hit = try_to_load_from_cache(REPO, "model-00001-of-00002.safetensors",
                                 cache_dir=isolated_home / "hf" / "hub")
    assert hit and Path(hit).resolve() == (folder / "model-00001-of-00002.safetensors").resolve()


def test_second_pull_is_a_noop_that_only_lists_the_repo(hub, isolated_home):
    assert run_cli("pull", "20b").returncode == 0
    hub.reset_stats()
    from gptoss_cli.hub.pull import PullOptions, run_pull
    report = run_pull(PullOptions(model="20b"))
    assert report["status"] == "up_to_date"
    # What makes a rerun cheap is what the hub saw: one listing, no file metadata, not a byte of any file.
    assert hub.served == {}
    seen = [(method, path.split("?")[0]) for method, path, *_ in hub.requests]
    assert [r for r in seen if r[1].startswith(("/api/models/", f"/{REPO}/", "/cdn/"))] == \
        [("GET", f"/api/models/{REPO}/revision/main")]
    again = run_cli("pull", "20b", "--json")
    doc = json.loads(again.stdout)
    assert doc["status"] == "up_to_date" and doc["plan"]["download_bytes"] == 0
    assert {f["name"] for f in doc["plan"]["files"]} == NEEDED


def test_cut_connection_then_rerun_resumes(hub, isolated_home):
    name, cut = "model-00000-of-00002.safetensors", 4_500_000
    hub.faults.cut_after[name] = cut  # then the server answers 503 for this file: the first run fails
    first = run_cli("pull", "20b")
    assert first.returncode == 1
    assert "503" in error_line(first) and "resumes" in error_line(first)
    partials = list((isolated_home / "hf" / "hub").rglob("*.incomplete"))
    assert len(partials) == 1 and cut - CHUNK < partials[0].stat().st_size <= cut
    hub.faults.down.clear()
    hub.reset_stats()
    second = run_cli("pull", "20b")
    assert second.returncode == 0, second.stderr
    size = SHARDS[name]
    assert size - cut <= hub.served[name] < size - cut + CHUNK  # only the remainder came over the wire
    data = (snapshot(isolated_home) / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hub.repos[REPO].files[name].sha256
    assert not list((isolated_home / "hf" / "hub").rglob("*.incomplete"))


def test_ctrl_c_keeps_finished_bytes_and_rerun_resumes(hub, isolated_home):
    name = "model-00000-of-00002.safetensors"
    hub.faults.hold[name] = 3 * CHUNK  # the server pauses after 3 MiB of this file until released
    proc = subprocess.Popen([sys.executable, "-m", "gptoss_cli", "pull", "20b"], cwd=ROOT, env=os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert hub.faults.held.wait(120), "the pull never reached the hold point"
        partial = (isolated_home / "hf" / "hub" / "models--openai--gpt-oss-20b" / "blobs"
                   / (hub.repos[REPO].files[name].sha256 + ".incomplete"))
        _wait_for(lambda: partial.is_file() and partial.stat().st_size == 3 * CHUNK, proc)
        proc.send_signal(signal.SIGINT)
        # pull says it stopped writing before it waits for its workers; only then may more bytes flow
        lines = iter(proc.stderr.readline, "")
        assert any("interrupted: stopping the downloads" in line for line in lines)
    finally:
        hub.faults.release.set()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err
    assert partial.stat().st_size == 3 * CHUNK  # every byte received is kept, nothing after Ctrl-C
    hub.reset_stats()
    assert run_cli("pull", "20b").returncode == 0
    assert hub.served[name] == SHARDS[name] - 3 * CHUNK
    data = (snapshot(isolated_home) / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hub.repos[REPO].files[name].sha256


def _wait_for(condition, proc, limit: float = 120) -> None:
    """Poll until condition() holds (the event); the limit only turns a hang into a failure."""
    deadline = time.monotonic() + limit
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_dropped_connection_resumes_within_the_run(hub, isolated_home):
    name = "model-00000-of-00002.safetensors"
    hub.faults.after_cut_status = None
    hub.faults.cut_after[name] = 4_500_000
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert hub.served[name] < SHARDS[name] + CHUNK  # resumed with a Range request, not fetched twice
    assert any(r[2] == f"bytes={4 * CHUNK}-" for r in hub.requests)


def test_corrupted_bytes_are_caught_and_refetched_once(hub, isolated_home):
    name = "model-00002-of-00002.safetensors"
    hub.faults.corrupt[name] = 1
    result = run_cli("pull", "20b", env={"GPTOSS_PROGRESS": "1"})  # bars on, as in a terminal
    assert result.returncode == 0, result.stderr
    assert "checksum mismatch" in result.stderr
    data = (snapshot(isolated_home) / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == hub.repos[REPO].files[name].sha256


def test_listing_without_sizes_takes_them_from_head_metadata(hub, isolated_home):
    """A mirror that ignores blobs=true: sizes and checksums come from each file's HEAD, as hf_hub_download does."""
    hub.faults.sizes_listed = False
    hub.faults.corrupt["config.json"] = 1  # a git-blob-id checked file ...
    hub.faults.corrupt["model-00002-of-00002.safetensors"] = 1  # ... and a sha256 checked one
    result = run_cli("pull", "20b", "--json", env={"GPTOSS_PROGRESS": "1"})
    assert result.returncode == 0, result.stderr
    served = hub.repos[REPO].files
    plan = {f["name"]: f for f in json.loads(result.stdout)["plan"]["files"]}
    assert {n: f["size"] for n, f in plan.items()} == {n: served[n].size for n in NEEDED}
    assert plan["model-00002-of-00002.safetensors"]["sha256"] == served["model-00002-of-00002.safetensors"].sha256
    assert result.stderr.count("checksum mismatch") == 2  # both corruptions caught by the HEAD's checksums
    assert "(0 B)" not in result.stderr
    folder = snapshot(isolated_home)
    for name in NEEDED:
        assert (folder / name).read_bytes() == served[name].read(0, served[name].size), name
    hub.reset_stats()
    again = run_cli("pull", "20b")
    assert again.returncode == 0 and "up to date" in again.stderr and hub.served == {}


def test_an_empty_file_from_an_earlier_run_is_not_done(hub, isolated_home):
    assert run_cli("pull", "20b").returncode == 0
    config = snapshot(isolated_home) / "config.json"
    blob = config.resolve()
    blob.write_bytes(b"")  # what an old pull against a size-less listing left behind
    hub.reset_stats()
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert set(hub.served) == {"config.json"}
    served = hub.repos[REPO].files["config.json"]
    assert config.read_bytes() == served.read(0, served.size)


def test_corrupted_twice_fails_naming_the_file(hub, isolated_home):
    name = "model-00002-of-00002.safetensors"
    hub.faults.corrupt[name] = 2
    result = run_cli("pull", "20b", "--max-workers", "1")
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("error: checksum mismatch") and name in line
    blob = isolated_home / "hf" / "hub" / "models--openai--gpt-oss-20b" / "blobs" / hub.repos[REPO].files[name].sha256
    assert not blob.exists() and not blob.with_name(blob.name + ".incomplete").exists()


def test_no_verify_skips_the_check(hub, isolated_home):
    name = "model-00002-of-00002.safetensors"
    hub.faults.corrupt[name] = 1
    result = run_cli("pull", "20b", "--no-verify")
    assert result.returncode == 0 and "verification off" in result.stderr
    data = (snapshot(isolated_home) / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() != hub.repos[REPO].files[name].sha256


@pytest.mark.parametrize("case, code, words", [
    ("private-no-token", 2, ["HF_TOKEN"]),
    ("private-bad-token", 2, ["HTTP 401", "token"]),
    ("gated", 2, ["gated", "Accept its terms"]),
    ("missing", 2, ["not found"]),
    ("bad-revision", 2, ["revision 'v9' does not exist"]),
    ("server-error", 1, ["HTTP 500", "Try again later"]),
])
def test_hub_errors_are_one_line_with_a_next_step(hub, case, code, words):
    args, env = ["pull", "someone/gpt-oss-private"], {}
    if case.startswith("private"):
        hub.add_repo("someone/gpt-oss-private", repo_files(), access="private", token="hf_the_right_one")
        env = {"HF_TOKEN": TOKEN} if case == "private-bad-token" else {}
    elif case == "gated":
        hub.add_repo("someone/gpt-oss-private", repo_files(), access="gated", token="hf_the_right_one")
        args += ["--token", TOKEN]
    elif case == "bad-revision":
        args = ["pull", "20b", "--revision", "v9"]
    elif case == "server-error":
        hub.faults.status = 500
    result = run_cli(*args, env=env)
    assert result.returncode == code
    line = error_line(result)
    for w in words:
        assert w in line
    assert TOKEN not in result.stdout + result.stderr
    assert hub.served == {}


def test_token_is_sent_to_the_hub_but_not_to_the_cdn(hub, isolated_home):
    hub.add_repo("someone/gpt-oss-private", repo_files(1), access="private", token=TOKEN)
    result = run_cli("pull", "someone/gpt-oss-private", env={"HF_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    cdn = [r for r in hub.requests if r[1].startswith("/cdn/")]
    assert cdn and not any(had_auth for *_, had_auth in cdn)


EVIL = "../../../../escape-target"
SHARD = "model-00002-of-00002.safetensors"


def _hostile(hub, field: str) -> None:
    """A mirror that serves a path instead of a hash, consistently in its listing and its headers."""
    f = hub.faults
    if field == "blobId":
        f.listing["config.json"] = {"blobId": EVIL}
        f.head["config.json"] = {"ETag": f'"{EVIL}"'}
    elif field == "LFS sha256":
        f.listing[SHARD] = {"lfs": {"size": SHARDS[SHARD], "sha256": EVIL, "pointerSize": 134}}
        f.head[SHARD] = {"X-Linked-Etag": f'"{EVIL}"'}
    elif field == "commit sha":
        f.listing_sha = EVIL
    else:  # the ETag of a HEAD, where a listing without hashes sends pull for them
        f.sizes_listed = False
        f.head["config.json"] = {"ETag": f'"{EVIL}"'}


@pytest.mark.parametrize("field", ["blobId", "LFS sha256", "commit sha", "ETag"])
def test_a_hostile_mirror_cannot_name_files_with_its_hashes(hub, isolated_home, field):
    _hostile(hub, field)
    result = run_cli("pull", "20b")
    assert result.returncode == 1
    line = error_line(result)
    assert line.startswith("error: refusing repo") and f"the hub sent the {field} '{EVIL}'" in line
    assert hub.served == {}  # refused before a byte is fetched
    assert not [p for p in isolated_home.rglob("*") if "escape" in p.name]


def test_credentials_in_hf_endpoint_are_never_printed(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror-user:s3cret-pass@127.0.0.1:9")  # nothing listens on 9
    result = run_cli("pull", "20b")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in error_line(result)
    assert "s3cret-pass" not in result.stdout + result.stderr and "mirror-user" not in result.stderr


def test_help_warns_that_token_is_visible_in_ps():
    text = " ".join(run_cli("pull", "--help", env={"COLUMNS": "200"}).stdout.replace("│", " ").split())
    assert "token on the command line is visible to other local users in ps: prefer HF_TOKEN or the saved login" in text


def test_no_network_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    result = run_cli("pull", "20b")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in error_line(result)


def test_offline_mode_uses_only_local_files(hub, isolated_home):
    assert run_cli("pull", "20b").returncode == 0
    hub.reset_stats()
    ok = run_cli("pull", "20b", env={"HF_HUB_OFFLINE": "1"})
    assert ok.returncode == 0 and "offline" in ok.stderr
    assert hub.requests == []
    missing = run_cli("pull", "120b", env={"HF_HUB_OFFLINE": "1"})
    assert missing.returncode == 2 and "HF_HUB_OFFLINE" in error_line(missing)


def test_disk_preflight_refuses_before_a_single_byte(hub, isolated_home):
    result = run_cli("pull", "20b", env={"GPTOSS_FAKE_FREE_BYTES": str(100 << 20)})
    assert result.returncode == 2
    assert error_line(result).startswith("error: not enough disk space")
    assert hub.served == {}
    assert not list((isolated_home / "hf").rglob("blobs/*"))


def test_file_names_escaping_the_folder_are_refused(hub, isolated_home, tmp_path):
    files = repo_files()
    files["../../escape.safetensors"] = b"x" * 10
    hub.add_repo("evil/gpt-oss", files)
    result = run_cli("pull", "evil/gpt-oss", "--dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "unsafe file name" in error_line(result) and "escape.safetensors" in error_line(result)
    assert hub.served == {}
    assert not (tmp_path / "escape.safetensors").exists()


def test_a_repo_that_is_not_gpt_oss_is_refused(hub):
    files = repo_files()
    files["config.json"] = json.dumps({"model_type": "llama"}).encode()
    hub.add_repo("meta/llama", files)
    result = run_cli("pull", "meta/llama")
    assert result.returncode == 2 and "'llama', not 'gpt_oss'" in error_line(result)
    assert set(hub.served) == {"config.json"}


def test_pull_into_a_folder_then_up_to_date(hub, tmp_path):
    out = tmp_path / "gpt-oss-20b"
    first = run_cli("pull", "20b", "--dir", str(out), "--json")
    doc = json.loads(first.stdout)
    assert first.returncode == 0 and doc["status"] == "downloaded" and doc["path"] == str(out)
    assert {p.name for p in out.iterdir() if p.name != ".cache"} == NEEDED
    hub.reset_stats()
    second = run_cli("pull", "20b", "--dir", str(out))
    assert second.returncode == 0 and "up to date" in second.stderr and hub.served == {}


def test_pinned_revision(hub, isolated_home):
    commit = hub.repos[REPO].commit
    result = run_cli("pull", "20b", "--revision", commit)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).name == commit
    assert all(f"/resolve/{commit}/" in r[1] for r in hub.requests if "/resolve/" in r[1])


def test_list_and_rm_round_trip(hub, isolated_home):
    assert run_cli("pull", "20b").returncode == 0
    gguf = isolated_home / "gptoss" / "models" / "gpt-oss-20b-mxfp4.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + bytes(100))
    rows = json.loads(run_cli("list", "--json").stdout)["models"]
    kinds = {r["kind"]: r for r in rows}
    assert kinds["snapshot"]["name"] == "20b" and kinds["snapshot"]["complete"]
    blobs = {f.etag: f.size for n, f in hub.repos[REPO].files.items() if n in NEEDED}  # equal files share a blob
    assert kinds["snapshot"]["bytes"] == sum(blobs.values())
    assert kinds["gguf"]["path"] == str(gguf)
    refused = run_cli("rm", "20b", input="")
    assert refused.returncode == 2 and "--yes" in error_line(refused) and gguf.exists()
    only_gguf = run_cli("rm", "20b", "--gguf-only", "--yes")
    assert only_gguf.returncode == 0 and not gguf.exists() and snapshot(isolated_home).is_dir()
    gone = run_cli("rm", "20b", "--yes", "--json")
    assert gone.returncode == 0 and json.loads(gone.stdout)["freed_bytes"] > 8 << 20
    assert json.loads(run_cli("list", "--json").stdout)["models"] == []
    assert run_cli("rm", "20b", "--yes").returncode == 2


def test_pull_quantize_gives_a_gguf_that_info_reads(tiny_checkpoint, isolated_home, monkeypatch):
    files = {p.relative_to(tiny_checkpoint).as_posix(): p for p in tiny_checkpoint.rglob("*") if p.is_file()}
    with HubServer() as server:
        server.add_repo("test/gpt-oss-tiny", files)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        result = run_cli("pull", "test/gpt-oss-tiny", "--quantize", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    gguf = Path(doc["quantize"]["path"])
    assert gguf.is_file() and gguf.parent == isolated_home / "gptoss" / "models"
    info = run_cli("info", "--json")  # no argument: the GGUF the pull just wrote
    assert info.returncode == 0, info.stderr
    meta = json.loads(info.stdout)
    assert meta["path"] == str(gguf) and meta["metadata"]["general.architecture"] == "gpt-oss"
    assert meta["vocab"] == 201088 and any(c["type"] == "MXFP4" for c in meta["classes"])

"""`gptoss pull` against a loopback hub that serves LFS files the way huggingface.co serves Xet-backed repos
(openai/gpt-oss-20b, -120b): a 302 to a download host on a signed URL that expires (tests/xethub.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from test_pull import CHUNK, NEEDED, REPO, SHARDS, error_line, repo_files, snapshot
from xethub import XetHub

BIG = "model-00000-of-00002.safetensors"


@pytest.fixture
def xet(monkeypatch):
    """A Xet-style loopback hub serving the fixture repo; retries wait 0 s (GPTOSS_PULL_RETRY_WAIT)."""
    with XetHub() as server:
        server.add_repo(REPO, repo_files(), lfs={"tokenizer.json"})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("GPTOSS_PULL_RETRY_WAIT", "0")
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def assert_pulled(home: Path, hub: XetHub) -> None:
    folder = snapshot(home)
    served = hub.repos[REPO].files
    for name in NEEDED:
        assert (folder / name).read_bytes() == served[name].read(0, served[name].size), name
    blobs = folder.parents[1] / "blobs"
    assert {p.name for p in blobs.iterdir()} >= {served[n].sha256 for n in SHARDS}  # named by sha256, as hf does
    assert not list(blobs.glob("*.incomplete"))


def test_pull_from_a_xet_style_hub(xet, isolated_home):
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert_pulled(isolated_home, xet)
    assert all(xet.served[n] == SHARDS[n] for n in SHARDS)  # each byte once


def test_a_drop_after_the_signed_url_expired_resumes_on_a_fresh_one(xet, isolated_home):
    """A slow line: the connection drops more than an hour into a shard, when its signed URL has expired."""
    xet.faults.after_cut_status = None
    xet.faults.cut_after[BIG] = 4_500_000
    xet.faults.on_cut = lambda: setattr(xet, "clock", xet.clock + 3601)
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert_pulled(isolated_home, xet)
    assert xet.issued[BIG] == 2  # asked the hub for a fresh link ...
    assert xet.served[BIG] < SHARDS[BIG] + CHUNK  # ... and resumed there, not from byte 0
    assert any(r[1].startswith("/xet-bridge/") and r[2] == f"bytes={4 * CHUNK}-" for r in xet.requests)


@pytest.mark.parametrize("status", [403, 500, 502, 503])
def test_one_refusal_or_error_from_the_download_host_is_retried(xet, isolated_home, status):
    xet.host_status[BIG] = [status]
    result = run_cli("pull", "20b", env={"GPTOSS_PROGRESS": "1"})
    assert result.returncode == 0, result.stderr
    assert f"{BIG}: the download host answered HTTP {status}; retrying" in result.stderr
    assert_pulled(isolated_home, xet)
    assert xet.issued[BIG] == 2


def test_a_download_host_that_keeps_refusing_is_not_a_token_problem(xet, isolated_home):
    xet.host_status[BIG] = [403] * 100
    result = run_cli("pull", "20b", "--max-workers", "1")
    assert result.returncode == 1  # a run-time failure: the repo is public and the input was fine
    line = error_line(result)
    assert BIG in line and "download host answered HTTP 403" in line and "rerun resumes" in line
    assert "token" not in line.lower()
    assert [s for n, s in xet.host_answers if n == BIG] == [403] * 6  # bounded: the first try and 5 retries


def test_a_hub_error_when_asking_for_a_fresh_link_is_retried_too(xet, isolated_home):
    xet.faults.cut_after[BIG] = 4_500_000
    xet.faults.after_cut_status = None
    xet.faults.on_cut = lambda: xet.faults.resolve_status.__setitem__(BIG, [503, 502])
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert_pulled(isolated_home, xet)
    assert xet.served[BIG] < SHARDS[BIG] + CHUNK


def test_the_hubs_own_refusal_still_asks_for_a_token(xet, isolated_home):
    xet.faults.resolve_status[BIG] = [403]
    result = run_cli("pull", "20b")
    assert result.returncode == 2
    assert "the hub refused access (HTTP 403)" in error_line(result)


def test_a_drop_mid_shard_then_a_server_error_still_finishes(xet, isolated_home):
    xet.faults.cut_after[BIG] = 4_500_000
    xet.faults.after_cut_status = None
    xet.host_status[BIG] = [500, 500]  # answers to the two requests after the drop
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert_pulled(isolated_home, xet)
    assert xet.served[BIG] < SHARDS[BIG] + CHUNK


def test_a_xet_hash_etag_is_never_taken_for_a_sha256(xet, isolated_home):
    for name in SHARDS:
        xet.faults.head[name] = {"X-Linked-Etag": None}  # the redirect's only ETag is the Xet hash
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert_pulled(isolated_home, xet)
    assert all(xet.served[n] == SHARDS[n] for n in SHARDS)  # downloaded once, verified by the listing's sha256


def test_a_redirect_without_any_etag_is_linked_and_rerun_is_up_to_date(xet, isolated_home):
    for name in SHARDS:
        xet.faults.head[name] = {"X-Linked-Etag": None, "ETag": None}
    result = run_cli("pull", "20b")
    assert result.returncode == 0, result.stderr
    assert_pulled(isolated_home, xet)
    xet.reset_stats()
    again = run_cli("pull", "20b")
    assert again.returncode == 0 and "up to date" in again.stderr and xet.served == {}


def test_only_a_xet_hash_and_no_listed_sha256_is_refused_before_downloading(xet, isolated_home):
    xet.faults.sizes_listed = False  # a mirror that ignores blobs=true: checksums come from HEAD
    xet.faults.head[BIG] = {"X-Linked-Etag": None}
    result = run_cli("pull", "20b")
    assert result.returncode == 1
    line = error_line(result)
    assert BIG in line and "Xet hash" in line and "sha256" in line
    assert xet.served == {}

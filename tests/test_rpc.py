"""`gptoss worker` and `--rpc` end to end: real workers (llama.cpp's RPC server) as separate processes on
127.0.0.1, the tiny random-weight GGUF, and the CLI as a user runs it. Only loopback addresses are used.

These tests need a llama.cpp built with its RPC backend (`make install` does it); on an older build they
skip, saying so.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

ROOT = Path(__file__).resolve().parent.parent
from gptoss_cli.engine.ggml import missing_backends  # noqa: E402

pytestmark = pytest.mark.slow
needs_rpc = pytest.mark.skipif(bool(missing_backends(["RPC"])),
                               reason="llama-cpp-python was built without ggml's RPC backend (run `make install`)")
PROMPT = "Name three colours."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WorkerProc:
    """A `gptoss worker` subprocess on 127.0.0.1."""

    def __init__(self, tmp: Path, cache: bool = True) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.cache = tmp / f"cache-{self.port}"
        self.log = tmp / f"worker-{self.port}.log"
        args = [sys.executable, "-m", "gptoss_cli", "worker", "--port", str(self.port), "--threads", "1"]
        if cache:
            args += ["--cache", str(self.cache)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True)
        self.banner = self.proc.stdout.readline()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"worker on {self.endpoint} never listened: {self.log.read_text()}")

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rpc")
    pair = [WorkerProc(tmp), WorkerProc(tmp)]
    yield pair
    codes = [w.stop() for w in pair]
    assert codes == [130, 130], "Ctrl-C stops a worker with the interrupted code"


def _chat(cli, gguf, *args):
    return cli("chat", str(gguf), "-p", PROMPT, "--json", "--temperature", "0", "--max-tokens", "40",
               "--ctx-size", "512", "--threads", "1", *args)


def test_install_check_names_a_missing_backend():
    """`make install` rebuilds llama-cpp-python when this check fails (pip's wheel cache may hold a build
    without RPC); a backend no build has must fail it, by name."""
    check = [sys.executable, "-m", "gptoss_cli.engine.ggml"]
    r = subprocess.run(check + ["NO_SUCH_BACKEND"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1 and "NO_SUCH_BACKEND" in r.stderr
    assert subprocess.run(check + ["CPU"], capture_output=True, text=True, cwd=ROOT).returncode == 0


def test_non_loopback_host_needs_allow_remote(cli):
    r = cli("worker", "--host", "0.0.0.0", "--port", str(free_port()))
    assert r.returncode == 2
    assert "--allow-remote" in r.stderr and "authentication" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


@pytest.mark.parametrize("spec", ["127.0.0.1", "127.0.0.1:notaport", "127.0.0.1:1,127.0.0.1:1", ","])
def test_bad_rpc_address_is_bad_input(cli, tiny_gguf, spec):
    r = _chat(cli, tiny_gguf, "--rpc", spec)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stdout == ""


@needs_rpc
def test_unreachable_worker_is_named(cli, tiny_gguf):
    closed = f"127.0.0.1:{free_port()}"
    r = _chat(cli, tiny_gguf, "--rpc", closed)
    assert r.returncode == 1
    assert f"cannot reach worker ({closed})" in r.stderr and "gptoss worker" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == ""


@needs_rpc
def test_something_else_on_the_port_is_named(cli, tiny_gguf):
    """A TCP server that is not a worker (it closes every connection): ggml-rpc aborts on the failed
    handshake; gptoss turns that into one line naming the address."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    endpoint = f"127.0.0.1:{server.getsockname()[1]}"

    def refuse():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=refuse, daemon=True).start()
    try:
        r = _chat(cli, tiny_gguf, "--rpc", endpoint)
    finally:
        server.close()
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach worker ({endpoint})" in errors[0], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@needs_rpc
def test_worker_unknown_device_and_busy_port(cli, workers):
    r = cli("worker", "--port", str(free_port()), "--device", "NOPE0")
    assert r.returncode == 2 and "no such device" in r.stderr and "CPU" in r.stderr
    busy = cli("worker", "--port", str(workers[0].port))
    assert busy.returncode == 1 and f"worker failed (127.0.0.1:{workers[0].port}): cannot listen" in busy.stderr
    assert len(busy.stderr.strip().splitlines()) == 1 and busy.stdout == ""


@needs_rpc
def test_worker_banner_names_endpoint_and_memory(workers):
    for w in workers:
        assert w.banner.startswith(f"gptoss worker on {w.endpoint}: CPU")
        assert "GiB free" in w.banner


@needs_rpc
def test_greedy_answer_over_two_workers_equals_local(cli, tiny_gguf, workers):
    local = _chat(cli, tiny_gguf)
    remote = _chat(cli, tiny_gguf, "--rpc", ",".join(w.endpoint for w in workers))
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert (b["analysis"], b["final"]) == (a["analysis"], a["final"])
    assert b["tokens"] == a["tokens"]
    assert "workers: " + workers[0].endpoint in remote.stderr


@needs_rpc
def test_worker_holds_the_weights_it_was_sent(cli, tiny_gguf, workers):
    """The last worker takes the output layer; with --cache it keeps output.weight (over ggml-rpc's 10 MiB
    hashing threshold) as a file: byte for byte the tensor of the GGUF."""
    import gguf

    r = _chat(cli, tiny_gguf, "--rpc", ",".join(w.endpoint for w in workers))
    assert r.returncode == 0, r.stderr
    tensor = next(t for t in gguf.GGUFReader(tiny_gguf).tensors if t.name == "output.weight")
    data = tensor.data.tobytes()
    assert len(data) > 10 << 20
    cached = [p.read_bytes() for p in workers[-1].cache.iterdir()]
    assert data in cached
    assert not any(p.stat().st_size == len(data) for p in workers[0].cache.iterdir())


@needs_rpc
def test_plan_shows_each_workers_memory(cli, tiny_gguf, workers):
    spec = ",".join(w.endpoint for w in workers)
    r = cli("plan", str(tiny_gguf), "--rpc", spec, "--ctx-size", "512", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    names = [d["name"] for d in doc["devices"]]
    assert [n.split(" (")[1].rstrip(")") for n in names[:2]] == [w.endpoint for w in workers]
    # CPU workers on this machine report some of its RAM free (a reading of free memory moves: no closer check)
    from gptoss_cli.memory.devices import parse_meminfo

    total = parse_meminfo(Path("/proc/meminfo").read_text())["MemTotal"]
    assert all(0 < d["free"] <= total for d in doc["devices"][:2])
    layers = sorted(il for d in doc["devices"] for il in d["layers"])
    assert layers == list(range(4)) and sum(d["output"] for d in doc["devices"]) == 1
    assert doc["fits"] and doc["command"].endswith(f"--rpc {spec} --ctx-size 512")
    table = cli("plan", str(tiny_gguf), "--rpc", spec, "--ctx-size", "512")
    assert table.returncode == 0 and workers[0].endpoint in table.stdout and "KV cache" in table.stdout


LOAD_LOG = """
import json, sys
from gptoss_cli.engine.loader import LoadOptions, load_model
from gptoss_cli.rpc.client import connect, offload_devices
workers = connect(sys.argv[2])
for split in json.loads(sys.argv[3]):
    lines = []
    load_model(sys.argv[1], LoadOptions(devices=offload_devices(workers), tensor_split=split), lines).close()
    print(json.dumps([line.split()[-4].rstrip(",") for line in lines if "assigned to device" in line]))
"""


@needs_rpc
def test_plan_split_is_llama_cpps(cli, tiny_gguf, workers):
    """The layer -> device split of `plan --rpc` (by free memory) and of --fit (layers per device) is the
    one llama.cpp makes, as its own load log says."""
    from gptoss_cli.memory.multi_device import split_devices

    spec = ",".join(w.endpoint for w in workers)
    plan = json.loads(cli("plan", str(tiny_gguf), "--rpc", spec, "--ctx-size", "512", "--json").stdout)
    planned = [d["name"].split(" ")[0] for il in range(5) for d in plan["devices"]
               if il in d["layers"] or (il == 4 and d["output"])]
    r = subprocess.run([sys.executable, "-c", LOAD_LOG, str(tiny_gguf), spec, "[null, [1.0, 4.0]]"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    by_free, by_split = map(json.loads, r.stdout.splitlines())
    assert by_free == planned                       # layers 0-3 and the output layer (4)
    assert by_split == [f"RPC{d}" for d in split_devices(4, [1, 4])]


@needs_rpc
def test_worker_killed_mid_reply(tiny_gguf, tmp_path):
    """The REPL over two workers; the second dies while a reply streams: exit 1 within seconds, one line
    naming it, and the conversation (the unanswered message included) saved first."""
    pexpect = pytest.importorskip("pexpect")
    pair = [WorkerProc(tmp_path, cache=False), WorkerProc(tmp_path, cache=False)]
    try:
        # A 16k context and no token limit: the reply cannot end before the kill, sent once its first text
        # has streamed (as in test_chat_cli's Ctrl-C test).
        child = pexpect.spawn(sys.executable, ["-m", "gptoss_cli", "chat", str(tiny_gguf), "--ctx-size", "16384",
                                               "--seed", "3", "--threads", "1",
                                               "--rpc", ",".join(w.endpoint for w in pair)],
                              cwd=str(ROOT), env={**os.environ, "TERM": "xterm"}, encoding="utf-8", timeout=120,
                              dimensions=(30, 100))
        child.expect_exact(">>> ")
        child.sendline("Tell me a very long story.")
        child.expect_exact("Tell me a very long story.")
        child.expect(r"\S", timeout=60)          # the reply is streaming
        pair[1].proc.kill()
        child.expect(pexpect.EOF, timeout=120)   # the event: the chat ends (a hang fails at the limit)
        child.close()
        out = child.before or ""
    finally:
        for w in pair:
            w.stop()
    assert child.exitstatus == 1, out
    shown = " ".join(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out).split())   # as read on the terminal
    assert shown.count("error:") == 1, shown
    line = shown[shown.index("error:"):]
    assert line.startswith(f"error: worker lost ({pair[1].endpoint}): it stopped answering"), shown
    saved = list((Path(os.environ["XDG_STATE_HOME"]) / "gptoss" / "conversations").glob("worker-lost-*.json"))
    assert len(saved) == 1 and str(saved[0]) in "".join(line.split())   # Rich may wrap the path at a hyphen
    doc = json.loads(saved[0].read_text())
    assert doc["turns"][-1]["user"] == "Tell me a very long story."


@needs_rpc
def test_serve_over_two_workers_answers_as_local(tiny_gguf, workers):
    import serveutil

    body = json.dumps({"messages": [{"role": "user", "content": PROMPT}], "temperature": 0,
                       "max_tokens": 24}).encode()
    answers = []
    rpc = ["--rpc", ",".join(w.endpoint for w in workers), "--gpu-layers", "-1"]
    for extra in ([], rpc, [*rpc, "--fit"]):
        served = serveutil.start(tiny_gguf, "--ctx-size", "512", "--parallel", "1", *extra)
        try:
            status, raw = served.request("POST", "/v1/chat/completions", body,
                                         {"Content-Type": "application/json"}, timeout=120)
        finally:
            assert serveutil.stop(served, signal.SIGTERM) == 0
        assert status == 200, raw
        message = json.loads(raw)["choices"][0]["message"]
        answers.append((message["content"], message.get("reasoning_content")))
        if extra:
            assert any("workers: " + workers[0].endpoint in line for line in served.stderr)
        if "--fit" in extra:   # planned over the local RAM and both workers' devices
            assert any("context 512, 2 devices" in line for line in served.stderr)
            assert any(line.startswith("--fit: ") for line in served.stderr)
    assert answers[0] == answers[1] == answers[2]


@needs_rpc
def test_eval_over_two_workers_scores_as_local(cli, tiny_gguf, workers, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 30)
    args = ["eval", str(tiny_gguf), str(tiny_gguf), "--text", str(text), "--ctx-size", "64", "--chunks", "2",
            "--threads", "1", "--json"]
    local, remote = cli(*args), cli(*args, "--rpc", ",".join(w.endpoint for w in workers))
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    a, b = json.loads(local.stdout)["results"], json.loads(remote.stdout)["results"]
    assert [r["ppl"] for r in b] == pytest.approx([r["ppl"] for r in a], rel=1e-4)
    # eval loads with llama.cpp's own device choice: the registered workers are in it
    code = ("import sys\nfrom gptoss_cli.engine.loader import LoadOptions, load_model\n"
            "from gptoss_cli.rpc.client import connect\nconnect(sys.argv[2])\nlines = []\n"
            "load_model(sys.argv[1], LoadOptions(), lines).close()\n"
            "print(' '.join(l.split()[-4] for l in lines if 'assigned to device' in l))")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_gguf), ",".join(w.endpoint for w in workers)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "RPC0," in r.stdout and "RPC1," in r.stdout, r.stdout + r.stderr

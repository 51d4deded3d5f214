"""`gptoss pull`'s download step: config.json first (checked to be gpt-oss), then the other files in parallel;
the first failure stops the rest (their partial files stay for the next run)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path

from converters.errors import GptossError
from gptoss_cli.hub.client import Callbacks, Plan, Retry, assert_gpt_oss, repo_storage
from gptoss_cli.hub.errors import translate
from gptoss_cli.hub.transfer import fetch_file


def download(plan: Plan, token: str | None, verify: bool = True, workers: int = 8,
             callbacks: Callbacks | None = None, retry: Retry | None = None) -> Path:
    """Fetch every missing file of the plan (config.json first), verify it, link it; return the folder."""
    from huggingface_hub import constants

    from gptoss_cli.hub.client import CHUNK_SIZE

    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_SIZE
    cb = callbacks or Callbacks()
    cancel = threading.Event()
    todo = [f for f in plan.files if not f.present]
    first = [f for f in todo if f.name == "config.json"]
    try:
        for f in first:
            fetch_file(plan, f, token, verify, cb, cancel, retry or Retry())
        assert_gpt_oss(plan.target / "config.json", plan.repo_id)
        rest = sorted((f for f in todo if f.name != "config.json"), key=lambda f: -f.size)
        if rest:
            pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(rest))), thread_name_prefix="pull")
            try:
                futures = [pool.submit(fetch_file, plan, f, token, verify, cb, cancel, retry or Retry()) for f in rest]
                wait(futures, return_when=FIRST_EXCEPTION)
                failed = [exc for fu in futures if fu.done() and (exc := fu.exception()) is not None]
                if failed:
                    raise failed[0]
            except KeyboardInterrupt:
                cancel.set()
                cb.stopping()  # workers stop at their next chunk, which a stalled connection may delay
                raise
            finally:
                cancel.set()  # stops the other workers at their next chunk; their partial files stay
                pool.shutdown(wait=True, cancel_futures=True)
    except GptossError:
        raise
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one typed error
        raise translate(exc, plan.repo_id, plan.revision, token) from exc
    if plan.local_dir is None and plan.revision != plan.commit:
        _write_ref(plan)
    return plan.target


def _write_ref(plan: Plan) -> None:
    ref = repo_storage(plan.repo_id) / "refs" / plan.revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + ".partial")
    tmp.write_text(plan.commit)
    os.replace(tmp, ref)

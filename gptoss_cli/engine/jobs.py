"""A generation request as the batch engine takes it (Job), and the engine's two refusals."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from converters.errors import RunFailure
from gptoss_cli.engine.constrain import Controller


class QueueFull(RunFailure):
    """Every slot is busy and the waiting queue is full."""

    what = "server busy"


class ShuttingDown(RunFailure):
    """The engine no longer takes jobs."""

    what = "shutting down"


@dataclass
class Job:
    """One generation request. Callbacks run on the engine thread and must be quick.

    on_token(token) -> bool: a committed token (sampled or forced); False ends the job ("stop").
    on_end(reason): exactly once, with "stop", "length", "cancelled", "shutdown" or "error: why".
    on_start(): when it gets a slot (never, if it ends while waiting).
    """

    prompt: list[int]
    max_tokens: int
    on_token: Callable[[int], bool]
    on_end: Callable[[str], None]
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    control: Controller | None = None
    on_start: Callable[[], None] | None = None
    cancelled: bool = False
    reused_tokens: int = 0
    gen_tokens: int = 0
    t_submit: float = field(default_factory=time.perf_counter)
    t_first: float | None = None

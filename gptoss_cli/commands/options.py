"""Option and argument declarations that several commands share (the huggingface_hub CLI's Annotated style)."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from gptoss_cli.completion import complete_gguf_model


class FlashAttn(str, Enum):
    """llama.cpp's --flash-attn values."""

    auto = "auto"
    on = "on"
    off = "off"


GgufModel = Annotated[str | None, typer.Argument(
    autocompletion=complete_gguf_model, help="A .gguf path or 20b/120b (default: the last GGUF written).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
Threads = Annotated[int | None, typer.Option("--threads", "-t", min=1, help="CPU threads (default: auto).")]
Force = Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")]
Rpc = Annotated[str | None, typer.Option(
    "--rpc", help="Spread the layers over these `gptoss worker`s: HOST:PORT[,HOST:PORT...].")]
GpuLayers = Annotated[int, typer.Option(
    "--gpu-layers", "-ngl", help="Layers on the GPU (-1: all, when there is one).")]
FlashAttnOpt = Annotated[FlashAttn, typer.Option(
    "--flash-attn", "-fa", help="Flash attention: auto (llama.cpp turns it on where the backend supports it), "
                                "on or off.")]
CpuMoe = Annotated[bool, typer.Option("--cpu-moe", help="Keep all expert weights in system RAM.")]
NCpuMoe = Annotated[int, typer.Option("--n-cpu-moe", min=0, help="Keep the experts of the first N layers in RAM.")]

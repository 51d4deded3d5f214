"""Held-out text for the loss a prune reports: never the calibration text the experts were chosen on.

The package ships data/heldout.txt (prose, code, arithmetic and two other languages, written for this
project, sharing no text with the calibration set); --eval-text replaces it.
"""

from __future__ import annotations

from pathlib import Path

from converters.errors import BadInputError

HELDOUT = Path(__file__).resolve().parent / "data" / "heldout.txt"
EVAL_CTX = 512      # tokens per chunk, as `gptoss eval` defaults to
EVAL_CHUNKS = 4     # at most this many chunks are scored


def heldout_text(eval_text: Path | None, calib_files: list[Path]) -> tuple[str, str]:
    """(text, label) of the held-out text; BadInputError when it is one of the calibration files."""
    path = Path(eval_text).expanduser() if eval_text else HELDOUT
    if any(path.resolve() == Path(c).expanduser().resolve() for c in calib_files):
        raise BadInputError(path, "the held-out text is also a calibration text (--text)",
                            "Pass another --eval-text, or --no-eval")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(path, "no such file", "Pass a UTF-8 text file to --eval-text") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"cannot read the text ({exc})", "Pass a UTF-8 text file") from None
    return text, ("the built-in held-out text" if eval_text is None else path.name)

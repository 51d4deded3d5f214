"""Types of the compiled MXFP4 repack kernel (_repack.c)."""

import numpy as np

def repack(blocks: np.ndarray, scales: np.ndarray, out: np.ndarray, nb: int, first: int, step: int, /) -> None: ...

"""llama.cpp's own tools (llama-bench, llama-server) built from the llama.cpp that the installed
llama-cpp-python vendors, so benchmarks compare against the very same kernels gptoss runs.

    python -m tests.bench.llama_tools bench-out llama-bench llama-server   # build once, print the paths
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path


def vendored_llama_cpp(workdir: Path) -> Path:
    """The vendor/llama.cpp folder of the llama-cpp-python sdist of the installed version (downloaded once)."""
    from importlib.metadata import version

    ver = version("llama_cpp_python")
    root = workdir / f"llama_cpp_python-{ver}" / "vendor" / "llama.cpp"
    if not (root / "CMakeLists.txt").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={ver}", "-d", str(workdir)], check=True)
        with tarfile.open(next(workdir.glob(f"llama_cpp_python-{ver}.tar.gz"))) as tar:
            tar.extractall(workdir, filter="data")
    return root


def llama_tool(workdir: Path, *names: str) -> list[Path]:
    """Paths of the named llama.cpp programs, compiled (CPU build, this machine's flags) on first use."""
    src = vendored_llama_cpp(workdir)
    build = src.parent.parent / "build-tools"
    bins = [build / "bin" / name for name in names]
    if all(b.exists() for b in bins):
        return bins
    subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF",
                    "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DLLAMA_BUILD_EXAMPLES=OFF", *os.environ.get("LLAMA_TOOLS_CMAKE_ARGS", "").split()],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2), "--target", *names],
                   check=True, stdout=subprocess.DEVNULL)
    return bins


NOAMX = next((p for p in (Path(__file__).resolve().parents[3] / "shared" / "tools" / "noamx.c",
                          Path("/work/shared/tools/noamx.c")) if p.exists()), Path("noamx.c"))


def tool_env(workdir: Path) -> dict:
    """The environment for llama.cpp's own programs: AMX refused through LD_PRELOAD (llama.cpp#20824 crashes
    its AMX path on these GGUFs; gptoss's loader avoids it too), so both sides use the same CPU kernels."""
    lib = workdir / "noamx.so"
    if not lib.exists() and NOAMX.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(NOAMX), "-ldl"], check=True)
    return {**os.environ, **({"LD_PRELOAD": str(lib)} if lib.exists() else {})}


if __name__ == "__main__":
    for path in llama_tool(Path(sys.argv[1]), *sys.argv[2:]):
        print(path)

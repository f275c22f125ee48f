"""Compiles a small MLP with torch.compile (Inductor, CPU), calls it, and prints one JSON line.

Runs inside the torch tree (scripts/torch-tree.sh) with its python3, through scripts/torch-run.sh.
The caches it uses are the ones the environment names:
  TORCHINDUCTOR_CACHE_DIR  required: Inductor's cache (FX graph cache, AOT autograd cache,
                           compiled C++ kernels)
  TRITON_CACHE_DIR         optional: Triton's cache (stays empty on CPU)
The FX graph cache and the AOT autograd cache are switched on explicitly (they are on by
default in recent torch, but a version's defaults are not this probe's contract).

One Inductor cache ignores TORCHINDUCTOR_CACHE_DIR: the precompiled headers of the C++ kernels
(torch 2.14: <tempfile.gettempdir()>/torchinductor_<user>/precompiled_headers, so TMPDIR moves
it). Every process checks that header before it looks for a cached kernel, and compiles it
(seconds) when absent, on an FX graph cache hit too. The probe reports that directory as well.

The JSON line: ok, torch, first_call_s (wall seconds of the first call of the compiled function,
which compiles it; Python's start and `import torch` excluded), second_call_s, cache (the
Inductor and AOT autograd cache counters: fxgraph_cache_hit/miss/bypass,
autograd_cache_hit/miss/bypass/saved), config (the effective cache switches), dirs (the cache
directories: the two variables and PRECOMPILED_HEADERS), written (per entry of dirs: the
directories, relative to it, that hold files this run created or changed), max_abs_err (compiled vs eager), and error (on failure, with ok false; exit status 1).
"""

import json
import os
import sys
import time
import traceback

os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "1")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "1")

CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def snapshot(root):
    """{relative file path: (mtime_ns, size)} of every file under root."""
    files = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            files[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size)
    return files


def written_dirs(before, after):
    dirs = set()
    for rel, stat in after.items():
        if before.get(rel) != stat:
            dirs.add(os.path.dirname(rel) or ".")
    return sorted(dirs)


def cache_counters(counters):
    out = {}
    for section in ("inductor", "aot_autograd"):
        for key, value in counters[section].items():
            if "cache" in key:
                out[key] = value
    for key in ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass",
                "autograd_cache_hit", "autograd_cache_miss", "autograd_cache_bypass"):
        out.setdefault(key, 0)
    return dict(sorted(out.items()))


def precompiled_headers_dir():
    """Where this torch keeps the precompiled headers of its C++ kernels."""
    from torch._inductor import codecache

    header_dir = getattr(codecache, "_HEADER_DIR", None)
    if header_dir is None:  # another torch: its default cache dir, as torch 2.14 does
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        header_dir = os.path.join(default_cache_dir(), "precompiled_headers")
    return os.path.abspath(header_dir)


def main():
    result = {"ok": False}
    if not os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        result["error"] = "TORCHINDUCTOR_CACHE_DIR is not set"
        print(json.dumps(result), flush=True)
        return 1
    import torch
    from torch._dynamo.utils import counters
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    result["torch"] = torch.__version__
    roots = {var: os.path.abspath(os.environ[var]) for var in CACHE_VARS if os.environ.get(var)}
    roots["PRECOMPILED_HEADERS"] = precompiled_headers_dir()
    result["dirs"] = roots
    before = {var: snapshot(root) for var, root in roots.items()}
    result["config"] = {
        "fx_graph_cache": inductor_config.fx_graph_cache,
        "fx_graph_remote_cache": inductor_config.fx_graph_remote_cache,
        "autograd_cache": functorch_config.enable_autograd_cache,
        "compile_threads": inductor_config.compile_threads,
    }
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(64, 128),
            torch.nn.GELU(),
            torch.nn.Linear(128, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 16),
        ).eval()
        x = torch.randn(8, 64)
        compiled = torch.compile(model, backend="inductor", fullgraph=True)
        with torch.no_grad():
            eager = model(x)
            t0 = time.perf_counter()
            out = compiled(x)
            t1 = time.perf_counter()
            compiled(x)
            t2 = time.perf_counter()
        result["first_call_s"] = round(t1 - t0, 3)
        result["second_call_s"] = round(t2 - t1, 6)
        result["max_abs_err"] = float((out - eager).abs().max())
        result["ok"] = bool(torch.allclose(out, eager, atol=1e-4, rtol=1e-4))
        if not result["ok"]:
            result["error"] = "compiled output differs from eager"
    except Exception as e:  # noqa: BLE001 - reported, with its traceback's tail
        result["error"] = f"{type(e).__name__}: {e}"[-4000:]
        traceback.print_exc(file=sys.stderr)
    result["cache"] = cache_counters(counters)
    result["written"] = {
        var: written_dirs(before[var], snapshot(root)) for var, root in roots.items()
    }
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

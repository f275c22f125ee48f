#!/usr/bin/env python3
"""Checks a Hub cache against the real `huggingface_hub` (the cache-layout oracle), offline.

Usage:
  check_snapshot.py --cache-dir DIR --repo ORG/NAME --revision REV [--allow PATTERN]...
                    --source DIR [--config-file config.json] [--expect-incomplete]

With HF_HUB_OFFLINE=1, `snapshot_download(..., local_files_only=True)` must return the snapshot
and every file that the allow patterns select in SOURCE (a plain directory holding the repo's
files, selected with huggingface_hub's own `filter_repo_objects`) must be in it, byte-identical
(sha256); then `hf_hub_download` must find CONFIG_FILE offline.

With --expect-incomplete the check passes only when `snapshot_download` raises
`IncompleteSnapshotError`: offline, huggingface_hub 2.4 reads `<repo>/trees/<commit>.json`
(`{"format_version": 1, "files": {path: {"size", "blob_id", ...}}}`) and raises when a file that
the patterns select from that listing is missing from the snapshot. Without a readable trees file
it returns an incomplete snapshot silently, so this mode also proves the trees file is honoured.

Prints exactly one JSON document on stdout:
  {"ok": bool, "snapshot": str|null, "files": int, "error": str|null, "exception": str|null}
(`exception` is "<class>: <message>" of what snapshot_download raised, if anything) and exits 0
when ok, 1 otherwise.
"""

import argparse
import contextlib
import hashlib
import json
import os
import sys

# Before importing huggingface_hub: it reads the environment at import time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import huggingface_hub  # noqa: E402
from huggingface_hub import hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.errors import IncompleteSnapshotError  # noqa: E402
from huggingface_hub.utils import filter_repo_objects  # noqa: E402

# How many problems to spell out in `error`.
MAX_LISTED = 5


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache-dir", required=True)
    p.add_argument("--repo", required=True)
    p.add_argument("--revision", required=True)
    p.add_argument("--allow", action="append", default=[])
    p.add_argument("--source", required=True)
    p.add_argument("--config-file", default="config.json")
    p.add_argument("--expect-incomplete", action="store_true")
    return p.parse_args(argv)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_files(source):
    """Repo-relative '/'-separated paths of every regular file under `source` (no .git)."""
    out = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), source)
            out.append(rel.replace(os.sep, "/"))
    return out


def describe(exc):
    return f"{type(exc).__name__}: {exc}"


def compare(snapshot, source, selected):
    """Problems found comparing the selected source files with the snapshot."""
    problems = []
    for rel in selected:
        got = os.path.join(snapshot, *rel.split("/"))
        if not os.path.isfile(got):
            # isfile follows symlinks: a dangling snapshot link counts as missing.
            problems.append(f"{rel}: missing from the snapshot")
            continue
        want = sha256_file(os.path.join(source, *rel.split("/")))
        have = sha256_file(got)
        if want != have:
            problems.append(f"{rel}: sha256 {have} in the snapshot, {want} in the source")
    return problems


def check(args):
    """Returns the result document."""
    result = {"ok": False, "snapshot": None, "files": 0, "error": None, "exception": None}
    allow = args.allow or None
    selected = list(filter_repo_objects(items=source_files(args.source), allow_patterns=allow))
    result["files"] = len(selected)
    if not selected:
        result["error"] = f"the allow patterns {args.allow} select no file in {args.source}"
        return result

    try:
        snapshot = snapshot_download(
            args.repo,
            revision=args.revision,
            cache_dir=args.cache_dir,
            allow_patterns=allow,
            local_files_only=True,
        )
    except Exception as exc:  # noqa: BLE001 - the class is part of the answer
        result["exception"] = describe(exc)
        result["snapshot"] = getattr(exc, "snapshot_path", None)
        if args.expect_incomplete and isinstance(exc, IncompleteSnapshotError):
            result["ok"] = True
        elif args.expect_incomplete:
            result["error"] = f"expected IncompleteSnapshotError, snapshot_download raised {describe(exc)}"
        else:
            result["error"] = f"snapshot_download raised {describe(exc)}"
        return result

    result["snapshot"] = snapshot
    if args.expect_incomplete:
        result["error"] = f"expected IncompleteSnapshotError, snapshot_download returned {snapshot}"
        return result

    problems = compare(snapshot, args.source, selected)
    problems += check_config(args)
    if problems:
        more = f" (and {len(problems) - MAX_LISTED} more)" if len(problems) > MAX_LISTED else ""
        result["error"] = "; ".join(problems[:MAX_LISTED]) + more
        return result
    result["ok"] = True
    return result


def check_config(args):
    """Problems found fetching the config file offline with hf_hub_download."""
    try:
        path = hf_hub_download(
            args.repo,
            filename=args.config_file,
            revision=args.revision,
            cache_dir=args.cache_dir,
            local_files_only=True,
        )
    except Exception as exc:  # noqa: BLE001
        return [f"hf_hub_download({args.config_file}) raised {describe(exc)}"]
    src = os.path.join(args.source, *args.config_file.split("/"))
    if not os.path.isfile(path):
        return [f"hf_hub_download({args.config_file}) returned {path}, which is not a file"]
    if os.path.isfile(src) and sha256_file(src) != sha256_file(path):
        return [f"hf_hub_download({args.config_file}) returned {path}, which differs from the source"]
    return []


def main(argv):
    args = parse_args(argv)
    if not huggingface_hub.__version__.startswith("2.4."):
        print(f"warning: huggingface_hub {huggingface_hub.__version__}, expected 2.4.x", file=sys.stderr)
    # Keep stdout for the one JSON document, whatever the library prints.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            result = check(args)
        except Exception as exc:  # noqa: BLE001 - report, never a traceback instead of JSON
            result = {"ok": False, "snapshot": None, "files": 0, "error": describe(exc), "exception": None}
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

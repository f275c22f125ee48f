#!/usr/bin/env python3
"""Scans a Hub cache with the real `huggingface_hub` (`scan_cache_dir`, what `hf cache scan`
runs), offline.

Usage: scan_cache.py CACHE_DIR

Prints exactly one JSON document on stdout:
  {"warnings": [str], "repos": [{"repo_id", "revisions": [commit], "refs": {ref: commit}}]}
`warnings` holds the CorruptedCacheException messages scan_cache_dir collected (a repo it
could not read, e.g. "Reference(s) refer to missing commit hashes"); a temporary directory in
`snapshots/` shows up as a revision, a temporary file in `refs/` as a ref.
"""

import json
import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from huggingface_hub import scan_cache_dir  # noqa: E402


def main(argv):
    info = scan_cache_dir(argv[1])
    repos = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        refs = {}
        for rev in repo.revisions:
            for ref in rev.refs:
                refs[ref] = rev.commit_hash
        repos.append(
            {
                "repo_id": repo.repo_id,
                "revisions": sorted(rev.commit_hash for rev in repo.revisions),
                "refs": refs,
            }
        )
    print(json.dumps({"warnings": [str(w) for w in info.warnings], "repos": repos}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

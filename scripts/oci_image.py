"""Packs a root tree into a reproducible OCI image (run by scripts/build-image.sh).

    python3 oci_image.py --rootfs DIR --containerfile FILE --epoch SECONDS --name REF
                         --layout DIR --archive FILE [--arg NAME=VALUE]... [--gzip-level N]

Python rather than shell because the byte-for-byte control this needs is awkward in shell:
one gzip-compressed tar layer written by `tarfile` with sorted entries, every mtime set to
--epoch, uid/gid 0 with no user or group names, modes normalised (0755 for directories and
executables, 0644 for other files, sticky bits kept), and a gzip header with no file name and
no timestamp; then the config, manifest and index JSON with sorted keys, an OCI image layout
and an OCI archive (a tar of that layout, written the same way). Same tree, same arguments:
same bytes, so the same manifest digest.

The image config (Env, Entrypoint, Cmd, WorkingDir, Labels) is read from the Containerfile,
which docker/buildah users build from the same tree: the two recipes cannot drift. Only the
instructions that file uses are understood (FROM scratch, ARG, COPY rootfs/ /, ENV, LABEL,
WORKDIR, ENTRYPOINT and CMD in JSON form); anything else is an error, never ignored.
"""

import argparse
import datetime
import gzip
import hashlib
import json
import os
import pathlib
import re
import shlex
import stat
import sys
import tarfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

# ELF e_machine -> OCI architecture.
ELF_ARCH = {0x3E: "amd64", 0xB7: "arm64"}


class Fail(Exception):
    """A one-line error for the user."""


# --- Containerfile ---------------------------------------------------------------------------


def logical_lines(text):
    """Instructions with `\\` continuations joined and comments dropped, with line numbers."""
    pending, start = "", 0
    for n, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = n
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield start, pending + stripped
        pending = ""
    if pending:
        yield start, pending


def substitute(value, args, where):
    """Expands $NAME and ${NAME} from ARG values; an unset one is an error."""

    def one(m):
        name = m.group(1) or m.group(2)
        if name not in args:
            raise Fail("%s: $%s is not a declared ARG" % (where, name))
        return args[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", one, value)


def pairs(rest, args, where):
    """`K=V K2="V 2"` -> [(K, V), ...] with ARGs expanded."""
    out = []
    for word in shlex.split(rest):
        if "=" not in word:
            raise Fail("%s: expected KEY=VALUE, got %r" % (where, word))
        key, value = word.split("=", 1)
        out.append((key, substitute(value, args, where)))
    return out


def json_list(rest, where):
    try:
        value = json.loads(rest)
    except json.JSONDecodeError as e:
        raise Fail("%s: only the JSON form is supported (%s)" % (where, e))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Fail("%s: expected a JSON list of strings" % where)
    return value


def read_containerfile(path, given):
    """The image config the Containerfile describes, with ARGs taken from `given`."""
    config = {"Env": [], "Labels": {}}
    args = {}
    seen_from = False
    for n, line in logical_lines(pathlib.Path(path).read_text()):
        where = "%s:%d" % (path, n)
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            if rest != "scratch":
                raise Fail("%s: only FROM scratch is supported" % where)
            seen_from = True
            continue
        if not seen_from:
            raise Fail("%s: %s before FROM" % (where, word))
        if word == "ARG":
            name, has_default, default = rest.partition("=")
            args[name] = given.get(name, default if has_default else "")
        elif word == "COPY":
            if rest.split() != ["rootfs/", "/"]:
                raise Fail("%s: the only COPY understood is `COPY rootfs/ /`" % where)
        elif word == "ENV":
            for key, value in pairs(rest, args, where):
                config["Env"] = [e for e in config["Env"] if not e.startswith(key + "=")]
                config["Env"].append("%s=%s" % (key, value))
        elif word == "LABEL":
            config["Labels"].update(pairs(rest, args, where))
        elif word == "WORKDIR":
            config["WorkingDir"] = substitute(rest, args, where)
        elif word in ("ENTRYPOINT", "CMD"):
            config[word.capitalize()] = json_list(rest, where)
        else:
            raise Fail("%s: %s is not understood by scripts/oci_image.py" % (where, word))
    unused = sorted(set(given) - set(args))
    if unused:
        raise Fail("%s declares no ARG %s" % (path, ", ".join(unused)))
    return config


# --- deterministic tar + gzip ------------------------------------------------------------------


class HashingWriter:
    """Counts and hashes what passes through to an optional sink."""

    def __init__(self, sink=None):
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def flush(self):
        if self.sink is not None:
            self.sink.flush()

    def digest(self):
        return "sha256:" + self.sha.hexdigest()


def normalised_mode(st):
    if stat.S_ISDIR(st.st_mode):
        return 0o1777 if st.st_mode & stat.S_ISVTX else 0o755
    if stat.S_ISLNK(st.st_mode):
        return 0o777
    return 0o755 if st.st_mode & stat.S_IXUSR else 0o644


def tree_entries(root):
    """Every path below `root`, relative, sorted so that a directory precedes its contents."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirnames + filenames:
            found.append(name if rel == "." else os.path.join(rel, name))
    return sorted(found)


def add_tree(tar, root, epoch):
    for rel in tree_entries(root):
        path = os.path.join(root, rel)
        st = os.lstat(path)
        info = tarfile.TarInfo(rel)
        info.mtime = epoch
        info.mode = normalised_mode(st)
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
            tar.addfile(info)
        elif stat.S_ISREG(st.st_mode):
            info.size = st.st_size
            with open(path, "rb") as f:
                tar.addfile(info, f)
        else:
            raise Fail("%s: not a file, directory or symlink" % path)


def write_layer(rootfs, blobs, epoch, level):
    """The gzip layer blob; returns (digest, size, diff_id)."""
    tmp = blobs / ".layer.tmp"
    with open(tmp, "wb") as out:
        compressed = HashingWriter(out)
        # filename="" and mtime=0: no name and no time in the gzip header.
        with gzip.GzipFile(
            filename="", mode="wb", fileobj=compressed, compresslevel=level, mtime=0
        ) as gz:
            raw = HashingWriter(gz)
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                add_tree(tar, rootfs, epoch)
    digest = compressed.digest()
    tmp.rename(blobs / digest.split(":", 1)[1])
    return digest, compressed.size, raw.digest()


def write_json_blob(blobs, doc):
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs / digest.split(":", 1)[1]).write_bytes(data)
    return digest, len(data)


# --- the image -------------------------------------------------------------------------------


def elf_arch(path):
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        raise Fail("%s: not an ELF binary" % path)
    order = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    if machine not in ELF_ARCH:
        raise Fail("%s: unsupported ELF machine 0x%x" % (path, machine))
    return ELF_ARCH[machine]


def rfc3339(epoch):
    t = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def build(opts):
    rootfs = pathlib.Path(opts.rootfs)
    given = dict(a.split("=", 1) for a in opts.arg)
    config = read_containerfile(opts.containerfile, given)
    entry = (config.get("Entrypoint") or config.get("Cmd") or [""])[0]
    if not entry.startswith("/") or not (rootfs / entry.lstrip("/")).is_file():
        raise Fail("entrypoint %r is not a file in %s" % (entry, rootfs))
    arch = elf_arch(rootfs / entry.lstrip("/"))
    created = rfc3339(opts.epoch)

    layout = pathlib.Path(opts.layout)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    digest, size, diff_id = write_layer(rootfs, blobs, opts.epoch, opts.gzip_level)
    config_digest, config_size = write_json_blob(
        blobs,
        {
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "scripts/build-image.sh"}],
        },
    )
    manifest_digest, manifest_size = write_json_blob(
        blobs,
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": digest, "size": size}],
            "annotations": config["Labels"],
        },
    )
    tag = opts.name.rsplit(":", 1)[1] if ":" in opts.name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [
            {
                "mediaType": MEDIA_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "platform": {"architecture": arch, "os": "linux"},
                # The tag for skopeo's oci:DIR:TAG, the full name for `ctr images import`.
                "annotations": {
                    "org.opencontainers.image.ref.name": tag,
                    "io.containerd.image.name": opts.name,
                },
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True, separators=(",", ":")))
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    tmp = pathlib.Path(opts.archive + ".tmp")
    with open(tmp, "wb") as out:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            add_tree(tar, layout, opts.epoch)
    tmp.rename(opts.archive)
    print("image %s (%s)" % (opts.name, arch))
    print("manifest %s" % manifest_digest)
    print("layer %s %d bytes compressed" % (digest, size))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rootfs", required=True)
    p.add_argument("--containerfile", required=True)
    p.add_argument("--epoch", type=int, required=True, help="mtime of every entry; created")
    p.add_argument("--name", required=True, help="image reference, e.g. REGISTRY/REPO:TAG")
    p.add_argument("--layout", required=True, help="OCI layout directory (must not exist)")
    p.add_argument("--archive", required=True, help="OCI archive to write")
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--gzip-level", type=int, default=9, choices=range(1, 10))
    opts = p.parse_args()
    try:
        if os.path.exists(opts.layout):
            raise Fail("%s exists" % opts.layout)
        bad = [a for a in opts.arg if "=" not in a]
        if bad:
            raise Fail("--arg %s: expected NAME=VALUE" % bad[0])
        build(opts)
    except (Fail, OSError) as e:
        print("oci_image: %s" % e, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Turns a CRI checkpoint archive into the OCI image containerd 2.1 restores from (issue 17's spike).

    python3 checkpoint_image.py --archive CP.tar --name REF --container-name NAME --out OCI.tar

What containerd 2.1.9 reads (internal/cri/server/container_checkpoint_linux.go,
checkIfCheckpointOCIImage and CRImportCheckpoint): the image's target blob, parsed as an OCI
index, must carry the annotation `org.criu.checkpoint.container.name` (a manifest target works:
its `annotations` field is read the same way); the image is then resolved for the sandbox's
platform, a read-only View of its chainID is mounted, and `spec.dump`, `config.dump`,
`status.dump`, `checkpoint/` and `rootfs-diff.tar` are read from the root of that view. So the
image has one layer whose root is the extracted archive.

The archive containerd writes is already an uncompressed tar of exactly those entries, relative
to the root, so it is used as the layer unchanged (media type `...layer.v1.tar`, diff ID = its
own digest): nothing is extracted or repacked, and the memory pages are written once more only
into the OCI archive that `ctr images import` reads. The config's platform is this machine's.
"""

import argparse
import hashlib
import io
import json
import os
import platform
import tarfile

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
ANNOTATION = "org.criu.checkpoint.container.name"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def blob(doc):
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", required=True, help="checkpoint archive from CheckpointContainer")
    p.add_argument("--name", required=True, help="image reference for ctr images import")
    p.add_argument("--container-name", required=True, help="value of " + ANNOTATION)
    p.add_argument("--out", required=True, help="OCI archive to write")
    opts = p.parse_args()

    arch = ARCH[platform.machine()]
    layer_digest = sha256_file(opts.archive)
    layer_size = os.path.getsize(opts.archive)
    config, config_digest = blob(
        {
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    )
    annotations = {ANNOTATION: opts.container_name}
    manifest, manifest_digest = blob(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
            "annotations": annotations,
        }
    )
    index, _ = blob(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {"io.containerd.image.name": opts.name},
                }
            ],
        }
    )
    tmp = opts.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes(tar, "index.json", index)
        add_bytes(tar, "blobs/sha256/" + config_digest.split(":")[1], config)
        add_bytes(tar, "blobs/sha256/" + manifest_digest.split(":")[1], manifest)
        tar.add(opts.archive, arcname="blobs/sha256/" + layer_digest.split(":")[1])
    os.chmod(tmp, 0o600)  # it holds process memory
    os.rename(tmp, opts.out)
    print("image %s manifest %s layer %s (%d bytes)" % (opts.name, manifest_digest, layer_digest, layer_size))


if __name__ == "__main__":
    main()

//! Synthetic OCI images: one gzip layer per requested size, each a tar holding one file of
//! seeded pseudo-random (incompressible) bytes, streamed to disk; pushed with skopeo.
//!
//! The bulk work runs in optimized code whatever the test profile: random bytes come from
//! `openssl enc -aes-128-ctr`, digests from `openssl dgst -sha256`, and the gzip stream uses
//! stored deflate blocks (random data does not compress). ~2 GB builds in about 10 s here.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use super::{require_tool, run_checked};

/// How long a skopeo push may take (a 2 GB image pushes in well under a minute locally).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(600);

/// OCI media types used.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Config media type.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Layer media type.
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// An OCI image layout directory holding one image.
#[derive(Debug, Clone)]
pub struct OciLayout {
    /// The layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`).
    pub dir: PathBuf,
    /// `sha256:...` of the manifest.
    pub manifest_digest: String,
    /// `sha256:...` of the config.
    pub config_digest: String,
    /// `(sha256:..., compressed size)` of each layer, in order.
    pub layers: Vec<(String, u64)>,
    /// Sum of the compressed layer sizes plus config and manifest sizes (what a pull downloads).
    pub compressed_size: u64,
    /// `sha256:...` of each uncompressed layer tar (the config's rootfs.diff_ids).
    pub diff_ids: Vec<String>,
    /// Size of the manifest JSON.
    pub manifest_size: u64,
    /// Size of the config JSON.
    pub config_size: u64,
}

impl OciLayout {
    /// Path of a blob given its `sha256:...` digest.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        blob_path(&self.dir, digest)
    }

    /// Sum of the compressed layer sizes only.
    pub fn layers_size(&self) -> u64 {
        self.layers.iter().map(|(_, s)| s).sum()
    }
}

fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    dir.join("blobs").join("sha256").join(hex)
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `sha256` of a byte stream, computed by an `openssl dgst` child (the test profile builds
/// dependencies unoptimized, where sha2 runs at ~15 MB/s; openssl does ~1.4 GB/s).
struct ShaPipe {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl ShaPipe {
    fn start() -> anyhow::Result<ShaPipe> {
        let mut child = Command::new(require_tool("openssl"))
            .args(["dgst", "-sha256", "-r"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start openssl dgst")?;
        let stdin = child.stdin.take();
        Ok(ShaPipe { child, stdin })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.write_all(buf),
            None => Err(io::Error::other("sha pipe closed")),
        }
    }

    /// `sha256:<hex>`.
    fn finish(mut self) -> anyhow::Result<String> {
        drop(self.stdin.take());
        let mut out = String::new();
        if let Some(mut so) = self.child.stdout.take() {
            so.read_to_string(&mut out)?;
        }
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "openssl dgst failed: {status}");
        let hex = out.split_whitespace().next().unwrap_or("");
        anyhow::ensure!(hex.len() == 64, "unexpected openssl dgst output {out:?}");
        Ok(format!("sha256:{hex}"))
    }
}

impl Drop for ShaPipe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        super::kill_child(&mut self.child);
    }
}

/// A gzip stream of deflate *stored* blocks, teed into a file and a [`ShaPipe`].
///
/// Random data does not compress, so real deflate (even level 1, ~100 MB/s optimized and
/// ~6 MB/s in the unoptimized test profile) would only burn CPU for the same size: stored
/// blocks are valid gzip that every decompressor reads, produced at I/O speed.
struct StoredGzip {
    file: BufWriter<File>,
    sha: ShaPipe,
    crc: flate2::Crc,
    pending: Vec<u8>,
    compressed: u64,
}

const STORED_MAX: usize = 65_535;

impl StoredGzip {
    fn new(file: File) -> anyhow::Result<StoredGzip> {
        let mut g = StoredGzip {
            file: BufWriter::with_capacity(1 << 20, file),
            sha: ShaPipe::start()?,
            crc: flate2::Crc::new(),
            pending: Vec::with_capacity(STORED_MAX),
            compressed: 0,
        };
        // ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS=255 (unknown): deterministic.
        g.emit(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])?;
        Ok(g)
    }

    fn emit(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.sha.write_all(buf)?;
        self.compressed += buf.len() as u64;
        Ok(())
    }

    fn block(&mut self, data: &[u8], last: bool) -> io::Result<()> {
        let len = data.len() as u16;
        let mut head = [0u8; 5];
        head[0] = u8::from(last); // BFINAL, BTYPE=00 (stored), padded to the byte boundary
        head[1..3].copy_from_slice(&len.to_le_bytes());
        head[3..5].copy_from_slice(&(!len).to_le_bytes());
        self.emit(&head)?;
        self.emit(data)
    }

    /// Adds uncompressed bytes.
    fn write_all(&mut self, mut buf: &[u8]) -> io::Result<()> {
        self.crc.update(buf);
        while !buf.is_empty() {
            if self.pending.is_empty() && buf.len() >= STORED_MAX {
                let (blk, rest) = buf.split_at(STORED_MAX);
                self.block(blk, false)?;
                buf = rest;
                continue;
            }
            let take = (STORED_MAX - self.pending.len()).min(buf.len());
            self.pending.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.pending.len() == STORED_MAX {
                let p = std::mem::take(&mut self.pending);
                self.block(&p, false)?;
                self.pending = p;
                self.pending.clear();
            }
        }
        Ok(())
    }

    /// Writes the final block and trailer; returns (digest, compressed size).
    fn finish(mut self) -> anyhow::Result<(String, u64)> {
        let p = std::mem::take(&mut self.pending);
        self.block(&p, true)?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.emit(&trailer)?;
        let StoredGzip {
            file,
            sha,
            compressed,
            ..
        } = self;
        let file = file.into_inner().map_err(|e| e.into_error())?;
        drop(file);
        Ok((sha.finish()?, compressed))
    }
}

/// `len` seeded pseudo-random bytes from `openssl enc -aes-128-ctr` over /dev/zero
/// (deterministic for a given key; GB/s where an unoptimized Rust RNG manages ~50 MB/s).
struct RandomStream {
    child: Child,
    left: u64,
}

impl RandomStream {
    fn start(seed: u64, index: usize, len: u64) -> anyhow::Result<RandomStream> {
        let key = format!("{seed:016x}{:016x}", index as u64);
        let child = Command::new(require_tool("openssl"))
            .args(["enc", "-aes-128-ctr", "-nosalt", "-K", &key, "-iv"])
            .arg("0".repeat(32))
            .args(["-in", "/dev/zero"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start openssl enc")?;
        Ok(RandomStream { child, left: len })
    }

    /// Fills up to `buf.len()` bytes; 0 at the end.
    fn read(&mut self, buf: &mut [u8]) -> anyhow::Result<usize> {
        let want = (buf.len() as u64).min(self.left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let out = self.child.stdout.as_mut().context("openssl enc stdout")?;
        out.read_exact(&mut buf[..want])
            .context("reading openssl enc")?;
        self.left -= want as u64;
        Ok(want)
    }
}

impl Drop for RandomStream {
    fn drop(&mut self) {
        super::kill_child(&mut self.child);
    }
}

/// (digest, compressed size, diff_id) of a generated layer.
type LayerResult = anyhow::Result<(String, u64, String)>;

/// Writes one layer blob into `blobs/sha256`, returning (digest, compressed size, diff_id).
/// The layer is a tar holding one file `layer-<index>.bin` of `size` random bytes.
fn write_layer(dir: &Path, index: usize, size: usize, seed: u64) -> LayerResult {
    let blobs = dir.join("blobs").join("sha256");
    let tmp = blobs.join(format!(".layer-{index}.tmp"));
    let file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut gz = StoredGzip::new(file)?;
    let mut diff = ShaPipe::start()?;
    let mut put = |gz: &mut StoredGzip, buf: &[u8]| -> anyhow::Result<()> {
        gz.write_all(buf)?;
        diff.write_all(buf)?;
        Ok(())
    };

    let mut header = tar::Header::new_ustar();
    header.set_path(format!("layer-{index}.bin"))?;
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    put(&mut gz, header.as_bytes())?;

    let mut rng = RandomStream::start(seed, index, size as u64)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = rng.read(&mut buf)?;
        if n == 0 {
            break;
        }
        put(&mut gz, &buf[..n])?;
    }
    drop(rng);
    // Pad the file to a 512-byte record, then the two zero records that end a tar.
    let pad = (512 - size % 512) % 512;
    let zeros = vec![0u8; pad + 1024];
    put(&mut gz, &zeros)?;
    let (digest, csize) = gz.finish()?;
    let diff_id = diff.finish()?;
    std::fs::rename(&tmp, blob_path(dir, &digest))?;
    Ok((digest, csize, diff_id))
}

fn write_blob(dir: &Path, data: &[u8]) -> anyhow::Result<(String, u64)> {
    let digest = format!("sha256:{}", hex(&Sha256::digest(data)));
    std::fs::write(blob_path(dir, &digest), data)?;
    Ok((digest, data.len() as u64))
}

/// Builds an OCI image layout in `dir` (created if needed) with one gzip layer per entry of
/// `layer_sizes` (each a tar holding one file `layer-<i>.bin` of that many seeded random bytes)
/// and a minimal linux/amd64 config. Deterministic for a given `(layer_sizes, seed)`. Layers are
/// generated on parallel threads and streamed to disk (~2 GB in about 10 s on 2 cores).
pub fn build_image(dir: &Path, layer_sizes: &[usize], seed: u64) -> anyhow::Result<OciLayout> {
    std::fs::create_dir_all(dir.join("blobs").join("sha256"))?;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .max(1);
    // Work queue over layer indexes; results gathered in order.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<LayerResult>>> = layer_sizes
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(layer_sizes.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= layer_sizes.len() {
                        break;
                    }
                    let r = write_layer(dir, i, layer_sizes[i], seed);
                    if let Ok(mut slot) = results[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, slot) in results.into_iter().enumerate() {
        let r = slot
            .into_inner()
            .map_err(|_| anyhow::anyhow!("layer {i} thread panicked"))?
            .with_context(|| format!("layer {i} not generated"))?;
        let (digest, size, diff_id) = r.with_context(|| format!("layer {i}"))?;
        layers.push((digest, size));
        diff_ids.push(diff_id);
    }

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Labels": { "io.coldstart.test.seed": seed.to_string() }
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layer_sizes.iter().enumerate().map(|(i, sz)| serde_json::json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("coldstart test layer {i}: {sz} random bytes"),
        })).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let (config_digest, config_size) = write_blob(dir, &config_bytes)?;

    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size },
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": MEDIA_LAYER_GZIP, "digest": d, "size": s,
        })).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let (manifest_digest, manifest_size) = write_blob(dir, &manifest_bytes)?;

    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": { "architecture": "amd64", "os": "linux" },
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;

    OciLayout::load(dir)
}

/// Pushes `layout` to `docker://<registry_host>/<repo_tag>` with skopeo, keeping digests
/// (`--preserve-digests`). `registry_host` is e.g. `127.0.0.1:5000`. TLS verification is off
/// either way (`--dest-tls-verify=false`: https when `tls`, plain http otherwise).
pub fn push(
    layout: &OciLayout,
    registry_host: &str,
    repo_tag: &str,
    tls: bool,
) -> anyhow::Result<()> {
    push_inner(layout, registry_host, repo_tag, tls, None)
}

/// Like [`push`], with `--dest-creds user:password`.
pub fn push_with_creds(
    layout: &OciLayout,
    registry_host: &str,
    repo_tag: &str,
    tls: bool,
    user: &str,
    password: &str,
) -> anyhow::Result<()> {
    push_inner(layout, registry_host, repo_tag, tls, Some((user, password)))
}

fn push_inner(
    layout: &OciLayout,
    registry_host: &str,
    repo_tag: &str,
    _tls: bool,
    creds: Option<(&str, &str)>,
) -> anyhow::Result<()> {
    let skopeo = require_tool("skopeo");
    let auth_dir = tempfile::Builder::new()
        .prefix("coldstart-skopeo-")
        .tempdir()?;
    let mut cmd = Command::new(skopeo);
    // A private auth file and policy so that the host's containers config cannot interfere.
    cmd.env("REGISTRY_AUTH_FILE", auth_dir.path().join("auth.json"))
        .args(["--insecure-policy", "copy", "--quiet", "--preserve-digests"])
        .arg("--dest-tls-verify=false");
    match creds {
        Some((u, p)) => {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        None => {
            cmd.arg("--dest-no-creds");
        }
    }
    cmd.arg(format!("oci:{}", layout.dir.display()))
        .arg(format!("docker://{registry_host}/{repo_tag}"));
    run_checked(&mut cmd, PUSH_TIMEOUT).with_context(|| {
        format!(
            "skopeo push of {} to {registry_host}/{repo_tag}",
            layout.dir.display()
        )
    })?;
    Ok(())
}

impl OciLayout {
    /// Reads an OCI layout back (index -> manifest -> config), checking every blob's size.
    pub fn load(dir: &Path) -> anyhow::Result<OciLayout> {
        let read_json = |p: PathBuf| -> anyhow::Result<serde_json::Value> {
            let bytes = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
            Ok(serde_json::from_slice(&bytes)?)
        };
        let desc = |v: &serde_json::Value| -> anyhow::Result<(String, u64)> {
            let d = v["digest"].as_str().context("descriptor without digest")?;
            let s = v["size"].as_u64().context("descriptor without size")?;
            Ok((d.to_string(), s))
        };
        let blob = |d: &str| {
            dir.join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"))
        };
        let index = read_json(dir.join("index.json"))?;
        let (manifest_digest, manifest_size) = desc(&index["manifests"][0])?;
        let manifest = read_json(blob(&manifest_digest))?;
        let (config_digest, config_size) = desc(&manifest["config"])?;
        let config = read_json(blob(&config_digest))?;
        let layers = manifest["layers"]
            .as_array()
            .context("manifest without layers")?
            .iter()
            .map(desc)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let diff_ids = config["rootfs"]["diff_ids"]
            .as_array()
            .context("config without diff_ids")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        for (d, size) in &layers {
            let len = std::fs::metadata(blob(d))?.len();
            anyhow::ensure!(
                len == *size,
                "{d}: {len} bytes on disk, {size} in the manifest"
            );
        }
        let compressed_size =
            layers.iter().map(|(_, s)| s).sum::<u64>() + config_size + manifest_size;
        Ok(OciLayout {
            dir: dir.to_path_buf(),
            manifest_digest,
            config_digest,
            layers,
            compressed_size,
            diff_ids,
            manifest_size,
            config_size,
        })
    }
}

//! The stand-in `libnvidia-ml.so.1` (`agent/tests/nvml-stub/nvml_stub.c`), built for the tests
//! that run the real NVML path on this GPU-less machine: the system tests (through
//! [`NvmlStub`]) and the agent's own `agent/tests/gpu.rs` (which includes this file and calls
//! [`compile`]). The library reads its scenario file once, at `nvmlInit`: a test changes the
//! GPUs the agent sees by rewriting the file and restarting the agent.

#![allow(clippy::expect_used)] // test support: a failed write is a failed test
use std::path::{Path, PathBuf};
use std::process::Command;

/// A built stub and its scenario file.
pub struct NvmlStub {
    /// The library to pass as `--nvml-library`.
    pub lib: PathBuf,
    /// The scenario it reads.
    pub scenario: PathBuf,
}

impl NvmlStub {
    /// Compiles the stub into `dir` with `gpus` healthy devices in its scenario. No C compiler
    /// is a failure, not a skip.
    pub fn build(dir: &Path, gpus: u32) -> NvmlStub {
        let scenario = dir.join("nvml-scenario");
        let lib = compile(dir, &scenario);
        let stub = NvmlStub { lib, scenario };
        stub.set_gpus(gpus);
        stub
    }

    /// Rewrites the scenario: `gpus` healthy devices (read at the agent's next start).
    pub fn set_gpus(&self, gpus: u32) {
        let text = format!("driver 550.54.15\ncuda 12040\ndevices {gpus}\n");
        std::fs::write(&self.scenario, text).expect("write the NVML scenario");
    }
}

/// Compiles the stub into `dir/libnvidia-ml.so.1`, reading its scenario from `scenario`;
/// returns the library's path. No C compiler is a failure, not a skip.
pub fn compile(dir: &Path, scenario: &Path) -> PathBuf {
    // This file is compiled into the root package's tests and, by `#[path]`, into the agent's.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = [
        "agent/tests/nvml-stub/nvml_stub.c",
        "tests/nvml-stub/nvml_stub.c",
    ]
    .iter()
    .map(|rel| manifest.join(rel))
    .find(|p| p.is_file())
    .expect("nvml_stub.c beside the agent's tests");
    let lib = dir.join("libnvidia-ml.so.1");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&lib)
        .arg(format!("-DSCENARIO=\"{}\"", scenario.display()))
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("these tests need a C compiler as `cc` (e.g. gcc): {e}"));
    assert!(
        out.status.success(),
        "cc failed on {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

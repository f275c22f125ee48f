//! The stand-in `libnvidia-ml.so.1` (`agent/tests/nvml-stub/nvml_stub.c`), built for system
//! tests that run the real agent binary on this GPU-less machine. The library reads its
//! scenario file once, at `nvmlInit`: a test changes the GPUs the agent sees by rewriting the
//! file and restarting the agent.

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
        let lib = dir.join("libnvidia-ml.so.1");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent/tests/nvml-stub/nvml_stub.c");
        let out = Command::new("cc")
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(&lib)
            .arg(format!("-DSCENARIO=\"{}\"", scenario.display()))
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("these tests need a C compiler as `cc`: {e}"));
        assert!(
            out.status.success(),
            "cc failed on {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
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

//! The real NVML path without a GPU: each test compiles `nvml-stub/nvml_stub.c` into its own
//! `libnvidia-ml.so.1` (a scenario file baked in by path), loads it through nvml-wrapper, and
//! checks the inventory, the health verdicts and `coldstart-agent gpu-check -o json`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coldstart_agent::gpu::{self, Error, Gpu, GpuReport, Monitor, NvmlGpu, Settings, policy};
use serde_json::Value;

#[allow(dead_code)] // only compile() is used here
#[path = "../../tests/support/nvml.rs"]
mod nvml;

struct Stub {
    _dir: tempfile::TempDir,
    lib: PathBuf,
}

/// Builds the stub library answering from `scenario`.
fn stub(scenario: &str) -> Stub {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario_path = dir.path().join("scenario");
    std::fs::write(&scenario_path, scenario).expect("write scenario");
    let lib = nvml::compile(dir.path(), &scenario_path);
    Stub { _dir: dir, lib }
}

const TWO_H100: &str = "driver 550.54.15
cuda 12040
devices 2
dev 0 name NVIDIA H100 80GB HBM3
dev 0 uuid GPU-11111111-2222-3333-4444-555555555555
dev 0 pci 00000000:18:00.0
dev 0 memory_used 1048576
dev 0 temp 41
dev 1 name NVIDIA H100 80GB HBM3
dev 1 uuid GPU-66666666-7777-8888-9999-000000000000
dev 1 pci 00000000:2A:00.0
dev 1 persistence 0
dev 1 mig 1
dev 1 temp 38
";

fn monitor(stub: &Stub) -> Monitor {
    let nvml = NvmlGpu::load(Some(&stub.lib)).expect("stub loads");
    Monitor::start(Arc::new(nvml), Settings::default()).expect("xid thread")
}

/// Snapshots until `cond` holds (XID events arrive on the monitor's thread) or 10 s pass.
fn snapshot_until(
    m: &Monitor,
    capacity: Option<u32>,
    cond: impl Fn(&GpuReport) -> bool,
) -> GpuReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = m.snapshot(capacity, false);
        if cond(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn inventory_through_nvml_wrapper() {
    let stub = stub(TWO_H100);
    let nvml = NvmlGpu::load(Some(&stub.lib)).expect("stub loads");
    let inv = nvml.probe().expect("probe");
    assert_eq!(inv.driver_version, "550.54.15");
    assert_eq!(inv.cuda_version.as_deref(), Some("12.4"));
    assert_eq!(inv.devices.len(), 2);
    let (d0, d1) = (&inv.devices[0], &inv.devices[1]);
    assert_eq!(d0.index, 0);
    assert_eq!(d0.name, "NVIDIA H100 80GB HBM3");
    assert_eq!(d0.uuid, "GPU-11111111-2222-3333-4444-555555555555");
    assert_eq!(d0.memory_total_bytes, 85_899_345_920);
    assert_eq!(d0.memory_used_bytes, 1_048_576);
    assert_eq!(d0.compute_capability.as_deref(), Some("9.0"));
    assert_eq!(d0.pci_bus_id.as_deref(), Some("00000000:18:00.0"));
    assert_eq!(d0.persistence_mode, Some(true));
    assert_eq!(d0.mig_enabled, Some(false));
    assert_eq!(d0.temperature_celsius, Some(41));
    assert_eq!(d0.throttle_reasons, Some(0));
    assert_eq!(d0.ecc_volatile_uncorrected, Some(0));
    assert_eq!(d0.pages_pending_retirement, Some(false));
    assert_eq!(d0.row_remap_pending, Some(false));
    assert_eq!(d0.row_remap_failure, Some(false));
    assert_eq!(d0.processes, Some(Vec::new()));
    assert_eq!(d1.index, 1);
    assert_eq!(d1.pci_bus_id.as_deref(), Some("00000000:2A:00.0"));
    assert_eq!(d1.persistence_mode, Some(false));
    assert_eq!(d1.mig_enabled, Some(true));
}

#[test]
fn healthy_gpus_are_healthy() {
    let stub = stub(TWO_H100);
    let m = monitor(&stub);
    let r = m.snapshot(Some(2), false);
    assert_eq!((r.healthy, r.reason), (true, policy::GPU_HEALTHY), "{r:?}");
    assert_eq!(r.expected, 2);
    assert!(r.devices.iter().all(|d| d.healthy));
}

#[test]
fn xid_79_is_critical_and_xid_13_is_ignored() {
    let stub = stub(&format!("{TWO_H100}xid 0 13\nxid 1 79\n"));
    let m = monitor(&stub);
    let r = snapshot_until(&m, Some(2), |r| r.devices[1].xids.contains_key(&79));
    assert_eq!((r.healthy, r.reason), (false, policy::XID_ERROR), "{r:?}");
    assert!(
        r.message.contains("GPU 1") && r.message.contains("79"),
        "{}",
        r.message
    );
    assert_eq!(r.devices[0].xids.get(&13), Some(&1));
    assert!(
        r.devices[0].healthy,
        "XID 13 is an application error: {r:?}"
    );
    assert_eq!(r.devices[1].reason, Some(policy::XID_ERROR));
}

#[test]
fn double_bit_ecc_errors_make_a_gpu_unhealthy() {
    let stub = stub(&format!("{TWO_H100}dev 0 ecc_dbe 3\n"));
    let r = monitor(&stub).snapshot(None, false);
    assert_eq!((r.healthy, r.reason), (false, policy::ECC_ERRORS), "{r:?}");
    assert_eq!(r.devices[0].info.ecc_volatile_uncorrected, Some(3));
}

#[test]
fn row_remapping_and_busy_gpus_are_read_through_nvml() {
    let stub = stub(&format!("{TWO_H100}dev 1 remap_pending 1\n"));
    let r = monitor(&stub).snapshot(None, false);
    assert_eq!(r.reason, policy::ROW_REMAP_PENDING, "{r:?}");
    let stub = crate::stub(&format!(
        "{TWO_H100}dev 0 proc_pid 4242\ndev 0 proc_mem 2097152\n"
    ));
    let m = monitor(&stub);
    assert!(m.snapshot(None, false).healthy);
    let r = m.snapshot(None, true);
    assert_eq!(r.reason, policy::GPU_BUSY, "{r:?}");
    let procs = r.devices[0].info.processes.clone().unwrap_or_default();
    assert_eq!((procs[0].pid, procs[0].used_bytes), (4242, Some(2_097_152)));
}

#[test]
fn fewer_gpus_than_expected_is_unhealthy() {
    let stub = stub("devices 1\n");
    let r = monitor(&stub).snapshot(Some(2), false);
    assert_eq!((r.healthy, r.reason), (false, policy::GPU_MISSING), "{r:?}");
    assert_eq!(r.message, "found 1 of 2 expected GPUs");
}

#[test]
fn a_missing_library_is_its_own_reason_and_the_driver_not_loaded_another() {
    let missing = Path::new("/nonexistent/libnvidia-ml.so.1");
    let err = NvmlGpu::load(Some(missing)).expect_err("no library");
    assert!(matches!(err, Error::LibraryNotFound { .. }), "{err}");
    assert_eq!(err.metric_label(), "nvml_not_found");
    let m = Monitor::start(gpu::open(Some(missing)), Settings::default()).expect("thread");
    let r = m.snapshot(None, false);
    assert_eq!(
        (r.healthy, r.reason),
        (true, policy::NVML_NOT_FOUND),
        "{r:?}"
    );
    let r = m.snapshot(Some(1), false);
    assert_eq!(
        (r.healthy, r.reason),
        (false, policy::NVML_NOT_FOUND),
        "{r:?}"
    );

    let stub = stub("init_error 9\n");
    let err = NvmlGpu::load(Some(&stub.lib)).expect_err("driver not loaded");
    assert!(matches!(err, Error::Nvml { call: "init", .. }), "{err}");
    let m = Monitor::start(gpu::open(Some(&stub.lib)), Settings::default()).expect("thread");
    assert_eq!(m.snapshot(None, false).reason, policy::NVML_FAILED);
}

/// Runs `gpu-check -o json` with `args`; returns the exit code and the one JSON document.
fn gpu_check(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_coldstart-agent"))
        .args([
            "--log-format",
            "text",
            "gpu-check",
            "-o",
            "json",
            "--xid-wait",
            "0.5",
        ])
        .args(args)
        .env_remove("COLDSTART_GPUS_EXPECTED")
        .env_remove("COLDSTART_NVML_LIBRARY")
        .env_remove("COLDSTART_XID_IGNORE")
        .output()
        .expect("run coldstart-agent");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    // Exactly one document: a second one (or trailing text) fails here.
    let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), doc)
}

#[test]
fn gpu_check_prints_one_json_document_and_exits_with_the_verdict() {
    let stub = stub(TWO_H100);
    let lib = stub.lib.to_str().expect("utf-8 path");
    let (code, doc) = gpu_check(&["--nvml-library", lib, "--gpus-expected", "2"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["healthy"], true);
    assert_eq!(doc["reason"], "GPUHealthy");
    assert_eq!(doc["expected"], 2);
    assert_eq!(doc["driverVersion"], "550.54.15");
    assert_eq!(doc["cudaVersion"], "12.4");
    let d1 = &doc["devices"][1];
    assert_eq!(d1["index"], 1);
    assert_eq!(d1["uuid"], "GPU-66666666-7777-8888-9999-000000000000");
    assert_eq!(d1["name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(d1["memoryTotalBytes"], 85_899_345_920u64);
    assert_eq!(d1["pciBusId"], "00000000:2A:00.0");
    assert_eq!(d1["computeCapability"], "9.0");
    assert_eq!(d1["persistenceMode"], false);
    assert_eq!(d1["migEnabled"], true);
    assert_eq!(d1["healthy"], true);

    let (code, doc) = gpu_check(&["--nvml-library", lib, "--gpus-expected", "3"]);
    assert_eq!(
        (code, &doc["reason"]),
        (1, &Value::from("GPUMissing")),
        "{doc:#}"
    );

    let stub = crate::stub(&format!("{TWO_H100}xid 1 79\n"));
    let lib = stub.lib.to_str().expect("utf-8 path");
    let (code, doc) = gpu_check(&["--nvml-library", lib]);
    assert_eq!(
        (code, &doc["reason"]),
        (1, &Value::from("XidError")),
        "{doc:#}"
    );
    assert_eq!(doc["devices"][1]["xids"]["79"], 1);
    // The same XID in a replaced ignore list does not count.
    let stub = crate::stub(&format!("{TWO_H100}xid 1 79\n"));
    let lib = stub.lib.to_str().expect("utf-8 path");
    let (code, doc) = gpu_check(&["--nvml-library", lib, "--xid-ignore", "79"]);
    assert_eq!(code, 0, "{doc:#}");
}

#[test]
fn gpu_check_without_the_library_says_why() {
    let missing = "/nonexistent/libnvidia-ml.so.1";
    // auto: no GPU expected when NVML cannot load, so healthy (exit 0), with the reason.
    let (code, doc) = gpu_check(&["--nvml-library", missing]);
    assert_eq!(
        (code, &doc["reason"]),
        (0, &Value::from("NVMLNotFound")),
        "{doc:#}"
    );
    assert_eq!(doc["expected"], 0);
    let (code, doc) = gpu_check(&["--nvml-library", missing, "--gpus-expected", "1"]);
    assert_eq!(
        (code, &doc["reason"]),
        (1, &Value::from("NVMLNotFound")),
        "{doc:#}"
    );
    assert!(
        doc["message"]
            .as_str()
            .unwrap_or_default()
            .contains(missing),
        "{doc:#}"
    );
    let (code, doc) = gpu_check(&["--nvml-library", missing, "--gpus-expected", "none"]);
    assert_eq!(
        (code, &doc["reason"]),
        (0, &Value::from("NoGPUExpected")),
        "{doc:#}"
    );
}

#[test]
fn gpu_check_prints_yaml_of_the_same_shape() {
    let missing = "/nonexistent/libnvidia-ml.so.1";
    let out = Command::new(env!("CARGO_BIN_EXE_coldstart-agent"))
        .args(["gpu-check", "-o", "yaml", "--xid-wait", "0.1"])
        .args(["--nvml-library", missing, "--gpus-expected", "none"])
        .env_remove("COLDSTART_GPUS_EXPECTED")
        .env_remove("COLDSTART_NVML_LIBRARY")
        .env_remove("COLDSTART_XID_IGNORE")
        .output()
        .expect("run coldstart-agent");
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let doc: Value = serde_yaml::from_str(&stdout).expect("one YAML document");
    assert_eq!(doc["reason"], "NoGPUExpected", "{stdout}");
    assert_eq!(out.status.code(), Some(0));
}

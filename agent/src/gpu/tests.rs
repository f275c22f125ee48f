//! Tests of the gpu port: the policy as tables, the monitor against the fake, the translations.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::*;
use super::*;

fn dev(index: u32) -> DeviceInfo {
    DeviceInfo {
        index,
        uuid: format!("GPU-{index}"),
        name: "NVIDIA H100 80GB HBM3".into(),
        memory_total_bytes: 80 << 30,
        temperature_celsius: Some(40),
        throttle_reasons: Some(0x1),
        ecc_volatile_uncorrected: Some(0),
        pages_pending_retirement: Some(false),
        row_remap_pending: Some(false),
        row_remap_failure: Some(false),
        processes: Some(Vec::new()),
        ..DeviceInfo::default()
    }
}

fn inv(devices: Vec<DeviceInfo>) -> Result<Inventory, Error> {
    Ok(Inventory {
        driver_version: "550.54.15".into(),
        cuda_version: Some("12.4".into()),
        devices,
    })
}

fn xid(device: u32, xid: u64) -> XidEvent {
    XidEvent {
        device: Some(device),
        xid: Some(xid),
    }
}

fn not_found() -> Result<Inventory, Error> {
    Err(Error::LibraryNotFound {
        library: "libnvidia-ml.so.1".into(),
        reason: "cannot open shared object file".into(),
    })
}

/// (case, probe, events, expected, idle, healthy, reason)
type Case = (
    &'static str,
    Result<Inventory, Error>,
    Vec<XidEvent>,
    Expected,
    bool,
    bool,
    &'static str,
);

#[test]
fn verdicts_for_event_sequences_and_readings() {
    let two = || inv(vec![dev(0), dev(1)]);
    let with = |f: fn(&mut DeviceInfo)| {
        let mut d = dev(1);
        f(&mut d);
        inv(vec![dev(0), d])
    };
    let all = Expected::Count(2);
    let cases: Vec<Case> = vec![
        ("healthy", two(), vec![], all, false, true, GPU_HEALTHY),
        (
            "auto, one loaded",
            two(),
            vec![],
            Expected::IfNvmlLoads,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "xid 79",
            two(),
            vec![xid(1, 79)],
            all,
            false,
            false,
            XID_ERROR,
        ),
        (
            "xid 13 ignored",
            two(),
            vec![xid(0, 13), xid(1, 13)],
            all,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "every ignored xid",
            two(),
            [13, 31, 43, 45, 68, 109].map(|x| xid(0, x)).to_vec(),
            all,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "ignored then critical",
            two(),
            vec![xid(0, 13), xid(0, 48)],
            all,
            false,
            false,
            XID_ERROR,
        ),
        (
            "unknown xid is critical",
            two(),
            vec![XidEvent {
                device: Some(0),
                xid: None,
            }],
            all,
            false,
            false,
            XID_ERROR,
        ),
        (
            "xid without device hits all",
            two(),
            vec![XidEvent {
                device: None,
                xid: Some(79),
            }],
            all,
            false,
            false,
            XID_ERROR,
        ),
        (
            "xid on a device not present",
            two(),
            vec![xid(5, 79)],
            all,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "ecc dbe",
            with(|d| d.ecc_volatile_uncorrected = Some(2)),
            vec![],
            all,
            false,
            false,
            ECC_ERRORS,
        ),
        (
            "ecc unsupported",
            with(|d| d.ecc_volatile_uncorrected = None),
            vec![],
            all,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "remap failure",
            with(|d| d.row_remap_failure = Some(true)),
            vec![],
            all,
            false,
            false,
            ROW_REMAP_FAILURE,
        ),
        (
            "remap pending",
            with(|d| d.row_remap_pending = Some(true)),
            vec![],
            all,
            false,
            false,
            ROW_REMAP_PENDING,
        ),
        (
            "pages pending",
            with(|d| d.pages_pending_retirement = Some(true)),
            vec![],
            all,
            false,
            false,
            PAGES_PENDING_RETIREMENT,
        ),
        (
            "hw thermal slowdown",
            with(|d| d.throttle_reasons = Some(0x40)),
            vec![],
            all,
            false,
            false,
            HW_SLOWDOWN,
        ),
        (
            "sw power cap is fine",
            with(|d| d.throttle_reasons = Some(0x4)),
            vec![],
            all,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "hot",
            with(|d| d.temperature_celsius = Some(95)),
            vec![],
            all,
            false,
            false,
            OVERHEATED,
        ),
        (
            "busy but not idle",
            with(|d| {
                d.processes = Some(vec![GpuProcess {
                    pid: 7,
                    used_bytes: Some(1),
                }])
            }),
            vec![],
            all,
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "busy when idle",
            with(|d| {
                d.processes = Some(vec![GpuProcess {
                    pid: 7,
                    used_bytes: Some(1),
                }])
            }),
            vec![],
            all,
            true,
            false,
            GPU_BUSY,
        ),
        (
            "fewer than expected",
            two(),
            vec![],
            Expected::Count(4),
            false,
            false,
            GPU_MISSING,
        ),
        (
            "more than expected",
            two(),
            vec![],
            Expected::Count(1),
            false,
            true,
            GPU_HEALTHY,
        ),
        (
            "none found, auto",
            inv(vec![]),
            vec![],
            Expected::IfNvmlLoads,
            false,
            false,
            GPU_MISSING,
        ),
        (
            "no library, auto",
            not_found(),
            vec![],
            Expected::IfNvmlLoads,
            false,
            false,
            NVML_NOT_FOUND,
        ),
        (
            "no library, expected",
            not_found(),
            vec![],
            all,
            false,
            false,
            NVML_NOT_FOUND,
        ),
        (
            "no gpu expected",
            not_found(),
            vec![],
            Expected::Count(0),
            false,
            true,
            NO_GPU_EXPECTED,
        ),
        (
            "none expected, xid",
            two(),
            vec![xid(0, 79)],
            Expected::Count(0),
            false,
            true,
            NO_GPU_EXPECTED,
        ),
        (
            "driver not loaded",
            Err(Error::Nvml {
                call: "init",
                reason: "driver not loaded".into(),
            }),
            vec![],
            Expected::IfNvmlLoads,
            false,
            false,
            NVML_FAILED,
        ),
    ];
    let settings = Settings::default();
    for (name, probe, events, expected, idle, healthy, reason) in cases {
        let v = evaluate(&probe, &events, expected, idle, &settings);
        assert_eq!(
            (v.healthy, v.reason),
            (healthy, reason),
            "{name}: {}",
            v.message
        );
    }
}

#[test]
fn the_message_names_the_device_and_the_xid_and_counts_the_rest() {
    let events = [xid(0, 79), xid(1, 48), xid(1, 13)];
    let v = evaluate(
        &inv(vec![dev(0), dev(1)]),
        &events,
        Expected::Count(2),
        false,
        &Settings::default(),
    );
    assert_eq!(v.message, "GPU 0: critical XID 79 (and 1 more unhealthy)");
    assert_eq!(v.devices[1].message.as_deref(), Some("critical XID 48"));
    assert_eq!(v.expected, 2);
}

#[test]
fn a_replaced_ignore_list_makes_the_default_ones_critical() {
    let settings = Settings {
        xid_ignore: [79].into_iter().collect(),
        ..Settings::default()
    };
    let probe = inv(vec![dev(0)]);
    assert!(evaluate(&probe, &[xid(0, 79)], Expected::Count(1), false, &settings).healthy);
    let v = evaluate(&probe, &[xid(0, 13)], Expected::Count(1), false, &settings);
    assert_eq!((v.healthy, v.reason), (false, XID_ERROR));
}

#[test]
fn expected_resolves_from_setting_and_capacity() {
    use GpusExpected as G;
    assert_eq!(Expected::resolve(G::Auto, Some(8)), Expected::Count(8));
    assert_eq!(Expected::resolve(G::Auto, None), Expected::IfNvmlLoads);
    assert_eq!(Expected::resolve(G::None, Some(8)), Expected::Count(0));
    assert_eq!(Expected::resolve(G::Count(2), Some(8)), Expected::Count(2));
    assert_eq!("auto".parse(), Ok(G::Auto));
    assert_eq!("none".parse(), Ok(G::None));
    assert_eq!("4".parse(), Ok(G::Count(4)));
    assert!("-1".parse::<G>().is_err());
    assert_eq!(
        throttle_names(0x41),
        vec!["gpu_idle", "hw_thermal_slowdown"]
    );
    assert_eq!(
        parse_xid_list(" 13, 31,"),
        Ok([13, 31].into_iter().collect())
    );
    assert!(parse_xid_list("13;31").is_err());
}

fn wait_for(monitor: &Monitor, cond: impl Fn(&GpuReport) -> bool) -> GpuReport {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = monitor.snapshot(Some(2), false);
        if cond(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_monitor_keeps_xids_until_restart_and_counts_them() {
    let fake = Arc::new(FakeGpu::with_devices(vec![dev(0), dev(1)]));
    let monitor = Monitor::start(fake.clone(), Settings::default()).expect("thread");
    let r = monitor.snapshot(Some(2), false);
    assert!(r.healthy, "{r:?}");
    fake.push_xid(Some(1), 13);
    fake.push_xid(Some(1), 79);
    fake.push_xid(Some(1), 79);
    let r = wait_for(&monitor, |r| r.devices[1].xids.get(&79) == Some(&2));
    assert_eq!((r.healthy, r.reason), (false, XID_ERROR), "{r:?}");
    assert_eq!(r.devices[1].xids.get(&13), Some(&1));
    assert!(r.devices[0].healthy);
    // Still unhealthy later: an XID is not forgotten.
    assert!(!monitor.snapshot(Some(2), false).healthy);
    // More GPUs expected than present.
    assert_eq!(monitor.snapshot(Some(3), false).reason, GPU_MISSING);
    assert!(fake.state().waits > 0 && fake.state().probes >= 3);
}

#[test]
fn the_monitor_reports_probe_and_event_failures() {
    let fake = Arc::new(FakeGpu::with_devices(vec![dev(0)]));
    fake.state().fail_events = true;
    let monitor = Monitor::start(fake.clone(), Settings::default()).expect("thread");
    let r = wait_for(&monitor, |r| r.xid_watch_error.is_some());
    assert!(
        r.xid_watch_error
            .as_deref()
            .unwrap_or_default()
            .contains("fail_events"),
        "{r:?}"
    );
    fake.state().fail_probe = Some("gpu is lost".into());
    let r = monitor.snapshot(None, false);
    assert_eq!((r.healthy, r.reason), (false, NVML_FAILED));
    fake.state().fail_probe = None;
    fake.state().missing_library = true;
    let r = monitor.snapshot(None, false);
    assert_eq!((r.healthy, r.reason), (false, NVML_NOT_FOUND));
    // Dropping the monitor stops the thread even while it waits to retry.
    let started = Instant::now();
    drop(monitor);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn condition_status_and_metrics_follow_the_report() {
    let mut hot = dev(1);
    hot.temperature_celsius = Some(93);
    hot.memory_used_bytes = 1 << 20;
    let xids: XidCounts = [(xid(1, 79), 3)].into_iter().collect();
    let r = report(
        &inv(vec![dev(0), hot]),
        &xids,
        Expected::Count(2),
        false,
        &Settings::default(),
    );
    let c = condition(&r);
    assert_eq!(
        (c.type_, c.status, c.reason),
        (crate::api::CONDITION_GPU_HEALTHY, false, XID_ERROR)
    );
    let s = status(&r);
    assert_eq!(s.reason.as_deref(), Some(XID_ERROR));
    assert_eq!(s.expected, Some(2));
    assert_eq!(s.driver_version.as_deref(), Some("550.54.15"));
    assert_eq!(s.devices[1].reason.as_deref(), Some(XID_ERROR));
    assert_eq!(s.devices[1].temperature_celsius, Some(93));
    let healthy = report(
        &inv(vec![dev(0)]),
        &XidCounts::new(),
        Expected::Count(1),
        false,
        &Settings::default(),
    );
    assert_eq!(status(&healthy).reason, None);
}

use super::*;

fn text(m: &Metrics) -> String {
    m.encode().expect("encodes")
}

#[test]
fn every_family_is_exported_with_the_prefix_and_units() {
    let m = Metrics::new();
    m.set_model_phase("gpt2", Phase::Warming);
    m.set_part_phase("gpt2", Part::Weights, PartPhase::Syncing);
    m.add_bytes("gpt2", Part::Weights, 1024);
    m.set_rate("gpt2", Part::Weights, 512.0);
    m.observe_part(Part::Image, true, 42.0);
    m.error(ErrorSource::Agent, "config_invalid");
    m.pass(true, 0.01);
    let t = text(&m);
    for family in [
        "# TYPE coldstart_model_phase gauge",
        "# TYPE coldstart_part_phase gauge",
        "# TYPE coldstart_transferred_bytes counter",
        "# TYPE coldstart_transfer_rate_bytes_per_second gauge",
        "# TYPE coldstart_part_duration_seconds histogram",
        "# TYPE coldstart_errors counter",
        "# TYPE coldstart_reconcile_passes counter",
        "# TYPE coldstart_reconcile_duration_seconds histogram",
        "# TYPE coldstart_build info",
    ] {
        assert!(t.contains(family), "{family} missing in:\n{t}");
    }
    assert!(
        t.contains(r#"coldstart_model_phase{model="gpt2",phase="Warming"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_model_phase{model="gpt2",phase="Ready"} 0"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_transferred_bytes_total{model="gpt2",part="weights"} 1024"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_errors_total{source="agent",kind="config_invalid"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_reconcile_passes_total{outcome="ok"} 1"#),
        "{t}"
    );
    assert!(t.trim_end().ends_with("# EOF"), "{t}");
}

#[test]
fn phases_switch_and_models_are_forgotten() {
    let m = Metrics::new();
    m.set_part_phase("m", Part::Image, PartPhase::Pulling);
    m.set_part_phase("m", Part::Image, PartPhase::Ready);
    let t = text(&m);
    assert!(
        t.contains(r#"coldstart_part_phase{model="m",part="image",phase="Pulling"} 0"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_part_phase{model="m",part="image",phase="Ready"} 1"#),
        "{t}"
    );
    m.forget_model("m");
    assert!(!text(&m).contains(r#"model="m""#));
}

#[test]
fn port_errors_use_their_metric_labels() {
    let m = Metrics::new();
    m.image_error(&crate::images::Error::Registry("x".into()));
    let t = text(&m);
    assert!(
        t.contains(r#"coldstart_errors_total{source="images",kind="registry"} 1"#),
        "{t}"
    );
}

#[test]
fn gpu_series_follow_the_report() {
    use crate::gpu::{DeviceInfo, DeviceReport, GpuReport};
    let device = |index: u32, healthy: bool| DeviceReport {
        info: DeviceInfo {
            index,
            temperature_celsius: Some(if healthy { 40 } else { 93 }),
            memory_used_bytes: if healthy { 0 } else { 1 << 20 },
            ..DeviceInfo::default()
        },
        healthy,
        reason: (!healthy).then_some("XIDError"),
        message: None,
        xids: if healthy {
            Default::default()
        } else {
            [(79, 3)].into()
        },
    };
    let r = GpuReport {
        healthy: false,
        reason: "XIDError",
        message: "gpu 1: xid 79".into(),
        expected: 2,
        driver_version: None,
        cuda_version: None,
        devices: vec![device(0, true), device(1, false)],
        xid_watch_error: None,
    };
    let m = Metrics::new();
    m.gpu(&r);
    m.gpu(&r);
    let t = m.encode().expect("encodes");
    for line in [
        "coldstart_gpu_healthy{gpu=\"all\"} 0",
        "coldstart_gpu_healthy{gpu=\"0\"} 1",
        "coldstart_gpu_healthy{gpu=\"1\"} 0",
        "coldstart_gpu_temperature_celsius{gpu=\"1\"} 93",
        "coldstart_gpu_memory_used_bytes{gpu=\"1\"} 1048576",
        "coldstart_gpu_xid_events_total{gpu=\"1\",xid=\"79\"} 3",
    ] {
        assert!(t.contains(line), "{line} missing in:\n{t}");
    }
}

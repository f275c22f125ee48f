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

#[test]
fn heartbeat_is_the_wall_clock_of_the_last_pass_in_unix_seconds() {
    let m = Metrics::new();
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    m.set_last_pass(at);
    let t = text(&m);
    assert!(
        t.contains("# TYPE coldstart_last_pass_timestamp_seconds gauge"),
        "{t}"
    );
    assert!(
        t.contains("coldstart_last_pass_timestamp_seconds 1700000000.0"),
        "{t}"
    );
    // A clock before 1970 reads as 0 rather than failing.
    m.set_last_pass(std::time::UNIX_EPOCH - std::time::Duration::from_secs(5));
    assert!(
        text(&m).contains("coldstart_last_pass_timestamp_seconds 0.0"),
        "{}",
        text(&m)
    );
}

#[test]
fn node_warm_seconds_is_a_histogram_in_seconds() {
    let m = Metrics::new();
    m.observe_node_warm(95.0);
    let t = text(&m);
    assert!(
        t.contains("# TYPE coldstart_node_warm_seconds histogram"),
        "{t}"
    );
    assert!(t.contains("coldstart_node_warm_seconds_count 1"), "{t}");
    assert!(t.contains("coldstart_node_warm_seconds_sum 95.0"), "{t}");
    // 95 s falls in the 160 s bucket, not in the 80 s one.
    assert!(
        t.contains(r#"coldstart_node_warm_seconds_bucket{le="80.0"} 0"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_node_warm_seconds_bucket{le="160.0"} 1"#),
        "{t}"
    );
}

#[test]
fn taint_and_deadline_gauges_follow_the_node() {
    let m = Metrics::new();
    m.set_startup_taint(true);
    m.set_warming_deadline_exceeded(true);
    let t = text(&m);
    assert!(t.contains("coldstart_startup_taint 1"), "{t}");
    assert!(t.contains("coldstart_warming_deadline_exceeded 1"), "{t}");
    m.set_startup_taint(false);
    m.set_warming_deadline_exceeded(false);
    let t = text(&m);
    assert!(t.contains("coldstart_startup_taint 0"), "{t}");
    assert!(t.contains("coldstart_warming_deadline_exceeded 0"), "{t}");
}

#[test]
fn family_names_are_the_exposed_names_of_every_family() {
    let m = Metrics::new();
    let names = m.family_names();
    for name in [
        "coldstart_model_phase",
        "coldstart_transferred_bytes",
        "coldstart_transfer_rate_bytes_per_second",
        "coldstart_gpu_temperature_celsius",
        "coldstart_build",
        "coldstart_last_pass_timestamp_seconds",
        "coldstart_node_warm_seconds",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing in {names:?}"
        );
    }
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    // What the exposition declares, for the families that always have a series, is in the list.
    for line in text(&m).lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let family = rest.split(' ').next().unwrap_or_default();
            assert!(names.iter().any(|n| n == family), "{family} not listed");
        }
    }
}

#[test]
fn compile_caches_report_bytes_inert_seals_and_evictions() {
    use crate::api::CompileCacheStatus;
    let m = Metrics::new();
    let scope = |name: &str, model: &str, bytes: u64, inert: bool| CompileCacheStatus {
        scope: name.into(),
        model: model.into(),
        current: true,
        bytes,
        inert: inert.then(|| "two keys".to_string()),
        ..CompileCacheStatus::default()
    };
    let scopes = [scope("a1", "a", 100, false), scope("b1", "b", 7, true)];
    m.compile_caches(&scopes, &[("a1".into(), 1)], 50);
    let t = text(&m);
    assert!(
        t.contains(r#"coldstart_compile_cache_bytes{model="a"} 100"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_compile_cache_inert{model="b"} 1"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_compile_cache_inert{model="a"} 0"#),
        "{t}"
    );
    assert!(
        t.contains(r#"coldstart_compile_cache_seals_total{model="a"} 1"#),
        "{t}"
    );
    assert!(
        t.contains("coldstart_compile_cache_evicted_bytes_total 50"),
        "{t}"
    );
    // A model whose scopes are gone leaves no series behind.
    m.compile_caches(&scopes[..1], &[], 0);
    assert!(!text(&m).contains(r#"model="b""#));
}

#[test]
fn compile_cache_transfers_count_results_bytes_and_uses_after_import() {
    let m = Metrics::new();
    m.compile_cache_transfer("a", "export", "pushed", 1000);
    m.compile_cache_transfer("a", "import", "imported", 900);
    m.compile_cache_transfer("a", "import", "refused", 0);
    m.compile_cache_import_use("a", true);
    m.compile_cache_import_use("a", true);
    m.compile_cache_import_use("a", false);
    let t = text(&m);
    for line in [
        r#"coldstart_compile_cache_transfers_total{model="a",direction="export",result="pushed"} 1"#,
        r#"coldstart_compile_cache_transfers_total{model="a",direction="import",result="refused"} 1"#,
        r#"coldstart_compile_cache_transferred_bytes_total{model="a",direction="export"} 1000"#,
        r#"coldstart_compile_cache_transferred_bytes_total{model="a",direction="import"} 900"#,
        r#"coldstart_compile_cache_import_uses_total{model="a",result="hit"} 2"#,
        r#"coldstart_compile_cache_import_uses_total{model="a",result="miss"} 1"#,
    ] {
        assert!(t.contains(line), "missing {line} in {t}");
    }
}

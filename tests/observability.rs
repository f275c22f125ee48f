//! The observability bundle in deploy/observability, checked against the code so it cannot
//! drift: every PromQL expression of the dashboard and the PrometheusRule parses and names only
//! series, label names and (for labels with a closed set of values) label values that the
//! agent's registry exports, read from an exercised `Metrics` rather than retyped; broken
//! expressions fail that same check; the dashboard has the shape Grafana imports; the PodMonitor
//! scrapes the DaemonSet's admin port and adds the labels the expressions group by; and the
//! PodMonitor and PrometheusRule validate offline against the Prometheus Operator's schemas.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

#[path = "observability/promql.rs"]
mod promql;

use promql::{check, exported, exported_by, problems};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[allow(clippy::expect_used)]
fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/observability/dashboard.json")).expect("dashboard.json")
}

/// The dashboard's expressions: each panel's targets and the variables' queries.
fn dashboard_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let at = format!("panel {:?} target {}", p["title"], t["refId"]);
            out.push((at, t["expr"].as_str().unwrap_or_default().to_string()));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().or(v["query"].as_str());
            out.push((
                format!("variable {}", v["name"]),
                q.unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// The rules' expressions, from the PrometheusRule's text.
#[allow(clippy::expect_used)]
fn rule_exprs(yaml: &str) -> Vec<(String, String)> {
    let rule: serde_yaml::Value = serde_yaml::from_str(yaml).expect("prometheusrule.yaml");
    let mut out = Vec::new();
    for g in rule["spec"]["groups"].as_sequence().into_iter().flatten() {
        for r in g["rules"].as_sequence().into_iter().flatten() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap_or("?");
            let expr = r["expr"].as_str().unwrap_or_default().to_string();
            out.push((format!("rule {name}"), expr));
        }
    }
    out
}

#[test]
fn dashboard_expressions_name_only_what_the_agent_exports() {
    let exprs = dashboard_exprs(&dashboard());
    assert!(exprs.len() > 10, "too few expressions found: {exprs:?}");
    let p = problems(&exprs, &exported());
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn rule_expressions_name_only_what_the_agent_exports() {
    let exprs = rule_exprs(&read("deploy/observability/prometheusrule.yaml"));
    assert!(exprs.len() >= 7, "too few rules found: {exprs:?}");
    let p = problems(&exprs, &exported());
    assert!(p.is_empty(), "{}", p.join("\n"));
}

#[test]
fn the_checker_rejects_broken_expressions() {
    let ex = exported();
    for good in [
        r#"sum by (node, kind) (rate(coldstart_errors_total{source="weights"}[5m]))"#,
        r#"up{job="coldstart-agent"} == 0"#,
        r#"label_values(coldstart_model_phase{node=~"$node"}, model)"#,
    ] {
        assert_eq!(check(good, &ex), Vec::<String>::new(), "{good}");
    }
    for (broken, why) in [
        (
            r#"sum by (node) (coldstart_model_phase{phase="Ready"}"#,
            "does not parse",
        ),
        (
            "coldstart_model_phases",
            "series coldstart_model_phases is not exported",
        ),
        (
            "coldstart_errors",
            "series coldstart_errors is not exported",
        ),
        (
            r#"coldstart_gpu_healthy{model="m"}"#,
            "coldstart_gpu_healthy has no label model",
        ),
        (
            "sum by (nodename) (coldstart_startup_taint)",
            "label nodename is not exported",
        ),
        (
            "coldstart_model_phase * on (modell) coldstart_startup_taint",
            "label modell is not exported",
        ),
        (
            r#"coldstart_model_phase{phase="Warm"}"#,
            "phase=\"Warm\" is not a value",
        ),
        (
            r#"coldstart_part_phase{phase=~"Pulling|Downloading"}"#,
            "phase=\"Downloading\"",
        ),
        (
            r#"coldstart_errors_total{kind="budget"}"#,
            "kind=\"budget\"",
        ),
        (
            "label_values(coldstart_build_info, hostname)",
            "label hostname is not exported",
        ),
    ] {
        let p = check(broken, &ex);
        assert!(
            p.iter().any(|p| p.contains(why)),
            "{broken}: expected a problem containing {why:?}, got {p:?}"
        );
    }
}

#[test]
fn a_misspelt_rule_fails_the_same_check() {
    let yaml = read("deploy/observability/prometheusrule.yaml").replace(
        "coldstart_warming_deadline_exceeded",
        "coldstart_warming_deadline_exceded",
    );
    let p = problems(&rule_exprs(&yaml), &exported());
    assert!(
        p.iter()
            .any(|p| p.contains("rule ColdstartWarmingDeadlineExceeded")
                && p.contains("coldstart_warming_deadline_exceded is not exported")),
        "{p:?}"
    );
}

#[test]
#[should_panic(expected = "families without a series")]
fn a_family_left_unexercised_is_caught() {
    // A bare registry: every family is declared, none has a series whose labels could be read.
    exported_by(&coldstart_agent::metrics::Metrics::new());
}

#[test]
fn every_exported_family_has_a_series_in_the_exercised_registry() {
    // exported_by() panics naming any family left empty; here: the new families are there.
    let ex = exported();
    for s in [
        "coldstart_node_warm_seconds_bucket",
        "coldstart_last_pass_timestamp_seconds",
        "coldstart_startup_taint",
        "coldstart_warming_deadline_exceeded",
        "coldstart_build_info",
    ] {
        assert!(
            ex.series.contains_key(s),
            "{s} missing: {:?}",
            ex.series.keys()
        );
    }
}

/// Every `datasource` object anywhere in the dashboard, with where it is.
fn datasources<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "datasource" {
                    out.push((at.clone(), child));
                } else {
                    datasources(child, format!("{at}.{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                datasources(child, format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn dashboard_has_the_shape_grafana_imports() {
    let d = dashboard();
    let mut problems = Vec::new();
    for key in ["title", "uid"] {
        if d[key].as_str().is_none_or(str::is_empty) {
            problems.push(format!("dashboard has no {key}"));
        }
    }
    let vars = d["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if !vars.iter().any(|v| {
        v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"
    }) {
        problems.push("no `datasource` variable of type datasource (prometheus)".into());
    }
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    let mut ids = BTreeSet::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        if title.is_empty() {
            problems.push(format!("panel {} has no title", p["id"]));
        }
        if !ids.insert(p["id"].to_string()) || !p["id"].is_u64() {
            problems.push(format!("panel {title:?}: id missing or repeated"));
        }
        if p["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("panel {title:?} does not use ${{datasource}}"));
        }
        if p["gridPos"]["w"].as_u64().is_none() || p["gridPos"]["h"].as_u64().is_none() {
            problems.push(format!("panel {title:?} has no gridPos"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no target"));
        }
        for t in &targets {
            if t["expr"].as_str().is_none_or(str::is_empty) || t["refId"].as_str().is_none() {
                problems.push(format!("panel {title:?}: a target without expr or refId"));
            }
        }
    }
    // No data source is hard-coded anywhere, variables and targets included.
    let mut all = Vec::new();
    datasources(&d, "$".into(), &mut all);
    for (at, ds) in all {
        if ds["uid"] != "${datasource}" {
            problems.push(format!(
                "{at}: data source {ds} is not the ${{datasource}} variable"
            ));
        }
    }
    assert!(panels.len() >= 10, "{} panels", panels.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn rules_carry_a_severity_and_runbook_text() {
    let rule: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/observability/prometheusrule.yaml")).expect("yaml");
    let mut problems = Vec::new();
    for g in rule["spec"]["groups"].as_sequence().into_iter().flatten() {
        for r in g["rules"].as_sequence().into_iter().flatten() {
            let name = r["alert"].as_str().unwrap_or("?");
            if r["labels"]["severity"].as_str().is_none() {
                problems.push(format!("{name}: no severity label"));
            }
            for key in ["summary", "description", "runbook"] {
                if r["annotations"][key]
                    .as_str()
                    .is_none_or(|s| s.trim().is_empty())
                {
                    problems.push(format!("{name}: no {key} annotation"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn podmonitor_scrapes_the_admin_port_and_labels_the_node() {
    let pm: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/observability/podmonitor.yaml")).expect("podmonitor");
    let ds: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/base/daemonset.yaml")).expect("daemonset");
    assert_eq!(pm["metadata"]["namespace"], ds["metadata"]["namespace"]);
    assert_eq!(
        pm["spec"]["namespaceSelector"]["matchNames"][0],
        ds["metadata"]["namespace"]
    );
    // The selector matches the DaemonSet's pods.
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let selector = pm["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels");
    for (k, v) in selector {
        assert_eq!(&pod_labels[k], v, "selector {k:?} does not match the pods");
    }
    // The endpoint is the agent container's port named admin (9464).
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    assert_eq!(endpoint["port"], "admin");
    assert_eq!(endpoint["path"], "/metrics");
    let ports = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default());
    assert!(
        ports
            .clone()
            .any(|p| p["name"] == "admin" && p["containerPort"] == 9464),
        "no container port admin: 9464 in the DaemonSet"
    );
    // The labels the expressions use: node from the pod's node, job fixed.
    let relabel = endpoint["relabelings"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    assert!(
        relabel.iter().any(|r| r["targetLabel"] == "node"
            && r["sourceLabels"][0] == "__meta_kubernetes_pod_node_name")
    );
    assert!(
        relabel
            .iter()
            .any(|r| r["targetLabel"] == "job" && r["replacement"] == "coldstart-agent")
    );
}

/// `$COLDSTART_TESTENV/npm/node_modules` (default under `/opt/coldstart-testenv`), where
/// scripts/test-env.sh installs @kubernetes-models/prometheus-operator; panics if it is not there.
fn node_modules() -> PathBuf {
    let base = std::env::var_os("COLDSTART_TESTENV")
        .map_or_else(|| PathBuf::from("/opt/coldstart-testenv"), PathBuf::from);
    let modules = base.join("npm/node_modules");
    let package = modules.join("@kubernetes-models/prometheus-operator/package.json");
    assert!(
        package.is_file(),
        "{} missing; run scripts/test-env.sh",
        package.display()
    );
    modules
}

/// The Operator objects `kubectl kustomize deploy/observability` renders (and the dashboard's
/// ConfigMap, checked to carry dashboard.json unchanged).
#[allow(clippy::expect_used)]
fn rendered_operator_objects() -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", "deploy/observability"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("kubectl (scripts/test-env.sh): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut objs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("rendered yaml");
        if v["kind"] == "ConfigMap" {
            let json = v["data"]["coldstart-warming.json"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(json, read("deploy/observability/dashboard.json"));
            assert_eq!(v["metadata"]["labels"]["grafana_dashboard"], "1");
        } else {
            objs.push(v);
        }
    }
    objs
}

/// Runs the validator script on `objs`: its exit status and output.
#[allow(clippy::expect_used)] // a test helper: a failure is the test's failure
fn validate(objs: &[Value]) -> (bool, String) {
    let script = root().join("scripts/validate_models.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .arg(node_modules())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node (scripts/test-env.sh installs it): {e}"));
    let input = serde_json::to_vec(objs).expect("json");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &input).expect("write");
    let out = child.wait_with_output().expect("node runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
#[ignore = "needs kubectl, node and the npm packages of scripts/test-env.sh"]
fn operator_objects_validate_offline() {
    let objs = rendered_operator_objects();
    let kinds: BTreeSet<&str> = objs.iter().filter_map(|o| o["kind"].as_str()).collect();
    assert_eq!(kinds, BTreeSet::from(["PodMonitor", "PrometheusRule"]));
    let (ok, text) = validate(&objs);
    assert!(ok, "{text}");
    assert!(text.contains("ok PodMonitor/coldstart-agent"), "{text}");
    assert!(text.contains("ok PrometheusRule/coldstart-agent"), "{text}");
}

#[test]
#[ignore = "needs kubectl, node and the npm packages of scripts/test-env.sh"]
fn broken_operator_objects_fail_validation() {
    let mut objs = rendered_operator_objects();
    for o in &mut objs {
        if o["kind"] == "PodMonitor" {
            o["spec"]["podMetricsEndpoints"] = Value::String("admin".into());
        } else if let Some(rule) = o["spec"]["groups"][0]["rules"][0].as_object_mut() {
            rule.remove("expr");
        }
    }
    let (ok, text) = validate(&objs);
    assert!(!ok, "{text}");
    assert!(
        text.contains("invalid PodMonitor/coldstart-agent") && text.contains("podMetricsEndpoints"),
        "{text}"
    );
    assert!(
        text.contains("invalid PrometheusRule/coldstart-agent") && text.contains("expr"),
        "{text}"
    );
}

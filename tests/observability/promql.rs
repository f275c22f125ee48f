//! The PromQL checker: what the agent's registry exports (read from an exercised `Metrics`),
//! and whether an expression parses and names only that.
// Test helpers: a failure is the test's failure.
#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use coldstart_agent::api::{PartPhase, Phase};
use coldstart_agent::gpu::{DeviceInfo, DeviceReport, GpuReport};
use coldstart_agent::metrics::{ErrorSource, Metrics, Part};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr, VectorSelector};

/// Labels Prometheus adds to every scraped series: `job` and `instance` (Prometheus), `namespace`,
/// `pod`, `container` and `endpoint` (the Operator's PodMonitor), `node` (our relabeling, which
/// `podmonitor_scrapes_the_admin_port_and_labels_the_node` checks).
const TARGET_LABELS: [&str; 7] = [
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "endpoint",
    "node",
];

/// Series Prometheus makes itself, with no labels of their own beyond the target's.
const BUILTIN_SERIES: [&str; 1] = ["up"];

/// Labels whose values are a closed set the code defines: a matcher on them must name exported
/// values (`kind` is the error's `metric_label()`; only the kinds exercised below are known).
const CLOSED_LABELS: [&str; 5] = ["phase", "part", "source", "outcome", "kind"];

/// What the agent's registry exports: each series name with its label names, and the values
/// seen for each label.
#[derive(Debug, Default)]
pub struct Exported {
    /// Series name to its label names.
    pub series: BTreeMap<String, BTreeSet<String>>,
    /// Label name to the values seen.
    pub values: BTreeMap<String, BTreeSet<String>>,
}

impl Exported {
    fn labels(&self) -> BTreeSet<&str> {
        self.values
            .keys()
            .map(String::as_str)
            .chain(TARGET_LABELS)
            .collect()
    }
}

/// A GPU report with one healthy and one failing device (temperature, memory, an XID).
fn gpu_report() -> GpuReport {
    let device = |index: u32, healthy: bool| DeviceReport {
        info: DeviceInfo {
            index,
            temperature_celsius: Some(60),
            memory_used_bytes: 1 << 20,
            ..DeviceInfo::default()
        },
        healthy,
        reason: (!healthy).then_some("XidError"),
        message: None,
        xids: if healthy {
            Default::default()
        } else {
            [(79, 1)].into()
        },
    };
    GpuReport {
        healthy: false,
        reason: "XidError",
        message: "gpu 1: xid 79".into(),
        expected: 2,
        driver_version: None,
        cuda_version: None,
        devices: vec![device(0, true), device(1, false)],
        xid_watch_error: None,
    }
}

/// A registry with every family holding at least one series, through the agent's own methods.
fn exercised() -> Metrics {
    let m = Metrics::new();
    m.set_model_phase("m", Phase::Warming);
    for part in [Part::Image, Part::Weights] {
        m.set_part_phase("m", part, PartPhase::Syncing);
        m.add_bytes("m", part, 1);
        m.set_rate("m", part, 1.0);
        m.observe_part(part, true, 1.0);
        m.observe_part(part, false, 1.0);
    }
    for source in [
        ErrorSource::Images,
        ErrorSource::Weights,
        ErrorSource::Node,
        ErrorSource::Agent,
    ] {
        m.error(source, "x");
    }
    m.weights_error(&coldstart_agent::weights::Error::OverBudget {
        budget: 1,
        need: 2,
        remaining: 0,
        kept: "nothing".into(),
    });
    m.pass(true, 0.1);
    m.pass(false, 0.1);
    m.gpu(&gpu_report());
    m.set_last_pass(std::time::SystemTime::UNIX_EPOCH);
    m.observe_node_warm(60.0);
    m.set_startup_taint(true);
    m.set_warming_deadline_exceeded(false);
    let scope = coldstart_agent::api::CompileCacheStatus {
        scope: "s".into(),
        model: "m".into(),
        current: true,
        bytes: 1,
        ..Default::default()
    };
    m.compile_caches(&[scope], &[("s".into(), 1)], 1);
    m.compile_cache_transfer("m", "import", "imported", 1);
    m.compile_cache_import_use("m", true);
    let snap = coldstart_agent::api::SnapshotStatus {
        name: "m-1".into(),
        model: "m".into(),
        bytes: 1,
        ..Default::default()
    };
    m.snapshots(&[snap], &["m"], &["m"]);
    m.snapshot_capture("m", "captured");
    m.snapshot_evicted("m");
    m
}

/// Splits `a="x",b="y"` (OpenMetrics label syntax, `\"` escapes) into pairs.
fn label_pairs(mut s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while let Some((name, rest)) = s.split_once("=\"") {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_string(), value));
        s = &rest[end..];
    }
    out
}

/// Reads the exposition of `m`; panics if one of its families (`Metrics::family_names`) has no
/// series (exercise it in [`exercised`]): an empty family is not exposed, so its labels would
/// be unknown.
pub fn exported_by(m: &Metrics) -> Exported {
    let text = m.encode().expect("the registry encodes");
    let mut ex = Exported::default();
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.rsplit_once('}').map_or("", |(l, _)| l)),
            None => (line.split(' ').next().unwrap_or(line), ""),
        };
        let names = ex.series.entry(name.to_string()).or_default();
        for (label, value) in label_pairs(labels) {
            names.insert(label.clone());
            ex.values.entry(label).or_default().insert(value);
        }
    }
    let declared = format!("\n{text}");
    let silent: Vec<&String> = m
        .family_names()
        .iter()
        .filter(|f| !declared.contains(&format!("\n# TYPE {f} ")))
        .collect();
    assert!(
        silent.is_empty(),
        "families without a series (exercise them in exercised()): {silent:?}"
    );
    ex
}

pub fn exported() -> Exported {
    let mut ex = exported_by(&exercised());
    for s in BUILTIN_SERIES {
        ex.series.insert(s.to_string(), BTreeSet::new());
    }
    ex
}

/// Grafana's variables, replaced by what they stand for so that the parser sees PromQL:
/// interval variables by a duration, the dashboard's own (in regex matchers) by `.*`.
fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for v in ["$__rate_interval", "$__interval", "$__range"] {
        s = s.replace(v, "5m");
    }
    for v in ["${node}", "$node", "${model}", "$model"] {
        s = s.replace(v, ".*");
    }
    s
}

fn check_matcher(series: &str, m: &Matcher, ex: &Exported, out: &mut Vec<String>) {
    if m.name == "__name__" {
        if m.op == MatchOp::Equal && !ex.series.contains_key(&m.value) {
            out.push(format!("series {} is not exported", m.value));
        }
        return;
    }
    let own = ex.series.get(series);
    if !TARGET_LABELS.contains(&m.name.as_str()) && own.is_some_and(|l| !l.contains(&m.name)) {
        out.push(format!("{series} has no label {}", m.name));
    }
    if !CLOSED_LABELS.contains(&m.name.as_str()) {
        return;
    }
    let known = ex.values.get(&m.name).cloned().unwrap_or_default();
    let wanted: Vec<&str> = match &m.op {
        MatchOp::Equal | MatchOp::NotEqual => vec![m.value.as_str()],
        MatchOp::Re(_) | MatchOp::NotRe(_) => m.value.split('|').collect(),
    };
    for v in wanted {
        if !known.contains(v) {
            out.push(format!(
                "{series}: {}={v:?} is not a value the agent exports",
                m.name
            ));
        }
    }
}

fn check_selector(v: &VectorSelector, ex: &Exported, out: &mut Vec<String>) {
    let name = v.name.clone().unwrap_or_default();
    if !name.is_empty() && !ex.series.contains_key(&name) {
        out.push(format!("series {name} is not exported"));
    }
    let all = v
        .matchers
        .matchers
        .iter()
        .chain(v.matchers.or_matchers.iter().flatten());
    for m in all {
        check_matcher(&name, m, ex, out);
    }
}

fn check_labels<'a>(
    labels: impl IntoIterator<Item = &'a String>,
    ex: &Exported,
    out: &mut Vec<String>,
) {
    let known = ex.labels();
    for l in labels {
        if !known.contains(l.as_str()) {
            out.push(format!("label {l} is not exported"));
        }
    }
}

fn walk(e: &Expr, ex: &Exported, out: &mut Vec<String>) {
    match e {
        Expr::Aggregate(a) => {
            if let Some(m) = &a.modifier {
                check_labels(&m.labels().labels, ex, out);
            }
            walk(&a.expr, ex, out);
            if let Some(p) = &a.param {
                walk(p, ex, out);
            }
        }
        Expr::Unary(u) => walk(&u.expr, ex, out),
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if let Some(matching) = &m.matching {
                    check_labels(&matching.labels().labels, ex, out);
                }
                if let Some(group) = m.card.labels() {
                    check_labels(&group.labels, ex, out);
                }
            }
            walk(&b.lhs, ex, out);
            walk(&b.rhs, ex, out);
        }
        Expr::Paren(p) => walk(&p.expr, ex, out),
        Expr::Subquery(s) => walk(&s.expr, ex, out),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::VectorSelector(v) => check_selector(v, ex, out),
        Expr::MatrixSelector(m) => check_selector(&m.vs, ex, out),
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, ex, out);
            }
        }
        Expr::Extension(_) => out.push("a parser extension, not PromQL".into()),
    }
}

/// The checker: what is wrong with one expression (empty: nothing). Grafana's
/// `label_values(SELECTOR, LABEL)` is checked as its selector and its label.
pub fn check(expr: &str, ex: &Exported) -> Vec<String> {
    let expr = substitute(expr);
    let mut out = Vec::new();
    let promql = match expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .and_then(|s| s.rsplit_once(','))
    {
        Some((selector, label)) => {
            check_labels([&label.trim().to_string()], ex, &mut out);
            selector.to_string()
        }
        None => expr,
    };
    match parser::parse(&promql) {
        Ok(e) => walk(&e, ex, &mut out),
        Err(e) => out.push(format!("does not parse: {e}")),
    }
    out
}

/// Every problem of a set of named expressions, one line each.
pub fn problems(exprs: &[(String, String)], ex: &Exported) -> Vec<String> {
    exprs
        .iter()
        .flat_map(|(at, e)| {
            check(e, ex)
                .into_iter()
                .map(move |p| format!("{at}: {p}\n    {e}"))
        })
        .collect()
}

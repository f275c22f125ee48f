use std::collections::BTreeMap;

use super::{matches, parse_selector};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn exprs(text: &str) -> Vec<(String, String, Option<Vec<String>>)> {
    let sel = parse_selector(text).unwrap();
    sel.match_expressions
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.key, e.operator, e.values))
        .collect()
}

fn vals(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn equality_goes_to_match_labels() {
    for text in ["pool=gpu", "pool==gpu", " pool = gpu "] {
        let sel = parse_selector(text).unwrap();
        assert_eq!(sel.match_labels, Some(labels(&[("pool", "gpu")])), "{text}");
        assert_eq!(sel.match_expressions, None, "{text}");
    }
    let sel = parse_selector("a=1,example.com/b=x_y.z").unwrap();
    assert_eq!(
        sel.match_labels,
        Some(labels(&[("a", "1"), ("example.com/b", "x_y.z")]))
    );
}

#[test]
fn set_and_existence_operators_become_expressions() {
    assert_eq!(
        exprs("a!=b, c in (x, y), d notin (z), e, !f"),
        vec![
            ("a".into(), "NotIn".into(), vals(&["b"])),
            ("c".into(), "In".into(), vals(&["x", "y"])),
            ("d".into(), "NotIn".into(), vals(&["z"])),
            ("e".into(), "Exists".into(), None),
            ("f".into(), "DoesNotExist".into(), None),
        ]
    );
    assert_eq!(
        exprs("gpu in(a100,h100)"),
        vec![("gpu".into(), "In".into(), vals(&["a100", "h100"]))]
    );
    // A key that merely starts with an operator word is a key.
    assert_eq!(
        exprs("index"),
        vec![("index".into(), "Exists".into(), None)]
    );
}

#[test]
fn a_repeated_equality_key_keeps_both_requirements() {
    let sel = parse_selector("a=1,a=2").unwrap();
    assert_eq!(sel.match_labels, Some(labels(&[("a", "1")])));
    assert_eq!(
        exprs("a=1,a=2"),
        vec![("a".into(), "In".into(), vals(&["2"]))]
    );
    assert!(!matches(Some(&sel), &labels(&[("a", "1")])));
}

#[test]
fn parsed_selectors_evaluate_like_the_api_server() {
    let sel = parse_selector("pool=gpu,zone in (a,b),!cordoned,tier!=spot").unwrap();
    assert!(matches(
        Some(&sel),
        &labels(&[("pool", "gpu"), ("zone", "a")])
    ));
    assert!(matches(
        Some(&sel),
        &labels(&[("pool", "gpu"), ("zone", "b"), ("tier", "od")])
    ));
    assert!(!matches(
        Some(&sel),
        &labels(&[("pool", "gpu"), ("zone", "c")])
    ));
    assert!(!matches(
        Some(&sel),
        &labels(&[("pool", "gpu"), ("zone", "a"), ("cordoned", "")])
    ));
    assert!(!matches(
        Some(&sel),
        &labels(&[("pool", "gpu"), ("zone", "a"), ("tier", "spot")])
    ));
}

#[test]
fn empty_values_are_allowed_where_kubernetes_allows_them() {
    let sel = parse_selector("a=").unwrap();
    assert_eq!(sel.match_labels, Some(labels(&[("a", "")])));
}

#[test]
fn bad_selectors_name_the_requirement() {
    for (text, fragment) in [
        ("", "empty selector"),
        ("   ", "empty selector"),
        ("a=b,,c", "empty requirement"),
        ("a in (x", "unbalanced"),
        ("a in ((x))", "nested"),
        ("a in x", "parenthesised"),
        ("a in ()", "empty value list"),
        ("a ~ b", "expected ="),
        ("=b", "missing label key"),
        ("-a=b", "start and end"),
        ("a=b c", "only letters"),
        ("Foo.com/a=b", "DNS subdomain"),
        ("a/=b", "missing label key name"),
        ("!", "missing label key"),
    ] {
        let err = parse_selector(text).unwrap_err().to_string();
        assert!(err.contains(fragment), "{text:?}: {err}");
        assert!(err.starts_with("invalid label selector"), "{err}");
    }
    let long = format!("a={}", "x".repeat(64));
    assert!(
        parse_selector(&long)
            .unwrap_err()
            .to_string()
            .contains("63")
    );
}

use serde_json::json;

use super::*;

fn env() -> Env {
    let mut e = Env::new();
    e.bind(
        "request",
        &json!({"userInfo": {"username": "system:serviceaccount:ns:coldstart-agent",
            "extra": {"authentication.kubernetes.io/node-name": ["gpu-1"]}}, "name": "gpu-1"}),
    );
    e.bind(
        "object",
        &json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "b"}]},
            "metadata": {"labels": {"x": "1", "coldstart.dev/model.m": "ready"}}}),
    );
    e.bind("oldObject", &json!(null));
    e
}

#[test]
fn the_expressions_our_policies_use_evaluate() {
    let e = env();
    let yes = [
        "has(request.userInfo.extra)",
        "'authentication.kubernetes.io/node-name' in request.userInfo.extra",
        "size(request.userInfo.extra['authentication.kubernetes.io/node-name']) == 1",
        "request.userInfo.username.startsWith('system:serviceaccount:')",
        "request.userInfo.username.endsWith(':coldstart-agent')",
        "request.userInfo.username.split(':')[3] == 'coldstart-agent'",
        "request.userInfo.username.split(':', 2) == ['system', 'serviceaccount:ns:coldstart-agent']",
        "object.spec.taints.exists(t, t.key == 'a')",
        "object.spec.taints.all(t, has(t.key))",
        "object.spec.taints.filter(t, t.key != 'a') == [{'key': 'b'}]",
        "object.metadata.labels.all(k, k == 'x' || k.startsWith('coldstart.dev/model.'))",
        "!has(object.spec.unschedulable)",
        "oldObject == null",
        "['a', 'b'].join('-') == 'a-b'",
        "'Hello'.lowerAscii() == 'hello' && 'abc'.indexOf('c') == 2",
        "'node-12'.find('[0-9]+') == '12' && 'a1b2'.findAll('[0-9]') == ['1', '2']",
        "{'type': 'Ready'} in [{'type': 'Ready'}]",
    ];
    for expr in yes {
        assert_eq!(e.eval_bool(expr), Ok(true), "{expr}");
    }
}

#[test]
fn unknown_functions_missing_fields_and_wrong_types_are_errors() {
    let e = env();
    for expr in [
        "object.spec.nothere == 'x'",
        "request.userInfo.username.noSuchFunction()",
        "params.x == 1",
        "authorizer.group('').resource('nodes').check('get').allowed()",
        "object.spec.taints.exists(t, t.value == 'x')",
    ] {
        assert!(
            matches!(e.eval_bool(expr), Err(CelError::Eval(_))),
            "{expr}: {:?}",
            e.eval_bool(expr)
        );
    }
    assert!(matches!(e.eval_bool("'x'"), Err(CelError::Type { .. })));
    assert!(matches!(e.eval_bool("1 +"), Err(CelError::Compile(_))));
    assert_eq!(e.eval_string("'a' + 'b'"), Ok("ab".to_string()));
}

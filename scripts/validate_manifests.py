"""Offline validation of Kubernetes manifests (run by scripts/validate-manifests.sh).

    python validate_manifests.py --crds DIR [--crds DIR...] [--models NODE_MODULES]
                                 [--kube-version 1.33.0] FILE...   (FILE may be -)

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields are errors)
against the given Kubernetes version. kubernetes-validate knows no custom kinds, so every object
whose group/version/kind is defined by a CRD in a --crds directory (ours in deploy/crds; a
developer may add upstream ones) is checked against that
CRD's openAPIV3Schema with jsonschema, strictly too (unknown fields are errors, as with
`kubectl apply --validate=strict`). With --models, KEDA, Karpenter and Prometheus Operator
objects are also checked by the validators of the @kubernetes-models npm packages
(scripts/validate_models.mjs, run with node), and the HTTP add-on's InterceptorRoute, which has
no such package, field by field against what its v0.15 CRD and documentation say
(check_interceptor_route). An object of a kind nothing knows is an error, never a skip.
Prints one line per problem and exits 1 if there is any.
"""

import argparse
import copy
import json
import pathlib
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml


def openapi_to_jsonschema(node):
    """Turns a CRD's OpenAPI v3 schema into JSON Schema with Kubernetes' strictness."""
    if isinstance(node, list):
        return [openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: openapi_to_jsonschema(v) for k, v in node.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = list(out["enum"]) + [None]
    if (
        out.get("type") in ("object", ["object", "null"])
        and "properties" in out
        and "additionalProperties" not in out
        and not preserve
    ):
        out["additionalProperties"] = False
    return out


def load_crds(directory):
    """(group, version, kind) -> (scope, JSON schema) for every CRD in DIR."""
    crds = {}
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = openapi_to_jsonschema(version["schema"]["openAPIV3Schema"])
                # metadata is typed by the API server, not the CRD: only require a name.
                schema = copy.deepcopy(schema)
                props = schema.setdefault("properties", {})
                # apiVersion and kind are implicit in a CRD's schema.
                props["apiVersion"] = {"const": "%s/%s" % (spec["group"], version["name"])}
                props["kind"] = {"const": spec["names"]["kind"]}
                props["metadata"] = {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string", "minLength": 1}},
                }
                key = (spec["group"], version["name"], spec["names"]["kind"])
                crds[key] = (spec["scope"], schema)
    return crds


def read_docs(name):
    text = sys.stdin.read() if name == "-" else pathlib.Path(name).read_text()
    return [d for d in yaml.safe_load_all(text) if d]


def describe(doc):
    meta = doc.get("metadata") or {}
    return "%s/%s" % (doc.get("kind", "?"), meta.get("name", "?"))


def check_custom(doc, scope, schema):
    problems = []
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        problems.append("%s: %s" % (path, err.message))
    namespaced = "namespace" in (doc.get("metadata") or {})
    if scope == "Cluster" and namespaced:
        problems.append("metadata.namespace: set on a cluster-scoped kind")
    return problems


def check_builtin(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return [], True
    except kubernetes_validate.SchemaNotFoundError:
        return [], False
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.absolute_path) or "(root)"
        return ["%s: %s" % (path, e.message)], True


# apiVersions whose objects the @kubernetes-models packages validate (scripts/validate_models.mjs).
MODEL_API_VERSIONS = {
    "keda.sh/v1alpha1",
    "karpenter.sh/v1",
    "karpenter.k8s.aws/v1",
    "monitoring.coreos.com/v1",
}


def check_models(docs, node_modules):
    """{index: [problems]} for the docs the npm packages' validators reject (one node run)."""
    script = pathlib.Path(__file__).with_name("validate_models.mjs")
    out = subprocess.run(
        ["node", str(script), node_modules],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = out.stdout.splitlines()
    if out.returncode not in (0, 1) or len(lines) != len(docs):
        raise SystemExit("validate_models.mjs failed (%d): %s" % (out.returncode, out.stderr.strip()))
    problems = {}
    for i, line in enumerate(lines):
        if line.startswith("invalid "):
            why = line.split(": ", 1)[1] if ": " in line else line
            problems[i] = ["%s (@kubernetes-models)" % why]
    return problems


# Go durations as the HTTP add-on parses them (time.ParseDuration), e.g. 90s, 10m, 1h30m.
GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")


def go_seconds(text):
    """Seconds of a Go duration string."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, _, u in re.findall(r"([0-9]+(\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", text))


def unknown(obj, allowed, at):
    return ["%s: unknown field %r" % (at, k) for k in obj if k not in allowed]


def check_interceptor_route(doc):
    """The HTTP add-on v0.15 InterceptorRoute, field by field (facts C, "KEDA and the HTTP
    add-on"; its CRD http.keda.sh_interceptorroutes.yaml): known fields only, a target Service
    with exactly one of port/portName, a scaling metric, well-formed rules, and the timeouts
    set explicitly, since unset readiness and request timeouts hold a scale-from-zero request
    with no limit."""
    problems = []
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return ["spec: missing"]
    problems += unknown(spec, {"target", "rules", "scalingMetric", "timeouts", "coldStart"}, "spec")
    target = spec.get("target")
    if not isinstance(target, dict) or not target.get("service"):
        problems.append("spec.target.service: required (the Service to route to)")
    else:
        problems += unknown(target, {"service", "port", "portName"}, "spec.target")
        if ("port" in target) == ("portName" in target):
            problems.append("spec.target: exactly one of port or portName must be set")
    metric = spec.get("scalingMetric")
    if not isinstance(metric, dict) or not ({"concurrency", "requestRate"} & set(metric)):
        problems.append("spec.scalingMetric: one of concurrency or requestRate is required")
    else:
        problems += unknown(metric, {"concurrency", "requestRate"}, "spec.scalingMetric")
        for key, allowed in (("concurrency", {"targetValue"}), ("requestRate", {"targetValue", "window", "granularity"})):
            part = metric.get(key)
            if part is None:
                continue
            if not isinstance(part, dict):
                problems.append("spec.scalingMetric.%s: not an object" % key)
                continue
            problems += unknown(part, allowed, "spec.scalingMetric.%s" % key)
            if not isinstance(part.get("targetValue"), int) or part["targetValue"] < 1:
                problems.append("spec.scalingMetric.%s.targetValue: a positive integer is required" % key)
    for i, rule in enumerate(spec.get("rules") or []):
        at = "spec.rules.%d" % i
        if not isinstance(rule, dict):
            problems.append("%s: not an object" % at)
            continue
        problems += unknown(rule, {"hosts", "paths", "headers"}, at)
        for j, path in enumerate(rule.get("paths") or []):
            if not isinstance(path, dict) or not path.get("value"):
                problems.append("%s.paths.%d.value: required" % (at, j))
        for j, header in enumerate(rule.get("headers") or []):
            if not isinstance(header, dict) or not header.get("name"):
                problems.append("%s.headers.%d.name: required" % (at, j))
    timeouts = spec.get("timeouts")
    if not isinstance(timeouts, dict):
        timeouts = {}
    problems += unknown(timeouts, {"readiness", "request", "responseHeader"}, "spec.timeouts")
    for key in ("readiness", "request", "responseHeader"):
        value = timeouts.get(key)
        if value is None:
            if key != "responseHeader":
                problems.append(
                    "spec.timeouts.%s: unset (the add-on then holds a cold-start request with no limit): set it" % key
                )
            continue
        if not isinstance(value, str) or not GO_DURATION.match(value):
            problems.append("spec.timeouts.%s: %r is not a duration (e.g. 90s, 10m)" % (key, value))
        elif key != "responseHeader" and go_seconds(value) == 0:
            problems.append("spec.timeouts.%s: 0 disables the limit: set one sized for a cold start" % key)
    if timeouts.get("readiness") and timeouts.get("request") and GO_DURATION.match(str(timeouts["readiness"])) \
            and GO_DURATION.match(str(timeouts["request"])) and go_seconds(timeouts["request"]) < go_seconds(timeouts["readiness"]):
        problems.append("spec.timeouts.request: shorter than readiness, so a cold start always times out")
    cold = spec.get("coldStart")
    if cold is not None and not isinstance(cold, dict):
        problems.append("spec.coldStart: not an object")
    elif cold is not None:
        problems += unknown(cold, {"fallback", "placeholder"}, "spec.coldStart")
        if not ({"fallback", "placeholder"} & set(cold)):
            problems.append("spec.coldStart: at least one of fallback or placeholder must be set")
    return problems


# Kinds with no @kubernetes-models package, checked field by field here.
FIELD_CHECKED = {
    ("http.keda.sh", "v1beta1", "InterceptorRoute"),
    ("http.keda.sh", "v1alpha1", "HTTPScaledObject"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", action="append", default=[], help="directory of CRD yaml")
    parser.add_argument("--kube-version", default="1.33.0")
    parser.add_argument("--models", help="node_modules with the @kubernetes-models packages")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    crds = {}
    for directory in args.crds:
        crds.update(load_crds(directory))
    failures = 0
    counts = {"built-in": 0, "custom": 0}
    docs = []
    for name in args.files:
        for doc in read_docs(name):
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                print("%s: not a Kubernetes object" % name)
                failures += 1
                continue
            docs.append((name, doc))
    modeled = [i for i, (_, d) in enumerate(docs) if d["apiVersion"] in MODEL_API_VERSIONS]
    model_problems = {}
    if args.models and modeled:
        found = check_models([docs[i][1] for i in modeled], args.models)
        model_problems = {modeled[k]: v for k, v in found.items()}
    for i, (name, doc) in enumerate(docs):
        group, _, version = doc["apiVersion"].rpartition("/")
        key = (group, version, doc["kind"])
        modeled_here = args.models and doc["apiVersion"] in MODEL_API_VERSIONS
        if key in crds or modeled_here or key in FIELD_CHECKED:
            problems = check_custom(doc, *crds[key]) if key in crds else []
            problems += model_problems.get(i, [])
            if key == ("http.keda.sh", "v1beta1", "InterceptorRoute"):
                problems += check_interceptor_route(doc)
            if key == ("http.keda.sh", "v1alpha1", "HTTPScaledObject"):
                problems.append("deprecated since HTTP add-on v0.14: write an InterceptorRoute")
            counts["custom"] += 1
        else:
            problems, known = check_builtin(doc, args.kube_version)
            counts["built-in"] += 1
            if not known:
                problems = ["no schema for %s (not built-in, no CRD given)" % doc["apiVersion"]]
        for p in problems:
            print("%s: %s: %s" % (name, describe(doc), p))
        failures += len(problems)
    if failures:
        print("%d problem(s)" % failures)
        return 1
    print(
        "valid for Kubernetes %s: %d built-in and %d custom object(s)"
        % (args.kube_version, counts["built-in"], counts["custom"])
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

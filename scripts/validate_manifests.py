"""Offline validation of Kubernetes manifests (run by scripts/validate-manifests.sh).

    python validate_manifests.py --crds DIR [--kube-version 1.33.0] FILE...   (FILE may be -)

Built-in kinds are checked with kubernetes-validate in strict mode (unknown fields are errors)
against the given Kubernetes version. kubernetes-validate knows no custom kinds, so every object
whose group/version/kind is defined by a CRD in --crds is checked against that CRD's
openAPIV3Schema with jsonschema, strictly too (unknown fields are errors, as with
`kubectl apply --validate=strict`). An object of a kind neither knows is an error, never a skip.
Prints one line per problem and exits 1 if there is any.
"""

import argparse
import copy
import pathlib
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crds", action="append", default=[], help="directory of CRD yaml")
    parser.add_argument("--kube-version", default="1.33.0")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    crds = {}
    for directory in args.crds:
        crds.update(load_crds(directory))
    failures = 0
    counts = {"built-in": 0, "custom": 0}
    for name in args.files:
        for doc in read_docs(name):
            if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
                print("%s: not a Kubernetes object" % name)
                failures += 1
                continue
            group, _, version = doc["apiVersion"].rpartition("/")
            key = (group, version, doc["kind"])
            if key in crds:
                problems = check_custom(doc, *crds[key])
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

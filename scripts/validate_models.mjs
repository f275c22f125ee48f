// Validates third-party objects offline with the models the @kubernetes-models npm packages
// generate from the upstream CRDs (installed by scripts/test-env.sh): KEDA (keda.sh),
// Karpenter (karpenter.sh, karpenter.k8s.aws) and the Prometheus Operator
// (monitoring.coreos.com). Run by scripts/validate_manifests.py.
//
//   node validate_models.mjs NODE_MODULES < objects.json
//
// stdin: a JSON array of objects. Prints one line per object, "ok KIND/NAME" or
// "invalid KIND/NAME: why", and exits 1 if any object is invalid or of a kind no package knows.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node validate_models.mjs NODE_MODULES < objects.json");
  process.exit(2);
}
// apiVersion -> the package directory holding its models.
const packages = {
  "keda.sh/v1alpha1": "@kubernetes-models/keda/keda.sh/v1alpha1",
  "karpenter.sh/v1": "@kubernetes-models/karpenter/karpenter.sh/v1",
  "karpenter.k8s.aws/v1": "@kubernetes-models/karpenter/karpenter.k8s.aws/v1",
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};
const loaded = {};
async function models(apiVersion) {
  const dir = packages[apiVersion];
  if (!dir) return undefined;
  loaded[apiVersion] ??= await import(pathToFileURL(join(modules, dir, "index.js")).href);
  return loaded[apiVersion];
}

// One line for a validation failure: each ajv error's path and message (and the allowed
// values of an enum).
function why(e) {
  const errors = e?.errors ?? e?.details;
  if (!Array.isArray(errors) || errors.length === 0) {
    return String(e?.message ?? e).replace(/\s+/g, " ");
  }
  return errors
    .map((x) => {
      const allowed = x.params?.allowedValues ? ` (${x.params.allowedValues.join(", ")})` : "";
      return `${x.instancePath || "(root)"} ${x.message ?? x.keyword}${allowed}`;
    })
    .join("; ");
}

const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const obj of objects) {
  const name = `${obj?.kind}/${obj?.metadata?.name}`;
  const Model = (await models(obj?.apiVersion))?.[obj?.kind];
  if (typeof Model !== "function") {
    console.log(`invalid ${name}: ${obj?.apiVersion} ${obj?.kind} is not a kind these packages know`);
    failed = true;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`invalid ${name}: ${why(e)}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);

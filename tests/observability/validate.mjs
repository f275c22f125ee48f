// Validates Prometheus Operator objects offline with the models of
// @kubernetes-models/prometheus-operator (installed by scripts/test-env.sh).
//
//   node validate.mjs NODE_MODULES < objects.json
//
// stdin: a JSON array of objects. Prints one line per object ("ok KIND/NAME" or
// "invalid KIND/NAME: why") and exits 1 if any object is invalid or of a kind it does not know.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node validate.mjs NODE_MODULES < objects.json");
  process.exit(2);
}
const v1 = await import(
  pathToFileURL(join(modules, "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js")).href
);
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const obj of objects) {
  const name = `${obj?.kind}/${obj?.metadata?.name}`;
  const Model = obj?.apiVersion === "monitoring.coreos.com/v1" ? v1[obj.kind] : undefined;
  if (typeof Model !== "function") {
    console.log(`invalid ${name}: not a monitoring.coreos.com/v1 kind this package knows`);
    failed = true;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok ${name}`);
  } catch (e) {
    console.log(`invalid ${name}: ${String(e?.message ?? e).replace(/\s+/g, " ")}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);

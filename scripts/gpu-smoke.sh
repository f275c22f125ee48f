#!/usr/bin/env bash
# GPU smoke test (opt-in, needs a real NVIDIA GPU and driver; never run in CI): compares
# `coldstart-agent gpu-check -o json` with nvidia-smi field by field and prints OK/MISMATCH per
# device and field. Exit 0 when everything matches, 1 on a mismatch, 2 when a tool is missing.
#
#   scripts/gpu-smoke.sh [path/to/coldstart-agent]     (default: target/debug/coldstart-agent)
set -euo pipefail
cd "$(dirname "$0")/.."
AGENT="${1:-target/debug/coldstart-agent}"
for tool in nvidia-smi python3 "$AGENT"; do
  command -v "$tool" >/dev/null || { echo "gpu-smoke: $tool missing" >&2; exit 2; }
done
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version,pci.bus_id,persistence_mode,mig.mode.current,compute_cap \
  --format=csv,noheader,nounits > "$work/smi.csv"
# gpu-check exits 1 when unhealthy; the comparison is about the inventory, so keep going.
"$AGENT" --log-format text gpu-check -o json --xid-wait 0 > "$work/agent.json" || true
python3 - "$work/smi.csv" "$work/agent.json" <<'PY'
import csv, json, sys

smi = [[c.strip() for c in row] for row in csv.reader(open(sys.argv[1])) if row]
doc = json.load(open(sys.argv[2]))
devices = {d["index"]: d for d in doc.get("devices", [])}

def norm_bus(s):
    # nvidia-smi prints 00000000:18:00.0; NVML may use another case or domain width.
    dom, rest = s.lower().split(":", 1)
    return f"{int(dom, 16):08x}:{rest}"

def onoff(v):
    return {"enabled": True, "disabled": False, "[n/a]": None, "n/a": None}.get(v.lower(), v)

bad = 0
print(f"{'gpu':<4} {'field':<20} {'nvidia-smi':<42} {'gpu-check':<42} result")
if len(smi) != len(devices):
    print(f"{'-':<4} {'device count':<20} {len(smi):<42} {len(devices):<42} MISMATCH")
    bad += 1
for index, uuid, name, mem_mib, driver, bus, persistence, mig, cc in smi:
    d = devices.get(int(index), {})
    mem = d.get("memoryTotalBytes")
    rows = [
        ("uuid", uuid, d.get("uuid")),
        ("name", name, d.get("name")),
        # nvidia-smi rounds down to MiB.
        ("memory.total MiB", int(mem_mib), None if mem is None else mem // (1 << 20)),
        ("driver_version", driver, doc.get("driverVersion")),
        ("pci.bus_id", norm_bus(bus), norm_bus(d["pciBusId"]) if d.get("pciBusId") else None),
        ("persistence_mode", onoff(persistence), d.get("persistenceMode")),
        ("mig.mode.current", onoff(mig), d.get("migEnabled")),
        ("compute_cap", cc, d.get("computeCapability")),
    ]
    for field, want, got in rows:
        ok = want == got
        bad += not ok
        print(f"{index:<4} {field:<20} {str(want):<42} {str(got):<42} {'OK' if ok else 'MISMATCH'}")
print(f"gpu-check verdict: healthy={doc.get('healthy')} reason={doc.get('reason')} ({doc.get('message')})")
sys.exit(1 if bad else 0)
PY

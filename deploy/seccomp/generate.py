#!/usr/bin/env python3
"""Writes bulkhead-agent.json: the container engine's default seccomp profile (containers/common's,
the one CRI-O and podman apply as RuntimeDefault; Apache-2.0) with bpf and perf_event_open also
allowed to a process holding CAP_BPF and CAP_PERFMON respectively, as containerd's and Docker's
defaults allow them. Nothing else changes.
Usage: generate.py [/usr/share/containers/seccomp.json] > bulkhead-agent.json"""
import json
import sys

GATED = {"bpf": "CAP_BPF", "perf_event_open": "CAP_PERFMON"}

src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
with open(src) as f:
    profile = json.load(f)
for rule in profile["syscalls"]:
    # The engine's unconditional refusal without CAP_SYS_ADMIN would shadow the rules below.
    if rule["action"] == "SCMP_ACT_ERRNO" and rule.get("excludes", {}).get("caps") == ["CAP_SYS_ADMIN"]:
        rule["names"] = [n for n in rule["names"] if n not in GATED]
for name, cap in GATED.items():
    profile["syscalls"].append(
        {"names": [name], "action": "SCMP_ACT_ALLOW", "args": [], "comment": f"Bulkhead: {name} with {cap}",
         "includes": {"caps": [cap]}, "excludes": {}})
json.dump(profile, sys.stdout, indent=1)
print()

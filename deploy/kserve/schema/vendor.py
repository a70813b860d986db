#!/usr/bin/env python3
"""Writes the vendored KServe schemas that tests/kserve_schema.rs checks deploy/kserve/
against: the `openAPIV3Schema` of each CRD version, descriptions dropped (they are most
of the bytes and validate nothing), as compact JSON.

Usage: vendor.py KSERVE_CHECKOUT [COMMIT]
  KSERVE_CHECKOUT: a clone of https://github.com/kserve/kserve (Apache-2.0)
Reads config/crd/full/serving.kserve.io_{inferenceservices,servingruntimes}.yaml and writes
inferenceservice.v1beta1.json and servingruntime.v1alpha1.json next to this script.
Needs PyYAML (Debian: python3-yaml).
"""
import json
import pathlib
import sys

import yaml

HERE = pathlib.Path(__file__).resolve().parent
CRDS = {
    "serving.kserve.io_inferenceservices.yaml": ("v1beta1", "inferenceservice.v1beta1.json"),
    "serving.kserve.io_servingruntimes.yaml": ("v1alpha1", "servingruntime.v1alpha1.json"),
}


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    checkout = pathlib.Path(sys.argv[1])
    for crd_file, (version, out) in CRDS.items():
        crd = yaml.safe_load((checkout / "config/crd/full" / crd_file).read_text())
        schema = next(v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]
                      if v["name"] == version)
        vendored = {
            "apiVersion": f"{crd['spec']['group']}/{version}",
            "kind": crd["spec"]["names"]["kind"],
            "openAPIV3Schema": strip_descriptions(schema),
        }
        (HERE / out).write_text(json.dumps(vendored, separators=(",", ":"), sort_keys=True) + "\n")
        print(f"wrote {out} ({(HERE / out).stat().st_size} bytes)")


if __name__ == "__main__":
    main()

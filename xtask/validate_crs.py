"""Validates custom resources against the openAPIV3Schema of their CRD (the structural part the
API server enforces: types, enums, patterns, bounds, required fields; CEL rules are checked by the
agent's unit tests). Usage: validate_crs.py CRDS.yaml OBJECTS.yaml...  Objects of kinds the CRDs
do not define are skipped. Runs in the venv of scripts/bootstrap.sh (jsonschema comes with
kubernetes-validate)."""
import sys

import jsonschema
import yaml


def main() -> int:
    schemas = {}
    with open(sys.argv[1]) as f:
        for crd in yaml.safe_load_all(f):
            if not crd:
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for v in crd["spec"]["versions"]:
                schemas[(f"{group}/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    errors = checked = 0
    for path in sys.argv[2:]:
        with open(path) as f:
            for obj in yaml.safe_load_all(f):
                if not obj:
                    continue
                schema = schemas.get((obj.get("apiVersion"), obj.get("kind")))
                if schema is None:
                    continue
                checked += 1
                name = f"{obj['kind']}/{obj.get('metadata', {}).get('name')}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(obj):
                    where = ".".join(str(p) for p in e.absolute_path)
                    print(f"{path}: {name}: {where}: {e.message}")
                    errors += 1
    print(f"{checked} custom resource(s) checked against their CRD schema, {errors} error(s)")
    return 1 if errors or not checked else 0


if __name__ == "__main__":
    sys.exit(main())

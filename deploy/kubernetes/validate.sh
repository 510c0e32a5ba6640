#!/usr/bin/env bash
# Validates every manifest in deploy/kubernetes/ offline, exiting non-zero on any error:
#
#   - the built-in kinds (ConfigMap, Secret, CronJob, Deployment, Service) with
#     `kubernetes-validate --strict --kubernetes-version 1.31.0`: the Kubernetes 1.31 OpenAPI
#     schemas it ships, unknown fields rejected. kubernetes-validate only warns (and exits 0)
#     on a kind it has no schema for, so any such warning fails here, but for the CRD below;
#   - the ServiceMonitor (a prometheus-operator CRD, which kubernetes-validate does not know)
#     against cloudcoil's typed models of the prometheus-operator v0.80.1 CRDs: types,
#     patterns, enums and required fields, and every field it does not know reported;
#   - kustomization.yaml: each resource it names exists, and each manifest here but the
#     examples (secret.example.yaml, cronjob-sharded.yaml) is named.
#
# Usage: deploy/kubernetes/validate.sh [KUBERNETES_VERSION]   (default 1.31.0)
# The tools live in a virtualenv of its own, target/k8s-venv/, made on the first run (PyPI);
# PYTHON names the interpreter to make it with (default python3, 3.10 or later).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
k8s_version=${1:-1.31.0}
venv=$repo/target/k8s-venv
# Pinned: kubernetes-validate 1.37.0 ships the schemas of Kubernetes 1.25 to 1.37.
requirements=(
  kubernetes-validate==1.37.0
  cloudcoil==0.6.0
  cloudcoil-models-prometheus-operator==0.80.1.0
)

if [ "$(cat "$venv/.requirements" 2>/dev/null)" != "${requirements[*]}" ]; then
  echo "installing ${requirements[*]} into ${venv#"$repo"/}"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv" ||
    { echo "validate.sh: ${PYTHON:-python3} -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}" ||
    { echo "validate.sh: pip could not install ${requirements[*]}" >&2; exit 1; }
  echo "${requirements[*]}" > "$venv/.requirements"
fi

cd "$here"
manifests=()
for f in *.yaml; do
  [ "$f" = kustomization.yaml ] || manifests+=("$f")
done
failed=0

echo "== kubernetes-validate $("$venv/bin/kubernetes-validate" --version) --strict --kubernetes-version $k8s_version"
set +e
out=$("$venv/bin/kubernetes-validate" --strict --kubernetes-version "$k8s_version" "${manifests[@]}" 2>&1)
rc=$?
set -e
echo "$out"
[ "$rc" -eq 0 ] || failed=1
# A kind without a schema is only a warning there: fail on every one but the ServiceMonitor,
# which is checked next.
if echo "$out" | grep -v 'kind ServiceMonitor with api version monitoring.coreos.com/v1' | grep -qE '^(WARN|ERROR|FATAL)'; then
  failed=1
fi

echo "== custom resources (prometheus-operator v0.80.1 models) and kustomization.yaml"
"$venv/bin/python" - "${manifests[@]}" <<'EOF' || failed=1
import sys

import yaml
from pydantic import ValidationError
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1

CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): monitoring_v1.ServiceMonitor}


def unknown_fields(given, kept, path=""):
    """Fields of `given` that validation dropped (pydantic ignores what it does not know)."""
    if isinstance(given, dict):
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if not isinstance(kept, dict) or key not in kept:
                yield where
            else:
                yield from unknown_fields(value, kept[key], where)
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (g, k) in enumerate(zip(given, kept)):
            yield from unknown_fields(g, k, f"{path}[{i}]")


errors = 0
for filename in sys.argv[1:]:
    with open(filename) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        model = CRDS.get((doc.get("apiVersion"), doc.get("kind")))
        if model is None:
            continue
        name = f"{doc['kind'].lower()}/{doc.get('metadata', {}).get('name')}"
        try:
            obj = model.model_validate(doc)
        except ValidationError as e:
            print(f"ERROR {filename} did not validate for resource {name}: {e}")
            errors += 1
            continue
        kept = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
        bad = list(unknown_fields(doc, kept))
        if bad:
            print(f"ERROR {filename} resource {name}: unknown fields {', '.join(bad)}")
            errors += 1
        else:
            print(f"INFO {filename} passed for resource {name} against prometheus-operator v0.80.1")

with open("kustomization.yaml") as f:
    kustomization = yaml.safe_load(f)
listed = kustomization.get("resources", [])
for resource in listed:
    try:
        open(resource).close()
    except OSError as e:
        print(f"ERROR kustomization.yaml names {resource}, which cannot be read: {e}")
        errors += 1
for filename in sys.argv[1:]:
    # Examples, not resources: the Secret's values are placeholders, and the sharded
    # CronJob replaces cronjob.yaml where it is used.
    if filename not in listed and filename not in ("secret.example.yaml", "cronjob-sharded.yaml"):
        print(f"ERROR {filename} is not in kustomization.yaml's resources")
        errors += 1
if not errors:
    print(f"INFO kustomization.yaml names {len(listed)} resources, all present")
sys.exit(1 if errors else 0)
EOF

if [ "$failed" -ne 0 ]; then
  echo "validate.sh: FAILED (see the ERROR and WARN lines above)" >&2
  exit 1
fi
echo "validate.sh: every manifest is valid for Kubernetes $k8s_version"

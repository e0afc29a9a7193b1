#!/usr/bin/env bash
# Validate the Kubernetes manifests in this directory (or the .yaml/.yml
# files or directories given as arguments): every file parses as YAML, holds
# at least one document, and every document is a resource with string
# apiVersion, kind and metadata.name; no two resources share kind/name; a
# Deployment's or StatefulSet's selector matches its pod template's labels
# and every container has a name and an image.
#
# Needs python3 with PyYAML: Debian package `python3-yaml`
# (`apt-get install -y python3-yaml`). Installs nothing itself.
# Exits 0 when every file is valid, 1 when one is not, 2 when PyYAML is
# missing. Works from any directory.
set -euo pipefail

here="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
if (($# == 0)); then
  set -- "$here"
fi

if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "error: python3 module yaml (PyYAML) missing: apt-get install -y python3-yaml" >&2
  exit 2
fi

exec python3 - "$@" <<'PY'
import pathlib
import sys

import yaml

errors = []
seen = {}


def err(where, msg):
    errors.append(f"{where}: {msg}")


def files(args):
    for a in args:
        p = pathlib.Path(a)
        if p.is_dir():
            found = sorted(list(p.glob("*.yaml")) + list(p.glob("*.yml")))
            if not found:
                err(p, "no .yaml/.yml files")
            yield from found
        else:
            yield p


def check_workload(where, doc):
    spec = doc.get("spec") or {}
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    match = (spec.get("selector") or {}).get("matchLabels") or {}
    if not match:
        err(where, "spec.selector.matchLabels is empty")
    for k, v in match.items():
        if labels.get(k) != v:
            err(where, f"selector {k}={v} does not match the pod template's labels {labels}")
    pod = tmpl.get("spec") or {}
    containers = pod.get("containers") or []
    if not containers:
        err(where, "no containers")
    for c in containers + (pod.get("initContainers") or []):
        if not isinstance(c, dict) or not c.get("name") or not c.get("image"):
            err(where, f"container without name or image: {c!r:.80}")


n_docs = 0
for path in files(sys.argv[1:]):
    try:
        docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        err(path, f"does not parse: {e}")
        continue
    docs = [d for d in docs if d is not None]
    if not docs:
        err(path, "no YAML documents")
    for i, doc in enumerate(docs, 1):
        where = f"{path} (document {i})"
        if not isinstance(doc, dict):
            err(where, f"not a mapping but {type(doc).__name__}")
            continue
        for key in ("apiVersion", "kind"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                err(where, f"{key} missing or not a string")
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name:
            err(where, "metadata.name missing or not a string")
        kind = doc.get("kind")
        if isinstance(kind, str) and isinstance(name, str):
            where = f"{path}: {kind}/{name}"
            key = (kind, name)
            if key in seen:
                err(where, f"also defined in {seen[key]}")
            seen[key] = path
            if kind in ("Deployment", "StatefulSet", "DaemonSet"):
                check_workload(where, doc)
        n_docs += 1

for e in errors:
    print(f"error: {e}", file=sys.stderr)
if errors:
    print(f"kubernetes manifests: {len(errors)} error(s)", file=sys.stderr)
    sys.exit(1)
print(f"kubernetes manifests: {n_docs} resources OK")
PY

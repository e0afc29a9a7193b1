#!/usr/bin/env python3
"""Check walship-dashboard.json (and the metric names used by the alert rules).

* the dashboard is well-formed JSON with the expected structure (datasource
  template variable, `instance`/`receiver` variables, Executive/On-call/Debug
  rows, unique panel ids, every query on `${DS_PROMETHEUS}`);
* every PromQL expression in it parses: Grafana variables are replaced by
  placeholders, the expressions are written as recording rules into a
  temporary file and `promtool check rules` is run on it;
* every `walship_*` metric the dashboard and the alert rules use is one that
  docs/monitoring.md (or the semi-sync section of ARCHITECTURE) defines.

Usage: check_dashboard.py [DASHBOARD.json] [--rules ALERTS.yml]
Defaults to the files next to this script. Needs python3 (stdlib only) and
promtool on PATH (or $PROMTOOL). Exit status 0 when everything passes.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, "..", "..", "docs", "monitoring.md")

# Metrics that are not (yet) in docs/monitoring.md's tables:
#  * docs say "likewise `..._flush_...`, `..._apply_...`" for these;
#  * the semi-sync metrics are described in ARCHITECTURE.md.
EXTRA_METRICS = {
    "walship_receiver_flush_lag_current_seconds",
    "walship_receiver_apply_lag_current_seconds",
    "walship_flush_lag_seconds",
    "walship_apply_lag_seconds",
    "walship_sync_state",
    "walship_sync_fallbacks_total",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
REQUIRED_ROWS = ["Executive", "On-call", "Debug"]
REQUIRED_VARS = ["DS_PROMETHEUS", "instance", "receiver"]
DS_UID = "${DS_PROMETHEUS}"

# Grafana's built-in variables -> something PromQL accepts.
BUILTINS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}


def substitute(expr):
    """Replace Grafana variables: built-ins by durations, others by `.*`
    (this dashboard only uses its own variables inside =~ matchers)."""

    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        name = name.split(":")[0]  # ${var:format}
        return BUILTINS.get(name, ".*")

    return re.sub(r"\$\{([^}]+)\}|\[\[([^\]]+)\]\]|\$(\w+)", repl, expr)


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def brace_expand(token):
    m = re.search(r"\{([^{}]*,[^{}]*)\}", token)
    if not m:
        return [token]
    out = []
    for alt in m.group(1).split(","):
        out += brace_expand(token[: m.start()] + alt + token[m.end():])
    return out


def known_metrics():
    if not os.path.exists(DOCS):
        return None
    text = open(DOCS, encoding="utf-8").read()
    names = set(EXTRA_METRICS)
    for code in re.findall(r"`([^`]*)`", text):
        for tok in brace_expand(code):
            names.update(re.findall(r"\bwalship_\w+", tok))
    return names


def metric_names(expr):
    # drop string literals (label values, label_replace args) first
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\bwalship_\w+", expr))


def is_known(name, known):
    if name in known:
        return True
    return any(name.endswith(s) and name[: -len(s)] in known for s in HISTOGRAM_SUFFIXES)


def rule_exprs(path):
    """`expr:` values of a Prometheus rules file, without needing PyYAML.
    Handles `expr: inline` and block scalars (`expr: >-` / `|`)."""
    exprs = []
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        i += 1
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest and rest[0] not in "|>":
            exprs.append(rest.strip("'\""))
            continue
        block = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            block.append(lines[i].strip())
            i += 1
        exprs.append(" ".join(block))
    return exprs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dashboard", nargs="?", default=os.path.join(HERE, "walship-dashboard.json"))
    ap.add_argument("--rules", action="append", default=[],
                    help="also check metric names used by this rules file (repeatable)")
    args = ap.parse_args()

    errors = []
    try:
        with open(args.dashboard, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"FAIL: {args.dashboard}: {e}")
        return 1

    # ---- structure
    if not isinstance(dash.get("schemaVersion"), int):
        errors.append("schemaVersion missing")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    for name in REQUIRED_VARS:
        if name not in variables:
            errors.append(f"template variable ${name} missing")
    if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
        errors.append("$DS_PROMETHEUS must be a datasource variable")
    panels = list(walk_panels(dash.get("panels", [])))
    rows = [p.get("title") for p in panels if p.get("type") == "row"]
    if rows != REQUIRED_ROWS:
        errors.append(f"rows are {rows}, expected {REQUIRED_ROWS}")
    ids = [p.get("id") for p in panels]
    dup = {i for i in ids if ids.count(i) > 1}
    if None in ids or dup:
        errors.append(f"panel ids missing or duplicated: {sorted(x for x in dup if x is not None)}")

    # ---- collect expressions
    exprs = []  # (where, expr)
    for p in panels:
        if p.get("type") == "row":
            continue
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if (p.get("datasource") or {}).get("uid") != DS_UID:
            errors.append(f"{where}: datasource is not {DS_UID}")
        targets = p.get("targets", [])
        if not targets:
            errors.append(f"{where}: no queries")
        for t in targets:
            if (t.get("datasource") or {}).get("uid") != DS_UID:
                errors.append(f"{where} ref {t.get('refId')}: datasource is not {DS_UID}")
            if not t.get("expr", "").strip():
                errors.append(f"{where} ref {t.get('refId')}: empty expr")
            else:
                exprs.append((f"{where} ref {t.get('refId')}", t["expr"]))
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
        if m:  # label_values(selector, label): check the selector
            q = m.group(1)
        elif re.fullmatch(r"\s*(label_names|metrics|query_result)\(.*", q, re.S):
            q = re.sub(r"^\s*\w+\((.*)\)\s*$", r"\1", q, flags=re.S)
        if q.strip():
            exprs.append((f"variable ${name}", q))

    # ---- metric names
    known = known_metrics()
    rule_sources = [(f"{os.path.basename(r)} expr", e) for r in args.rules for e in rule_exprs(r)]
    if args.rules and not rule_sources:
        errors.append(f"no expr found in {args.rules}")
    if known is None:
        print(f"warning: {DOCS} not found, skipping the metric name check")
    else:
        for where, e in exprs + rule_sources:
            for name in sorted(metric_names(e)):
                if not is_known(name, known):
                    errors.append(f"{where}: metric {name} is not in docs/monitoring.md")

    # ---- PromQL syntax via promtool
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        errors.append("promtool not found (install the `prometheus` package)")
    else:
        with tempfile.TemporaryDirectory(prefix="walship-dash-") as tmp:
            path = os.path.join(tmp, "dashboard-exprs.rules.yml")
            with open(path, "w", encoding="utf-8") as f:
                f.write("groups:\n  - name: dashboard_exprs\n    rules:\n")
                for n, (_, e) in enumerate(exprs):
                    f.write(f"      - record: dashboard_expr_{n}\n")
                    f.write(f"        expr: {json.dumps(substitute(e))}\n")
            res = subprocess.run([promtool, "check", "rules", path],
                                 capture_output=True, text=True)
            if res.returncode != 0:
                out = (res.stdout + res.stderr).strip()
                errors.append("promtool check rules failed on the dashboard expressions:\n" + out
                              + "\n  index -> panel:\n"
                              + "\n".join(f"    dashboard_expr_{n}: {w}: {substitute(e)}"
                                          for n, (w, e) in enumerate(exprs)))

    if errors:
        for e in errors:
            print(f"FAIL: {e}")
        return 1
    print(f"OK: {os.path.basename(args.dashboard)}: {len(panels)} panels, "
          f"{len(exprs)} PromQL expressions parse (promtool), metric names match docs"
          + (f"; {len(rule_sources)} rule exprs checked" if rule_sources else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())

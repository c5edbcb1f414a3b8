#!/usr/bin/env python3
"""The conformance table of what vigil emits, from the OpenTelemetry semantic conventions.

  python3 conventions/generate.py table --model DIR --version TAG [--commit SHA]
      DIR is the `model/` directory of a checkout of open-telemetry/semantic-conventions at TAG
      (needs PyYAML: Debian's python3-yaml). Reads conventions/vigil.yaml (what vigil emits),
      takes every metric's instrument, unit, attributes and enum values from the conventions'
      YAML, checks vigil's extensions against them (an extension the conventions define, a
      deprecated name, an attribute the conventions do not list for a metric: all errors), and
      writes conventions/semconv-table.json, then METRICS.md from it.

  python3 conventions/generate.py docs [--check]
      METRICS.md from the committed table alone (standard library only); --check exits 1 when
      METRICS.md is not what the table gives (tests/tests/conformance_e2e.rs runs it).

The table is what tests/tests/conformance_e2e.rs checks a real run's output against: an
unknown metric, attribute or enum value fails it.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TABLE = HERE / "semconv-table.json"
DOCS = REPO / "METRICS.md"
VIGIL = HERE / "vigil.yaml"


def fail(msg):
    print(f"generate.py: {msg}", file=sys.stderr)
    sys.exit(1)


def load_model(model_dir):
    """(metrics by name, attributes by id) of every YAML file under model_dir."""
    import yaml

    metrics, attrs = {}, {}
    for f in sorted(Path(model_dir).rglob("*.yaml")):
        doc = yaml.safe_load(f.read_text()) or {}
        # Newer registry files list attributes at the top level with `key:`.
        for a in doc.get("attributes", []) or []:
            if "key" in a:
                attrs[a["key"]] = a
        for g in doc.get("groups", []) or []:
            if g.get("type") == "metric" and g.get("metric_name"):
                metrics[g["metric_name"]] = g
            for a in g.get("attributes", []) or []:
                if "id" in a:
                    attrs[a["id"]] = a
    return metrics, attrs


def attr_type(a):
    t = a.get("type")
    if isinstance(t, dict):
        return "string", [m["value"] for m in t.get("members", []) if not m.get("deprecated")]
    return t, None


def semconv_attribute(key, attrs):
    a = attrs.get(key)
    if a is None:
        fail(f"attribute {key} is not in the conventions (declare it under attributes:)")
    if a.get("deprecated"):
        fail(f"attribute {key} is deprecated in the conventions: {a['deprecated']}")
    t, values = attr_type(a)
    out = {"source": "semconv", "type": t, "brief": " ".join(str(a.get("brief", "")).split())}
    if values is not None:
        out["values"] = values
    return out


def metric_entry(name, sets, g):
    if g.get("deprecated"):
        fail(f"metric {name} is deprecated in the conventions: {g['deprecated']}")
    refs = {}
    for r in g.get("attributes", []) or []:
        key = r.get("ref") or r.get("id")
        level = r.get("requirement_level", "recommended")
        if isinstance(level, dict):
            level = next(iter(level))
        refs[key] = level
    for a in sets:
        if a not in refs:
            fail(f"{name}: the conventions do not list attribute {a} for it (they list {sorted(refs)})")
    return {
        "source": "semconv",
        "instrument": g["instrument"],
        "unit": g["unit"],
        "stability": g.get("stability", ""),
        "brief": " ".join(str(g.get("brief", "")).split()),
        "attributes": {a: refs[a] for a in sets},
        "required": sorted(a for a, lvl in refs.items() if lvl == "required"),
    }


def build_table(model, version, commit):
    import yaml

    vigil = yaml.safe_load(VIGIL.read_text())
    metrics, attrs = load_model(model)
    table = {
        "semconv": {"version": version, "commit": commit, "model": "open-telemetry/semantic-conventions model/"},
        "generated_by": "conventions/generate.py table (from conventions/vigil.yaml)",
        "metrics": {},
        "attributes": {},
        "resource_attributes": vigil["resource_attributes"],
        "open_values": vigil.get("open_values", {}),
    }
    used = set(vigil["resource_attributes"])
    for name, sets in vigil["metrics"].items():
        if name not in metrics:
            fail(f"metric {name} is not in the conventions {version} (move it to extensions:)")
        table["metrics"][name] = metric_entry(name, sets, metrics[name])
        used.update(sets)
    for name, e in vigil["extensions"].items():
        if name in metrics and not metrics[name].get("deprecated"):
            fail(f"extension {name} is defined by the conventions: list it under metrics:")
        if e["instrument"] not in ("counter", "updowncounter", "gauge"):
            fail(f"{name}: unknown instrument {e['instrument']}")
        table["metrics"][name] = {
            "source": e["source"],
            "instrument": e["instrument"],
            "unit": e["unit"],
            "stability": "vigil",
            "brief": e["brief"],
            "attributes": {a: "recommended" for a in e.get("attributes", [])},
            "required": [],
        }
        used.update(e.get("attributes", []))
    own = vigil.get("attributes", {})
    for key in sorted(used):
        if key in own:
            if key in attrs and not attrs[key].get("deprecated"):
                fail(f"attribute {key} is defined by the conventions: drop it from attributes:")
            table["attributes"][key] = {k: v for k, v in own[key].items()}
        else:
            table["attributes"][key] = semconv_attribute(key, attrs)
    for key in table["open_values"]:
        if key not in table["attributes"]:
            fail(f"open_values: {key} is not an attribute vigil sets")
    TABLE.write_text(json.dumps(table, indent=1, sort_keys=True, ensure_ascii=False) + "\n")


def cell(s):
    return str(s).replace("|", "\\|")


def render_docs(table):
    sc = table["semconv"]
    out = [
        "# Metrics vigil emits",
        "",
        "GENERATED by `python3 conventions/generate.py docs` from `conventions/semconv-table.json`,",
        f"the conformance table made from the OpenTelemetry semantic conventions {sc['version']}",
        f"(commit {sc['commit']}) and `conventions/vigil.yaml`. Edit those, not this file.",
        "`tests/tests/conformance_e2e.rs` checks a real run's output against the same table.",
        "",
        "Instrument → OTLP: counter = cumulative monotonic Sum, updowncounter = cumulative",
        "non-monotonic Sum, gauge = Gauge. Source `semconv`: defined by the conventions; anything",
        "else is named where the conventions have nothing, with the reason.",
        "",
    ]
    groups = {}
    for name, m in sorted(table["metrics"].items()):
        groups.setdefault(name.split(".")[0], []).append((name, m))
    for prefix, items in groups.items():
        out += [f"## {prefix}.*", "", "| metric | instrument | unit | attributes | source | description |", "|---|---|---|---|---|---|"]
        for name, m in items:
            attrs = ", ".join(f"`{a}`" for a in m["attributes"]) or "–"
            out.append(
                f"| `{name}` | {m['instrument']} | `{cell(m['unit'])}` | {attrs} | {cell(m['source'])} | {cell(m['brief'])} |"
            )
        out.append("")
    out += ["## Attributes", "", "| attribute | type | values | source | description |", "|---|---|---|---|---|"]
    for key, a in sorted(table["attributes"].items()):
        vals = ", ".join(f"`{v}`" for v in a.get("values", [])) or "–"
        if key in table["open_values"]:
            vals += " (open: " + cell(table["open_values"][key]) + ")"
        out.append(f"| `{key}` | {a['type']} | {vals} | {cell(a['source'])} | {cell(a.get('brief', ''))} |")
    out += ["", "## Resource attributes", "", ", ".join(f"`{k}`" for k in table["resource_attributes"]), ""]
    return "\n".join(out)


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "table":
        args = dict(zip(argv[1::2], argv[2::2]))
        if "--model" not in args or "--version" not in args:
            fail("table needs --model DIR --version TAG")
        build_table(args["--model"], args["--version"], args.get("--commit", ""))
        DOCS.write_text(render_docs(json.loads(TABLE.read_text())))
        return 0
    if argv[0] == "docs":
        text = render_docs(json.loads(TABLE.read_text()))
        if "--check" in argv:
            if not DOCS.exists() or DOCS.read_text() != text:
                print("METRICS.md is out of date: python3 conventions/generate.py docs", file=sys.stderr)
                return 1
            return 0
        DOCS.write_text(text)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

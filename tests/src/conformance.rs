//! The conformance table (`conventions/semconv-table.json`, generated from the OpenTelemetry
//! semantic conventions by `conventions/generate.py`) and the check of one JSON line of the
//! agent's output against it: metric name, instrument (kind and monotonicity), unit, every data
//! point attribute (allowed for that metric, right type, a known enum value), the required ones
//! present, and every resource attribute (known, right type and value).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

pub fn table_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conventions/semconv-table.json")
}

pub struct Table {
    pub raw: Value,
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "int" => v.is_i64() || v.is_u64(),
        "double" => v.is_number(),
        "boolean" => v.is_boolean(),
        "string[]" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
        _ => false,
    }
}

impl Table {
    pub fn load() -> Table {
        let text = std::fs::read_to_string(table_path()).expect("conventions/semconv-table.json");
        Table {
            raw: serde_json::from_str(&text).expect("table is JSON"),
        }
    }

    pub fn version(&self) -> &str {
        self.raw["semconv"]["version"].as_str().unwrap_or("")
    }

    pub fn metric_names(&self) -> Vec<String> {
        self.raw["metrics"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// One attribute value against the table's definition of `key`.
    pub fn check_attribute(&self, key: &str, v: &Value) -> Result<(), String> {
        let def = &self.raw["attributes"][key];
        if def.is_null() {
            return Err(format!("unknown attribute {key}"));
        }
        let ty = def["type"].as_str().unwrap_or("");
        if !type_ok(ty, v) {
            return Err(format!("{key}: {v} is not of type {ty}"));
        }
        let open = !self.raw["open_values"][key].is_null();
        if let Some(values) = def["values"].as_array()
            && !open
            && !values.contains(v)
        {
            return Err(format!("{key}: value {v} is not one of {values:?}"));
        }
        Ok(())
    }

    /// One metric line of the JSON-lines output.
    pub fn check_metric_line(&self, line: &Value) -> Result<(), String> {
        let name = line["name"].as_str().ok_or("no name")?;
        let m = &self.raw["metrics"][name];
        if m.is_null() {
            return Err(format!("unknown metric {name}"));
        }
        let (kind, mono) = match m["instrument"].as_str() {
            Some("counter") => ("sum", true),
            Some("updowncounter") => ("sum", false),
            _ => ("gauge", false),
        };
        if line["kind"] != kind || line["monotonic"] != mono {
            return Err(format!(
                "{name}: sent as {} monotonic={}, the conventions say {}",
                line["kind"], line["monotonic"], m["instrument"]
            ));
        }
        if line["unit"] != m["unit"] {
            return Err(format!(
                "{name}: unit {} instead of {}",
                line["unit"], m["unit"]
            ));
        }
        let attrs = line["attributes"].as_object().ok_or("no attributes")?;
        for (k, v) in attrs {
            if m["attributes"][k].is_null() {
                return Err(format!(
                    "{name}: attribute {k} is not one of its attributes"
                ));
            }
            self.check_attribute(k, v)
                .map_err(|e| format!("{name}: {e}"))?;
        }
        for r in m["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or("");
            if !attrs.contains_key(r) {
                return Err(format!("{name}: required attribute {r} missing"));
            }
        }
        let allowed = self.raw["resource_attributes"].as_array().ok_or("table")?;
        for (k, v) in line["resource"].as_object().ok_or("no resource")? {
            if !allowed.iter().any(|a| a == k) {
                return Err(format!("{name}: unknown resource attribute {k}"));
            }
            self.check_attribute(k, v)
                .map_err(|e| format!("{name}: resource {e}"))?;
        }
        Ok(())
    }

    /// Every metric line of `lines`: the problems found (at most a few per metric name) and
    /// the names seen.
    pub fn check_lines(&self, lines: &[Value]) -> (Vec<String>, BTreeMap<String, usize>) {
        let mut problems = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for l in lines.iter().filter(|l| l["type"] == "metric") {
            let name = l["name"].as_str().unwrap_or("?").to_string();
            *seen.entry(name).or_default() += 1;
            if let Err(e) = self.check_metric_line(l)
                && problems.len() < 50
                && !problems.contains(&e)
            {
                problems.push(e);
            }
        }
        (problems, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker refuses what the conventions do not allow.
    #[test]
    fn unknown_names_kinds_units_and_values_fail() {
        let t = Table::load();
        let ok = serde_json::json!({"type": "metric", "name": "system.cpu.time", "unit": "s",
            "kind": "sum", "monotonic": true, "value": 1.0,
            "attributes": {"cpu.mode": "iowait", "cpu.logical_number": 0},
            "resource": {"host.name": "h", "service.name": "vigil"}});
        assert_eq!(t.check_metric_line(&ok), Ok(()));
        let bad = |f: &dyn Fn(&mut Value)| {
            let mut v = ok.clone();
            f(&mut v);
            t.check_metric_line(&v).unwrap_err()
        };
        assert!(bad(&|v| v["name"] = "system.cpu.seconds".into()).contains("unknown metric"));
        assert!(bad(&|v| v["kind"] = "gauge".into()).contains("sent as"));
        assert!(bad(&|v| v["monotonic"] = false.into()).contains("sent as"));
        assert!(bad(&|v| v["unit"] = "ms".into()).contains("unit"));
        assert!(bad(&|v| v["attributes"]["cpu.mode"] = "wait".into()).contains("not one of"));
        assert!(bad(&|v| v["attributes"]["cpu.mode"] = 3.into()).contains("type"));
        assert!(bad(&|v| v["attributes"]["state"] = "x".into()).contains("not one of its"));
        assert!(bad(&|v| v["resource"]["process.linux.state"] = "R".into()).contains("resource"));
        let mut sw = serde_json::json!({"type": "metric", "name": "process.context_switches",
            "unit": "{context_switch}", "kind": "sum", "monotonic": true, "value": 1,
            "attributes": {}, "resource": {}});
        assert!(t.check_metric_line(&sw).unwrap_err().contains("required"));
        sw["attributes"]["process.context_switch.type"] = "voluntary".into();
        assert_eq!(t.check_metric_line(&sw), Ok(()));
    }
}

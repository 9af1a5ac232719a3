//! How rows are printed: as the REST API shows them (the same JSON), or a table of the
//! columns that matter, or YAML.

use bootfleet_api::artifacts::BuildState;
use bootfleet_api::proto;
use bootfleet_gateway::grpc::pb;
use serde_json::{Map, Value};

use super::client::Failure;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

impl std::str::FromStr for Output {
    type Err = Failure;
    fn from_str(s: &str) -> Result<Output, Failure> {
        <Output as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| Failure::usage(format!("output {s:?}: must be table, json or yaml")))
    }
}

fn json(row: impl serde::Serialize) -> Value {
    serde_json::to_value(row).unwrap_or(Value::Null)
}

pub fn script(s: proto::Script) -> Value {
    json(bootfleet_api::rest::ScriptRow::from(s))
}

pub fn ssh_key(k: proto::SshKey) -> Value {
    json(bootfleet_api::rest::SshKeyRow::from(k))
}

pub fn distributor(d: proto::Distributor) -> Value {
    json(bootfleet_api::rest::DistributorRow::from(d))
}

pub fn local_node(n: proto::LocalNode) -> Value {
    json(bootfleet_api::rest::LocalNodeRow::from(n))
}

pub fn boot_event(e: proto::BootEvent) -> Value {
    json(bootfleet_api::rest::BootEventRow::from(e))
}

/// A run's event as REST streams it (one NDJSON line).
pub fn run_event(e: &pb::RunEvent) -> Value {
    json(bootfleet_api::actions::RunEvent {
        machine: e.machine.clone(),
        stream: e.stream.clone(),
        line: e.line.clone(),
        exit_code: e.exit_code,
        error: e.error.clone(),
        power_state: e.power_state.clone(),
        run: e.run.clone(),
        machines: (!e.machines.is_empty()).then(|| e.machines.clone()),
        done: e.done,
    })
}

/// A step of a machine's timeline, named as REST's `Timeline` names it.
pub fn timeline_step(s: pb::TimelineStep) -> Value {
    serde_json::json!({
        "bootStartedAt": s.boot_started_at,
        "kind": s.kind,
        "at": s.at,
        "sincePreviousMs": s.since_previous_ms,
        "detail": s.detail.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// An artifact as REST shows it: its build state, its inputs, and (ipxes) `embedded`.
pub fn artifact(a: proto::Artifact) -> Value {
    let mut row = match json(BuildState::from_proto(&a)) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if let Ok(Value::Object(inputs)) = serde_json::from_str::<Value>(&a.inputs_json) {
        row.extend(inputs);
    }
    if let Some(embedded) = a.embedded {
        row.insert("embedded".into(), Value::Bool(embedded));
    }
    Value::Object(row)
}

/// A page of rows as REST shows it (`rows`, `total`, `page`, `pageSize`, `totalPages`).
pub fn page(rows: Vec<Value>, info: Option<pb::PageInfo>) -> Value {
    let info = info.unwrap_or_default();
    serde_json::json!({
        "rows": rows,
        "total": info.total,
        "page": info.page,
        "pageSize": info.page_size,
        "totalPages": info.total_pages,
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One line of a table cell: the first line of a text, cut to a width.
fn short(s: &str) -> String {
    let line = s.lines().next().unwrap_or_default();
    let cut: String = line.chars().take(48).collect();
    if cut.len() < s.len() {
        format!("{cut}…")
    } else {
        cut
    }
}

fn table(rows: &[&Map<String, Value>], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| short(&cell(r.get(*c).unwrap_or(&Value::Null))))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        out.push_str(&line(row));
    }
    out
}

/// Renders `value` (a row, or a page of rows) in `output`; a table shows `columns`.
pub fn render(output: Output, value: &Value, columns: &[&str]) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
        Output::Yaml => serde_yaml_ng::to_string(value).unwrap_or_default(),
        Output::Table => match value.get("rows").and_then(Value::as_array) {
            Some(rows) => {
                let rows: Vec<&Map<String, Value>> =
                    rows.iter().filter_map(Value::as_object).collect();
                let mut out = table(&rows, columns);
                out.push_str(&format!(
                    "page {} of {} ({} in all)\n",
                    value["page"], value["totalPages"], value["total"]
                ));
                out
            }
            None => {
                // One row: every field, a field per line; long texts in full below their name.
                let Some(row) = value.as_object() else {
                    return cell(value) + "\n";
                };
                let width = row.keys().map(String::len).max().unwrap_or(0);
                let mut out = String::new();
                for (k, v) in row {
                    let text = match v {
                        Value::Array(_) | Value::Object(_) => v.to_string(),
                        other => cell(other),
                    };
                    if text.contains('\n') {
                        out.push_str(&format!("{k}:\n"));
                        for l in text.lines() {
                            out.push_str(&format!("  {l}\n"));
                        }
                    } else {
                        out.push_str(&format!("{k:<width$}  {text}\n"));
                    }
                }
                out
            }
        },
    }
}

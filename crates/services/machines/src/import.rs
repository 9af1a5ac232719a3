//! Bulk import: the MOC head node's `machines.txt` (`<mac> <management-ip>` per line) and a YAML
//! nodes file (`<name>: {ranks: [...], ip: ..., mac: ..., <other>: ...}`). Each line or entry
//! lands or is refused on its own; the report says which, by line number.

use std::collections::{BTreeMap, HashMap};

use bootfleet_api::machines::{ImportLine, ImportReport, MachineInput};
use bootfleet_api::{ApiError, ErrorCode};

use crate::Machines;

/// Lines (or entries) one import may have.
pub const MAX_IMPORT_LINES: usize = 10_000;

enum Format {
    MachinesTxt,
    Yaml,
}

fn format_of(content_type: &str) -> Result<Format, ApiError> {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "text/plain" | "" => Ok(Format::MachinesTxt),
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Ok(Format::Yaml),
        other => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "an import is text/plain (machines.txt) or application/yaml (a nodes file), not {other}"
            ),
        )),
    }
}

/// The parsed lines: line number and the machine it describes, or why it cannot be one.
type Parsed = Vec<(u32, Result<MachineInput, String>)>;

fn machines_txt(site: &str, text: &str) -> Parsed {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let number = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [mac, ip] => Ok(MachineInput {
                mac: Some((*mac).to_owned()),
                ip: Some((*ip).to_owned()),
                artifact_id: Some(site.to_owned()),
                ..Default::default()
            }),
            _ => Err(format!(
                "line: expected `<mac> <management-ip>`, found {} field(s)",
                fields.len()
            )),
        };
        out.push((number, parsed));
    }
    out
}

/// The line each top-level key of a YAML mapping starts on.
fn key_lines(text: &str) -> HashMap<String, u32> {
    let mut lines = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let Some(first) = line.chars().next() else {
            continue;
        };
        if first.is_whitespace() || matches!(first, '#' | '-' | '.') {
            continue;
        }
        if let Some((key, _)) = line.split_once(':') {
            let key = key
                .trim()
                .trim_matches(|c| c == '"' || c == '\'')
                .to_owned();
            lines
                .entry(key)
                .or_insert(u32::try_from(i + 1).unwrap_or(u32::MAX));
        }
    }
    lines
}

fn scalar(value: &serde_yaml_ng::Value) -> Option<String> {
    match value {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn names(field: &str, value: &serde_yaml_ng::Value) -> Result<Vec<String>, String> {
    match value {
        serde_yaml_ng::Value::Sequence(items) => items
            .iter()
            .map(|v| scalar(v).ok_or_else(|| format!("{field}: must be a list of names")))
            .collect(),
        v => scalar(v)
            .map(|s| vec![s])
            .ok_or_else(|| format!("{field}: must be a list of names")),
    }
}

fn entry(site: &str, name: &str, value: &serde_yaml_ng::Value) -> Result<MachineInput, String> {
    let serde_yaml_ng::Value::Mapping(map) = value else {
        return Err(format!("{name}: must be a mapping of ranks, ip, mac, ..."));
    };
    let mut input = MachineInput {
        name: Some(name.to_owned()),
        artifact_id: Some(site.to_owned()),
        ..Default::default()
    };
    let mut metadata = BTreeMap::new();
    for (k, v) in map {
        let key = scalar(k).ok_or_else(|| "key: keys must be plain names".to_owned())?;
        let text = || scalar(v).ok_or_else(|| format!("{key}: must be a plain value"));
        match key.as_str() {
            "mac" => input.mac = Some(text()?),
            "ip" => input.ip = Some(text()?),
            "firmware" => input.firmware = Some(text()?),
            "profile" => input.profile = Some(text()?),
            "ranks" => input.ranks = Some(names("ranks", v)?),
            "groups" => input.groups = Some(names("groups", v)?),
            _ => {
                metadata.insert(key.clone(), text()?);
            }
        }
    }
    if input.mac.is_none() {
        return Err("mac: is required".to_owned());
    }
    if !metadata.is_empty() {
        input.metadata = Some(metadata);
    }
    Ok(input)
}

fn yaml(site: &str, text: &str) -> Result<Parsed, ApiError> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
        .map_err(|e| ApiError::invalid("body", format!("not a yaml nodes file: {e}")))?;
    let serde_yaml_ng::Value::Mapping(map) = doc else {
        return Err(ApiError::invalid(
            "body",
            "a yaml nodes file is a mapping of node names",
        ));
    };
    let lines = key_lines(text);
    let mut out = Vec::new();
    for (k, v) in &map {
        let name = scalar(k).unwrap_or_default();
        let line = lines.get(&name).copied().unwrap_or(0);
        out.push((line, entry(site, &name, v)));
    }
    out.sort_by_key(|(line, _)| *line);
    Ok(out)
}

pub(crate) async fn run(
    machines: &Machines,
    site: &str,
    content_type: &str,
    text: &str,
    by: &str,
) -> Result<ImportReport, ApiError> {
    let parsed = match format_of(content_type)? {
        Format::MachinesTxt => machines_txt(site, text),
        Format::Yaml => yaml(site, text)?,
    };
    if parsed.len() > MAX_IMPORT_LINES {
        return Err(ApiError::invalid(
            "body",
            format!("at most {MAX_IMPORT_LINES} machines per import"),
        ));
    }
    let mut report = ImportReport {
        created: 0,
        updated: 0,
        refused: 0,
        lines: Vec::with_capacity(parsed.len()),
    };
    for (line, input) in parsed {
        let mac = input.as_ref().ok().and_then(|i| i.mac.clone());
        let name = input.as_ref().ok().and_then(|i| i.name.clone());
        let outcome = match input {
            Ok(input) => machines.import_one(input, by).await.map_err(|e| e.message),
            Err(reason) => Err(reason),
        };
        report.lines.push(match outcome {
            Ok((rec, created)) => {
                if created {
                    report.created += 1;
                } else {
                    report.updated += 1;
                }
                ImportLine {
                    line,
                    outcome: if created { "created" } else { "updated" }.to_owned(),
                    mac: Some(rec.mac.clone()),
                    name: rec.name.clone(),
                    machine_id: Some(rec.id.clone()),
                    reason: None,
                }
            }
            Err(reason) => {
                report.refused += 1;
                ImportLine {
                    line,
                    outcome: "refused".to_owned(),
                    mac,
                    name,
                    machine_id: None,
                    reason: Some(format!("line {line}: {reason}")),
                }
            }
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_values_are_read_as_written() {
        // A YAML 1.1 reader makes `no` and `on` booleans and an unquoted MAC a base-60 number;
        // an inventory means the text it shows.
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            "node1:\n  mac: 52:54:00:ee:01:01\n  rack: no\n  slot: 4\n  ranks: [0, on]\n",
        )
        .expect("yaml");
        let serde_yaml_ng::Value::Mapping(map) = doc else {
            panic!("a mapping of node names");
        };
        let (name, value) = map.iter().next().expect("node1");
        let input = entry("site", &scalar(name).expect("name"), value).expect("entry");
        assert_eq!(input.mac.as_deref(), Some("52:54:00:ee:01:01"));
        assert_eq!(input.ranks, Some(vec!["0".to_owned(), "on".to_owned()]));
        let metadata = input.metadata.expect("metadata");
        assert_eq!(metadata["rack"], "no");
        assert_eq!(metadata["slot"], "4");
    }
}

//! An Insomnia (v4 export) workspace generated from the OpenAPI document: one folder per tag,
//! one request per operation, bearer auth from the environment's `token`, node-facing reads with
//! `?token={{ _.nodeToken }}`. The committed `insomnia/bootfleet.json` is checked against this
//! by a test, so the workspace follows the routes.

use serde_json::{json, Map, Value};

fn example_body(schema: &str) -> Option<Value> {
    match schema {
        "ScriptInput" => Some(json!({ "text": "#!ipxe\necho hello from bootfleet\nshell" })),
        "SshKeyInput" => Some(json!({
            "text": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2Y7dKzjZ0mXkUo3xw1Vv0bLxq3vZxq8wq0xq6Vv1nU you@example",
            "artifactId": "site-1"
        })),
        "DistributorStatusInput" => Some(json!({ "on": true })),
        _ => None,
    }
}

fn schema_name(reference: &Value) -> Option<&str> {
    reference
        .pointer("/content/application~1json/schema/$ref")?
        .as_str()?
        .rsplit('/')
        .next()
}

/// The Insomnia export for an OpenAPI document (as JSON).
pub fn workspace(openapi: &Value) -> Value {
    let mut resources = vec![
        json!({
            "_id": "wrk_bootfleet",
            "_type": "workspace",
            "name": "Bootfleet",
            "description": "Generated from /api/openapi.json. Set baseUrl, token (admin or user) and nodeToken in the environment; mint tokens with `bootfleet token --role admin|user|node`.",
            "scope": "collection"
        }),
        json!({
            "_id": "env_bootfleet",
            "_type": "environment",
            "parentId": "wrk_bootfleet",
            "name": "Base Environment",
            "data": { "baseUrl": "http://127.0.0.1:8080", "token": "", "nodeToken": "", "id": "" }
        }),
    ];
    let mut folders: Vec<String> = Vec::new();
    let empty = Map::new();
    let paths = openapi["paths"].as_object().unwrap_or(&empty);
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap_or(&empty) {
            let tag = op["tags"][0].as_str().unwrap_or("other").to_owned();
            let folder = format!("fld_{tag}");
            if !folders.contains(&tag) {
                folders.push(tag.clone());
                resources.push(json!({
                    "_id": folder,
                    "_type": "request_group",
                    "parentId": "wrk_bootfleet",
                    "name": tag
                }));
            }
            let node_facing = op["security"]
                .as_array()
                .map(|s| s.iter().any(|r| r.get("nodeToken").is_some()))
                .unwrap_or(false);
            let secured = op.get("security").is_some();
            let url_path = path.replace("{id}", "{{ _.id }}");
            let mut parameters: Vec<Value> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query" && p["name"] != "token")
                        .map(|p| json!({ "name": p["name"], "value": "", "disabled": true }))
                        .collect()
                })
                .unwrap_or_default();
            let authentication = if node_facing {
                parameters.push(
                    json!({ "name": "token", "value": "{{ _.nodeToken }}", "disabled": false }),
                );
                json!({})
            } else if secured {
                json!({ "type": "bearer", "token": "{{ _.token }}" })
            } else {
                json!({})
            };
            let (body, headers) = match op
                .get("requestBody")
                .and_then(schema_name)
                .and_then(example_body)
            {
                Some(example) => (
                    json!({
                        "mimeType": "application/json",
                        "text": serde_json::to_string_pretty(&example).unwrap_or_default()
                    }),
                    json!([{ "name": "Content-Type", "value": "application/json" }]),
                ),
                None => (json!({}), json!([])),
            };
            let id = op["operationId"].as_str().unwrap_or("op");
            resources.push(json!({
                "_id": format!("req_{id}"),
                "_type": "request",
                "parentId": folder,
                "name": op["summary"].as_str().unwrap_or(id),
                "method": method.to_uppercase(),
                "url": format!("{{{{ _.baseUrl }}}}{url_path}"),
                "parameters": parameters,
                "headers": headers,
                "body": body,
                "authentication": authentication
            }));
        }
    }
    json!({
        "_type": "export",
        "__export_format": 4,
        "__export_source": "bootfleet",
        "resources": resources
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openapi() -> Value {
        let doc = crate::openapi::document(&crate::routes::routes());
        serde_json::to_value(&doc).expect("openapi as json")
    }

    #[test]
    fn openapi_document_matches_its_snapshot() {
        let doc = crate::openapi::document(&crate::routes::routes());
        insta::assert_snapshot!("openapi", doc.to_pretty_json().expect("json"));
    }

    /// `insomnia/bootfleet.json` is generated; regenerate with
    /// `UPDATE_INSOMNIA=1 cargo test -p bootfleet-gateway insomnia`.
    #[test]
    fn committed_insomnia_workspace_is_in_step_with_the_routes() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../insomnia/bootfleet.json");
        let generated = serde_json::to_string_pretty(&workspace(&openapi())).expect("json") + "\n";
        if std::env::var_os("UPDATE_INSOMNIA").is_some() {
            std::fs::write(&path, &generated).expect("write the workspace");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "insomnia/bootfleet.json is out of date; run UPDATE_INSOMNIA=1 cargo test -p bootfleet-gateway insomnia"
        );
    }

    #[test]
    fn every_operation_becomes_a_request() {
        let doc = openapi();
        let ops: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| item.as_object().map(|m| m.len()).unwrap_or(0))
            .sum();
        let requests = workspace(&doc)["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .filter(|r| r["_type"] == "request")
            .count();
        assert_eq!(ops, requests);
        assert_eq!(ops, crate::routes::routes().len());
    }
}

//! An Insomnia (v4 export) workspace generated from the OpenAPI document: one folder per tag,
//! one request per operation, bearer auth from the environment's `token`, node-facing reads with
//! `?token={{ _.nodeToken }}`. The committed `insomnia/bootfleet.json` is checked against this
//! by a test, so the workspace follows the routes.

use serde_json::{json, Map, Value};

/// The example body of an operation: the Cluster Platform Provisioner tutorial's own request
/// bodies where it has one (its host replaced by `{{ _.baseUrl }}`, its row numbers by
/// `{{ _.id }}`), else one for the body's schema.
fn example_body(operation_id: &str, schema: &str) -> Option<Value> {
    let file = |kind: &str, name: &str| format!("{{{{ _.baseUrl }}}}/{kind}/{{{{ _.id }}}}/{name}");
    let chain =
        |path: &str| format!("#!ipxe\ndhcp\nchain {{{{ _.baseUrl }}}}/api/{path}/{{{{ _.id }}}}");
    let grub = |architecture: &str, fragment: &str| {
        json!({
            "label": "Cluster Platform Provisioner ISO",
            "platform": "x86_64-efi",
            "architecture": architecture,
            "extension": "efi",
            "fragment": fragment
        })
    };
    Some(match operation_id {
        "createMainscript" | "updateMainscript" => json!({ "text": format!(
            "#!ipxe\nmenu Choose Script\nitem mainsubscriptserver_fedora29 Main Sub Script Server Fedora 29\nchoose --default mainsubscriptserver_fedora29 --timeout 3000 server && goto ${{server}}\n:mainsubscriptserver_fedora29\nchain {{{{ _.baseUrl }}}}/api/subscripts/{{{{ _.id }}}}"
        )}),
        "createSubscript" | "updateSubscript" => json!({ "text": format!(
            "#!ipxe\nset base http://dl.fedoraproject.org/pub/fedora/linux/releases/29/Server/x86_64/os\nkernel ${{base}}/images/pxeboot/vmlinuz initrd=initrd.img inst.repo=${{base}} inst.ks={{{{ _.baseUrl }}}}/api/kickstarts/{{{{ _.id }}}}\ninitrd ${{base}}/images/pxeboot/initrd.img\nboot"
        )}),
        "createKickstart" | "updateKickstart" => json!({ "text": format!(
            "keyboard us\nlang en_US\ntimezone Europe/Berlin\ntext\nreboot\nnetwork --bootproto=dhcp\nurl --url=\"http://dl.fedoraproject.org/pub/fedora/linux/releases/29/Server/x86_64/os\"\nbootloader --location=mbr\nzerombr\nclearpart --all\nautopart\n\n%pre\ncurl {{{{ _.baseUrl }}}}/api/prebootscripts/{{{{ _.id }}}} | bash\n%end\n\n%post\ncurl {{{{ _.baseUrl }}}}/api/postbootscripts/{{{{ _.id }}}} > /usr/local/bin/postboot.sh\nchmod 744 /usr/local/bin/postboot.sh\n%end\n"
        )}),
        "createPrebootscript" | "updatePrebootscript" => {
            json!({ "text": "#!/bin/bash\necho \"This could be the preboot script!\"\n" })
        }
        "createPostbootscript" | "updatePostbootscript" => json!({ "text": format!(
            "#!/bin/bash\nip=$(hostname -I | cut -d ' ' -f 1)\ncurl --request POST \"{{{{ _.baseUrl }}}}/api/localnodes?ip=${{ip}}&artifactId={{{{ _.artifactId }}}}&pingable=true&token={{{{ _.nodeToken }}}}\"\n"
        )}),
        "createIpxe" => json!({
            "script": chain("mainscripts"),
            "platform": "bin-x86_64-efi",
            "driver": "ipxe",
            "extension": "efi"
        }),
        "createGrub" => grub("x64", "img"),
        "createSyslinux" => json!({ "fragment": "ldlinux.c32" }),
        "createIso" => json!({
            "label": "Cluster Platform Provisioner ISO",
            "ipxeUefiUrl": file("ipxes", "ipxe.efi"),
            "ipxeBiosUrl": file("ipxes", "ipxe.lkrn"),
            "grubImgUrl": file("grubs", "grub.img"),
            "grubEfiX64Url": file("grubs", "grub.zip"),
            "grubEfiX86Url": file("grubs", "grub.zip"),
            "ldLinuxUrl": file("syslinuxs", "ldlinux.c32"),
            "isolinuxBinUrl": file("syslinuxs", "isolinux.bin"),
            "isohdpfxBinUrl": file("syslinuxs", "isohdpfx.bin")
        }),
        "configureDistributor" => json!({
            "ipxePxeUefiUrl": file("ipxes", "ipxe.efi"),
            "ipxePxeBiosUrl": file("ipxes", "undionly.kpxe"),
            "artifactId": "{{ _.artifactId }}",
            "device": "enp0s25",
            "range": "192.168.178.1"
        }),
        "setDistributorStatus" => json!({ "on": true, "artifactId": "{{ _.artifactId }}" }),
        "runLocalNodeScript" => json!({
            "script": "uname -a\nip -brief address",
            "privateKey": "(the private key from GET /api/sshkey)"
        }),
        _ => return example_for_schema(schema),
    })
}

fn example_for_schema(schema: &str) -> Option<Value> {
    match schema {
        "SshKeyInput" => Some(json!({
            "text": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2Y7dKzjZ0mXkUo3xw1Vv0bLxq3vZxq8wq0xq6Vv1nU you@example",
            "artifactId": "{{ _.artifactId }}"
        })),
        "LocalNodeInput" => Some(
            json!({ "ip": "192.168.178.102", "artifactId": "{{ _.artifactId }}", "pingable": true }),
        ),
        "MachineInput" => Some(json!({
            "mac": "52:54:00:12:34:56",
            "name": "node-1",
            "artifactId": "{{ _.artifactId }}",
            "ranks": ["metal"],
            "metadata": { "rack": "r1" }
        })),
        "SitePolicyInput" => Some(json!({ "unknownMacs": "discover" })),
        "StateInput" => Some(json!({ "state": "ready" })),
        "ProfileInput" => Some(json!({
            "name": "{{ _.name }}",
            "ipxeTemplate": "#!ipxe\nkernel {{ '{{' }} files {{ '}}' }}/vmlinuz inst.ks={{ '{{' }} files {{ '}}' }}/kickstart\nboot",
            "templates": { "kickstart": "text\nreboot\n%post\ncurl -X POST {{ '{{' }} api {{ '}}' }}/installed\n%end\n" }
        })),
        _ => None,
    }
}

/// The environment's value of a path parameter until the operator sets it.
fn path_param_default(name: &str) -> &'static str {
    match name {
        "artifactId" => "site-1",
        "template" => "kickstart",
        "file" => "ipxe.efi",
        "name" => "default",
        _ => "",
    }
}

/// The body's schema name: its `$ref`, or the first part of an `allOf` (a route that requires
/// more of the type than the type itself does).
fn schema_name(reference: &Value) -> Option<&str> {
    let schema = reference.pointer("/content/application~1json/schema")?;
    schema
        .get("$ref")
        .or_else(|| schema.pointer("/allOf/0/$ref"))?
        .as_str()?
        .rsplit('/')
        .next()
}

/// The path parameters of `paths` (`{id}`, `{name}`, ...), each with its environment default.
fn path_params(paths: &Map<String, Value>) -> Vec<(String, &'static str)> {
    let mut names: Vec<(String, &'static str)> = Vec::new();
    for path in paths.keys() {
        for part in path.split('/') {
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if !names.iter().any(|(n, _)| n == name) {
                    names.push((name.to_owned(), path_param_default(name)));
                }
            }
        }
    }
    names
}

/// The Insomnia export for an OpenAPI document (as JSON).
pub fn workspace(openapi: &Value) -> Value {
    let empty = Map::new();
    let paths = openapi["paths"].as_object().unwrap_or(&empty);
    let mut environment = json!({
        "baseUrl": "http://127.0.0.1:8080",
        "adminToken": "",
        "nodeToken": "",
        "token": "{{ _.adminToken }}",
        "artifactId": "site-1",
        "id": ""
    });
    for (name, value) in path_params(paths) {
        environment[name.as_str()] = json!(value);
    }
    let mut resources = vec![
        json!({
            "_id": "wrk_bootfleet",
            "_type": "workspace",
            "name": "Bootfleet",
            "description": "Generated from /api/openapi.json. In the environment set baseUrl, adminToken and nodeToken (mint them with `bootfleet token --role admin` and `--role node`); `token` is what operator requests send (the admin token unless you set a user token there), `id` the row the {id} requests address. Example bodies are the Cluster Platform Provisioner tutorial's.",
            "scope": "collection"
        }),
        json!({
            "_id": "env_bootfleet",
            "_type": "environment",
            "parentId": "wrk_bootfleet",
            "name": "Base Environment",
            "data": environment
        }),
        json!({
            "_id": "env_bootfleet_local",
            "_type": "environment",
            "parentId": "env_bootfleet",
            "name": "bootfleet up on this machine",
            "data": { "baseUrl": "http://127.0.0.1:8080" }
        }),
    ];
    let mut folders: Vec<String> = Vec::new();
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
            let url_path = path_params(&Map::from_iter([(path.clone(), item.clone())]))
                .into_iter()
                .fold(path.clone(), |url, (name, _)| {
                    url.replace(&format!("{{{name}}}"), &format!("{{{{ _.{name} }}}}"))
                });
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
            let id = op["operationId"].as_str().unwrap_or("op");
            let schema = op.get("requestBody").and_then(schema_name);
            let (body, headers) = match schema.and_then(|schema| example_body(id, schema)) {
                Some(example) => (
                    json!({
                        "mimeType": "application/json",
                        "text": serde_json::to_string_pretty(&example).unwrap_or_default()
                    }),
                    json!([{ "name": "Content-Type", "value": "application/json" }]),
                ),
                None => (json!({}), json!([])),
            };
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

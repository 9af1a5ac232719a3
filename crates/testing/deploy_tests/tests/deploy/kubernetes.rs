//! The Kubernetes path, checked statically (no cluster can run on these machines): the chart
//! lints, renders for its default, external-database and distributor values and for each
//! Skaffold profile, every manifest validates against Kubernetes' schemas, and skaffold.yaml
//! builds what the chart deploys.

use std::collections::BTreeSet;
use std::path::Path;

use bootfleet_api::artifacts::ArtifactKind;
use serde_json::Value;

use crate::support::{deploy_tools, run, stdout, workspace_root, yaml_documents, yaml_file};

const CHART: &str = "helm/bootfleet";
/// The oldest version the chart declares (kubeVersion) and the one its helm comes with.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.27.0", "1.33.0"];

/// `helm template` of the chart with these values files and `--set` pairs.
fn render(values: &[&str], set: &[String]) -> String {
    let tools = deploy_tools();
    let mut cmd = tools.tool("helm");
    cmd.args(["template", "bf", CHART, "--namespace", "bootfleet"]);
    for v in values {
        cmd.args(["--values", v]);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    stdout(&run(&mut cmd))
}

/// Validates every manifest in `files` against the schemas of each Kubernetes version,
/// rejecting unknown fields.
fn validate(files: &[&Path]) {
    let tools = deploy_tools();
    for version in KUBERNETES_VERSIONS {
        let out = tools
            .tool("kubernetes-validate")
            .args(["--strict", "--quiet", "-k", version])
            .args(files)
            .output()
            .expect("kubernetes-validate");
        assert!(
            out.status.success(),
            "manifests invalid for Kubernetes {version}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

fn kinds_and_names(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or("?"),
                d["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn container(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]["containers"][0]
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

/// The builders, one per artifact kind; every other service of the system is a plain service.
fn builders() -> Vec<&'static str> {
    ArtifactKind::ALL.iter().map(|k| k.name()).collect()
}

fn services() -> Vec<&'static str> {
    let builders = builders();
    bootfleet::service_names()
        .into_iter()
        .filter(|s| !builders.contains(s))
        .collect()
}

#[test]
fn the_chart_lints_and_renders_manifests_valid_for_kubernetes() {
    let tools = deploy_tools();
    let cases: [(&str, &[&str]); 3] = [
        ("default", &[]),
        ("external-database", &["helm/ci/external-db-values.yaml"]),
        ("distributor", &["helm/ci/distributor-values.yaml"]),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rendered = Vec::new();
    for (case, values) in cases {
        let mut lint = tools.tool("helm");
        lint.args(["lint", "--strict", CHART]);
        for v in values {
            lint.args(["--values", v]);
        }
        let out = run(&mut lint);
        assert!(
            stdout(&out).contains("0 chart(s) failed"),
            "{}",
            stdout(&out)
        );
        let text = render(values, &[]);
        let path = dir.path().join(format!("{case}.yaml"));
        std::fs::write(&path, &text).expect("write");
        rendered.push((case, path, yaml_documents(&text)));
    }
    let paths: Vec<&Path> = rendered.iter().map(|(_, p, _)| p.as_path()).collect();
    validate(&paths);

    let (_, _, default) = &rendered[0];
    let names = kinds_and_names(default);
    // NATS and PostgreSQL in the release, every service and builder kind its own Deployment,
    // the gateway behind a Service, no distributor unless asked for.
    for expected in [
        "StatefulSet/bf-bootfleet-nats",
        "StatefulSet/bf-bootfleet-postgres",
        "Deployment/bf-bootfleet-gateway",
        "Service/bf-bootfleet-gateway",
        "Secret/bf-bootfleet-jwt",
        "Secret/bf-bootfleet-nats",
    ] {
        assert!(names.contains(expected), "{expected} missing: {names:?}");
    }
    let builders = builders();
    for name in services().iter().chain(builders.iter()) {
        let d = find(default, "Deployment", &format!("bf-bootfleet-{name}"))
            .unwrap_or_else(|| panic!("no Deployment for {name}: {names:?}"));
        let c = container(d);
        assert!(d["spec"]["replicas"].as_u64().is_some(), "{name}: replicas");
        assert!(c["resources"]["requests"].is_object(), "{name}: resources");
        assert_eq!(
            c["startupProbe"]["exec"]["command"],
            serde_json::json!(["bootfleet", "healthcheck", name]),
            "{name}: probe"
        );
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{name}"
        );
        let image = c["image"].as_str().expect("image");
        if builders.contains(name) {
            // A builder's image is its kind's, and runs `bootfleet service <kind>` by itself.
            assert_eq!(image, format!("bootfleet-builder-{name}:latest"));
            assert!(c["args"].is_null(), "{name}: {c}");
        } else {
            // The registry runs where every kind's tools are (it checks their versions).
            let expected = if *name == "artifacts" {
                "bootfleet-builders"
            } else {
                "bootfleet"
            };
            assert_eq!(image, format!("{expected}:latest"));
            assert_eq!(c["args"], serde_json::json!(["service", name]));
        }
    }
    assert!(
        !names.iter().any(|n| n.starts_with("DaemonSet/")),
        "{names:?}"
    );
    // The gateway's gRPC API beside REST: a port of its own on the Pod and the Service, plain
    // unless a certificate is given.
    let gateway = find(default, "Deployment", "bf-bootfleet-gateway").expect("gateway");
    let ports = &container(gateway)["ports"];
    assert!(
        ports.as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == "grpc" && p["containerPort"] == 8081)),
        "{ports}"
    );
    assert!(env(container(gateway), "BOOTFLEET_GRPC_TLS_CERT").is_none());
    let service = find(default, "Service", "bf-bootfleet-gateway").expect("service");
    assert!(
        service["spec"]["ports"].as_array().is_some_and(|p| p
            .iter()
            .any(|p| p["name"] == "grpc" && p["targetPort"] == "grpc")),
        "{service}"
    );
    check_nats(default, 1, "1");

    // External database and NATS: neither StatefulSet, DATABASE_URL from the operator's Secret.
    let (_, _, external) = &rendered[1];
    let names = kinds_and_names(external);
    assert!(
        !names.iter().any(|n| n.starts_with("StatefulSet/")),
        "{names:?}"
    );
    assert!(names.contains("Ingress/bf-bootfleet-gateway"), "{names:?}");
    let gateway = find(external, "Deployment", "bf-bootfleet-gateway").expect("gateway");
    let url = env(container(gateway), "DATABASE_URL").expect("DATABASE_URL");
    assert_eq!(url["valueFrom"]["secretKeyRef"]["name"], "bootfleet-db");
    assert_eq!(
        env(container(gateway), "NATS_URL").expect("NATS_URL")["value"],
        "tls://nats.example:4222"
    );
    // The gRPC API's certificate from the operator's Secret, mounted read-only.
    assert_eq!(
        env(container(gateway), "BOOTFLEET_GRPC_TLS_CERT").expect("cert")["value"],
        "/etc/bootfleet/grpc-tls/tls.crt"
    );
    let volumes = &gateway["spec"]["template"]["spec"]["volumes"];
    assert!(
        volumes.as_array().is_some_and(|v| v
            .iter()
            .any(|v| v["secret"]["secretName"] == "bootfleet-grpc-tls")),
        "{volumes}"
    );

    // The distributor: host network, exactly two added capabilities, its site's own login.
    let (_, _, with_distributor) = &rendered[2];
    let ds = find(with_distributor, "DaemonSet", "bf-bootfleet-distributor").expect("DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["nodeSelector"]["bootfleet.io/site"], "site-lab");
    let c = container(ds);
    assert_eq!(
        c["securityContext"]["capabilities"],
        serde_json::json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE", "NET_RAW"]})
    );
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        env(c, "NATS_USER").expect("NATS_USER")["valueFrom"]["secretKeyRef"]["name"],
        "bf-bootfleet-distributor-nats"
    );
    assert_eq!(
        env(c, "DISTRIBUTOR_ARTIFACT_ID").expect("site")["value"],
        "site-lab"
    );
    let nats = find(with_distributor, "Secret", "bf-bootfleet-nats").expect("nats secret");
    let users = nats["data"]["users.conf"].as_str().expect("users.conf");
    assert!(!users.is_empty());

    // The schema refuses what the templates would render wrong.
    let out = tools
        .tool("helm")
        .args([
            "template",
            "bf",
            CHART,
            "--set",
            "distributor.site=a b;reboot",
        ])
        .output()
        .expect("helm");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/distributor/site"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A NATS cluster has an odd number of servers, and no stream more copies than servers.
    for (set, error) in [
        ("nats.replicas=2", "/nats/replicas"),
        (
            "nats.jetstreamReplicas=3",
            "nats.jetstreamReplicas (3) cannot exceed nats.replicas (1)",
        ),
    ] {
        let out = tools
            .tool("helm")
            .args(["template", "bf", CHART, "--set", set])
            .output()
            .expect("helm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(error),
            "{set}: {stderr}"
        );
    }
    // The validator rejects an unknown field (it is not a no-op).
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}], hostNetwork: true}\n",
    )
    .expect("write");
    let out = tools
        .tool("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.33.0"])
        .arg(&bad)
        .output()
        .expect("kubernetes-validate");
    assert!(!out.status.success(), "an unknown field passed validation");
}

/// The NATS StatefulSet of a render has `servers` servers (one cluster with routes to each
/// pod's stable name when more than one), and every service, builder and the gateway makes its
/// streams with `copies` replicas.
fn check_nats(docs: &[Value], servers: u64, copies: &str) {
    let nats = find(docs, "StatefulSet", "bf-bootfleet-nats").expect("nats");
    assert_eq!(nats["spec"]["replicas"], servers, "{nats}");
    let args = &container(nats)["args"];
    if servers == 1 {
        assert!(args.is_null(), "one server is no cluster: {args}");
    } else {
        assert_eq!(nats["spec"]["podManagementPolicy"], "Parallel");
        let args: Vec<&str> = args
            .as_array()
            .expect("args")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let routes: Vec<String> = (0..servers)
            .map(|i| format!("nats://bf-bootfleet-nats-{i}.bf-bootfleet-nats-headless:6222"))
            .collect();
        assert_eq!(
            args,
            [
                "--name=$(POD_NAME)",
                "--cluster_name=bf-bootfleet-nats",
                "--cluster=nats://0.0.0.0:6222",
                &format!("--routes={}", routes.join(",")),
            ],
        );
        assert_eq!(
            env(container(nats), "POD_NAME").expect("POD_NAME")["valueFrom"]["fieldRef"]
                ["fieldPath"],
            "metadata.name"
        );
        let headless = find(docs, "Service", "bf-bootfleet-nats-headless").expect("headless");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        assert!(
            headless["spec"]["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["name"] == "cluster" && p["port"] == 6222),
            "{headless}"
        );
    }
    let deployments: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Deployment").collect();
    assert!(!deployments.is_empty());
    for d in deployments {
        assert_eq!(
            env(container(d), "BOOTFLEET_JETSTREAM_REPLICAS").map(|e| &e["value"]),
            Some(&Value::from(copies)),
            "{}",
            d["metadata"]["name"]
        );
    }
}

/// The value at a dotted path of the chart's values (`images.bootfleet.repository`).
fn value_at<'a>(values: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(values, |v, key| v.get(key))
}

#[test]
fn skaffold_builds_what_the_chart_deploys() {
    let root = workspace_root();
    let skaffold = yaml_file(&root.join("skaffold.yaml"));
    let config = &skaffold[0];
    assert!(
        config["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("skaffold/v4")),
        "{}",
        config["apiVersion"]
    );
    let values = &yaml_file(&root.join(CHART).join("values.yaml"))[0];
    let chart_images: BTreeSet<String> = values["images"]
        .as_object()
        .expect("images")
        .values()
        .map(|i| i["repository"].as_str().expect("repository").to_owned())
        .collect();

    let mut artifact_sets = vec![("(top level)", &config["build"]["artifacts"])];
    let profiles = config["profiles"].as_array().expect("profiles");
    let profile_names: Vec<&str> = profiles.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(profile_names, ["dev", "prod"]);
    for p in profiles {
        artifact_sets.push((p["name"].as_str().expect("name"), &p["build"]["artifacts"]));
    }
    for (profile, artifacts) in artifact_sets {
        let artifacts = artifacts
            .as_array()
            .unwrap_or_else(|| panic!("{profile}: artifacts"));
        let mut built = BTreeSet::new();
        for a in artifacts {
            let image = a["image"].as_str().expect("image");
            let context = root.join(a["context"].as_str().unwrap_or("."));
            assert!(
                context.is_dir(),
                "{profile}/{image}: context {}",
                context.display()
            );
            let dockerfile = context.join(a["docker"]["dockerfile"].as_str().expect("dockerfile"));
            assert!(
                dockerfile.is_file(),
                "{profile}/{image}: {}",
                dockerfile.display()
            );
            // A KIND build argument is one the builder Dockerfile accepts, matching the name
            // (`builders`: every kind).
            if let Some(kind) = a["docker"]["buildArgs"]["KIND"].as_str() {
                let expected = match kind {
                    "builders" => "bootfleet-builders".to_owned(),
                    kind => format!("bootfleet-builder-{kind}"),
                };
                assert_eq!(image, expected);
                let text = std::fs::read_to_string(&dockerfile).expect("read");
                assert!(
                    text.contains(&format!("{kind})")),
                    "{kind} not in {}",
                    dockerfile.display()
                );
            }
            built.insert(image.to_owned());
        }
        assert_eq!(
            built, chart_images,
            "{profile}: artifacts vs the chart's images"
        );
    }

    // Each profile deploys the chart with its values file, every image set from what it built.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for p in profiles {
        let name = p["name"].as_str().expect("name");
        let releases = p["deploy"]["helm"]["releases"]
            .as_array()
            .expect("releases");
        assert_eq!(releases.len(), 1, "{name}");
        let release = &releases[0];
        assert_eq!(release["chartPath"], CHART);
        let values_files: Vec<&str> = release["valuesFiles"]
            .as_array()
            .expect("valuesFiles")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for v in &values_files {
            assert!(root.join(v).is_file(), "{name}: {v}");
        }
        let templates = release["setValueTemplates"]
            .as_object()
            .expect("setValueTemplates");
        let mut set = Vec::new();
        for (key, template) in templates {
            assert!(
                value_at(values, key).is_some(),
                "{name}: {key} is not a chart value"
            );
            let template = template.as_str().expect("template");
            // Skaffold's names for a built image: IMAGE_REPO_/IMAGE_TAG_ + the image name with
            // '-' as '_'; the image is the one whose repository this key sets.
            let image = value_at(values, &key.replace(".tag", ".repository"))
                .and_then(Value::as_str)
                .expect("repository")
                .replace('-', "_");
            let field = if key.ends_with(".repository") {
                "REPO"
            } else {
                "TAG"
            };
            assert_eq!(
                template,
                format!("{{{{.IMAGE_{field}_{image}}}}}"),
                "{name}: {key}"
            );
            let stand_in = if field == "REPO" {
                format!("registry.example/{image}")
            } else {
                "0123abc".into()
            };
            set.push(format!("{key}={stand_in}"));
        }
        assert_eq!(templates.len(), 2 * chart_images.len(), "{name}");
        let text = render(&values_files, &set);
        let docs = yaml_documents(&text);
        assert!(
            docs.iter().filter(|d| d["kind"] == "Deployment").all(|d| {
                container(d)["image"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("registry.example/") && i.ends_with(":0123abc"))
            }),
            "{name}: an image not set by Skaffold"
        );
        // prod: a three-node NATS cluster with three copies of every stream; dev: one of each.
        let (nats, copies) = if name == "prod" { (3, "3") } else { (1, "1") };
        check_nats(&docs, nats, copies);
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).expect("write");
        files.push(path);
    }
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    validate(&paths);
}

//! Templates rendered per machine by MiniJinja, with undefined variables an error (strict) and
//! no escaping: the text is served as written, to iPXE or an installer, and never reaches a
//! shell here.

use std::collections::{BTreeMap, HashSet};

use bootfleet_api::{ApiError, ErrorCode};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

/// A rendered template larger than this is refused (a loop gone wild).
pub const MAX_RENDERED_BYTES: usize = 1024 * 1024;

/// The fields of `machine` a template may use.
pub const MACHINE_FIELDS: [&str; 10] = [
    "id", "name", "mac", "ip", "site", "firmware", "state", "ranks", "groups", "metadata",
];
/// The top-level variables.
pub const VARIABLES: [&str; 4] = ["machine", "token", "api", "files"];
/// MiniJinja's own globals (functions), allowed as names.
const GLOBALS: [&str; 4] = ["range", "dict", "namespace", "debug"];

#[derive(Clone, Debug, Serialize)]
pub struct MachineVars {
    pub id: String,
    pub name: String,
    pub mac: String,
    pub ip: String,
    pub site: String,
    pub firmware: String,
    pub state: String,
    pub ranks: Vec<String>,
    pub groups: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Vars {
    pub machine: MachineVars,
    pub token: String,
    pub api: String,
    pub files: String,
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_recursion_limit(64);
    // Served as written: a kickstart keeps its last newline.
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env
}

fn known_list() -> String {
    let mut names: Vec<String> = MACHINE_FIELDS
        .iter()
        .map(|f| format!("machine.{f}"))
        .collect();
    names.extend(VARIABLES[1..].iter().map(|v| (*v).to_owned()));
    names.join(", ")
}

/// The variables `source` uses that no machine has: checked when a profile is stored.
/// `machine.metadata.<key>` passes (metadata differs per machine; a missing key is refused when
/// rendering).
pub fn check(field: &str, source: &str) -> Result<(), ApiError> {
    let env = environment();
    let template = env
        .template_from_str(source)
        .map_err(|e| ApiError::invalid(field, format!("template does not parse: {e}")))?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(true)
        .into_iter()
        .filter(|v| !allowed(v))
        .collect();
    unknown.sort();
    if let Some(first) = unknown.first() {
        return Err(ApiError::invalid(
            field,
            format!(
                "unknown variable {first} (known: {}, machine.metadata.<key>)",
                known_list()
            ),
        ));
    }
    Ok(())
}

fn allowed(var: &str) -> bool {
    let mut parts = var.split('.');
    let root = parts.next().unwrap_or_default();
    if GLOBALS.contains(&root) {
        return true;
    }
    if !VARIABLES.contains(&root) {
        return false;
    }
    match (root, parts.next()) {
        ("machine", Some(field)) => MACHINE_FIELDS.contains(&field),
        _ => true,
    }
}

/// Whether `path` (`machine.metadata.rack`) names a value in `vars`.
fn resolves(vars: &serde_json::Value, path: &str) -> bool {
    let mut v = vars;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return GLOBALS.contains(&part),
        }
    }
    true
}

/// Renders `source` (the template named `name`) for one machine.
pub fn render(name: &str, source: &str, vars: &Vars) -> Result<String, ApiError> {
    let env = environment();
    let refuse = |message: String| {
        let mut e = ApiError::new(ErrorCode::Conflict, format!("template {name}: {message}"));
        e.field = Some("template".to_owned());
        e
    };
    let template = env
        .template_from_str(source)
        .map_err(|e| refuse(format!("does not parse: {e}")))?;
    let json = serde_json::to_value(vars).unwrap_or_default();
    let used: HashSet<String> = template.undeclared_variables(true);
    let mut missing: Vec<&String> = used.iter().filter(|v| !resolves(&json, v)).collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(refuse(format!(
            "undefined variable {first} for this machine (known: {}, machine.metadata.<key>)",
            known_list()
        )));
    }
    let text = template
        .render(Value::from(minijinja::value::Serde(vars)))
        .map_err(|e| refuse(e.to_string()))?;
    if text.len() > MAX_RENDERED_BYTES {
        return Err(refuse(format!(
            "renders to more than {MAX_RENDERED_BYTES} bytes"
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars {
            machine: MachineVars {
                id: "m1".into(),
                name: "node1".into(),
                mac: "52:54:00:00:00:01".into(),
                ip: String::new(),
                site: "site-1".into(),
                firmware: "bios".into(),
                state: "install".into(),
                ranks: vec!["r0".into()],
                groups: vec![],
                metadata: [("rack".to_owned(), "a'; rm -rf / #".to_owned())].into(),
            },
            token: "bfm1.x".into(),
            api: "http://10.0.2.100:8080".into(),
            files: "http://10.0.2.100:8080/api/machines/m1/files".into(),
        }
    }

    #[test]
    fn renders_verbatim_and_refuses_unknown_names() {
        let out = render(
            "kickstart",
            "h={{ machine.name }} r={{ machine.metadata.rack }} $(id) `x` <&> {{ files }}/k?token={{ token }}",
            &vars(),
        )
        .expect("render");
        assert_eq!(
            out,
            "h=node1 r=a'; rm -rf / # $(id) `x` <&> http://10.0.2.100:8080/api/machines/m1/files/k?token=bfm1.x"
        );
        let e = render("kickstart", "{{ machine.metadata.row }}", &vars()).expect_err("missing");
        assert!(e.message.contains("machine.metadata.row"), "{}", e.message);
        let e = check("ipxeTemplate", "{{ foo }}").expect_err("unknown");
        assert!(
            e.message.starts_with("ipxeTemplate: unknown variable foo"),
            "{}",
            e.message
        );
        assert!(check("x", "{{ machine.colour }}").is_err());
        assert!(check(
            "x",
            "{{ machine.metadata.anything }}{% for r in machine.ranks %}{{ r }}{% endfor %}"
        )
        .is_ok());
        assert!(check("x", "{{ unclosed").is_err());
    }
}

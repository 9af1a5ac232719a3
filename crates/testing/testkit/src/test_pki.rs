//! A throwaway certificate authority for TLS tests: a CA, a server certificate for 127.0.0.1
//! and a client certificate, made with Debian's `openssl` command (argument vectors only) in a
//! temporary directory that is removed on drop. Valid for two days; never used outside tests.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug)]
pub struct TestPki {
    _dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

fn openssl(dir: &Path, args: &[&str]) {
    crate::run_ok(
        Command::new("openssl").args(args).current_dir(dir),
        &format!("openssl {args:?} (Debian's openssl; ./scripts/setup installs it)"),
    );
}

/// A key and a certificate for `name`, signed by the CA in `dir`, with `extensions`.
fn issue(dir: &Path, name: &str, subject: &str, serial: &str, extensions: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).expect("write extensions");
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend(EC_KEY);
    req.extend(["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(dir, &req);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            serial,
            "-days",
            "2",
            "-out",
            &pem,
            "-extfile",
            &ext,
        ],
    );
}

impl TestPki {
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("bootfleet-pki-")
            .tempdir()
            .expect("create a temporary directory");
        let d = dir.path();
        let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
        ca.extend(EC_KEY);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=bootfleet test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(d, &ca);
        issue(
            d,
            "server",
            "/CN=127.0.0.1",
            "2",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        );
        issue(
            d,
            "client",
            "/CN=bootfleet test client",
            "3",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
        );
        TestPki {
            ca: d.join("ca.pem"),
            server_cert: d.join("server.pem"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
            _dir: dir,
        }
    }
}

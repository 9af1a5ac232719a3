//! The seed tutorial (the original provisioner's walk from scripts to a boot ISO) done with the
//! `bootfleet` CLI binary alone, against a live system this test starts: every service and the
//! gateway (REST and gRPC) in this process, a real `nats-server`, SQLite, and the build tools
//! Debian ships (iPXE's prebuilt binaries, GRUB, SYSLINUX, xorriso).
//!
//! Scripts and an SSH key pair are created first (the builds' embedded script chains the real
//! main script), then each network and media bootloader the tutorial asks for, then the ISO from
//! their files; each build is followed to completion with `--follow` (plain progress lines, as
//! the output is piped), and the ISO is downloaded with the CLI, which checks its SHA-256.

use std::process::Output;

use bootfleet_gateway::auth::Role;
use bootfleet_testkit::NatsServer;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// Shared with the observability tests; not every helper is used here.
#[allow(dead_code)]
mod support;

/// The site the tutorial's key and nodes belong to (its `artifactId`).
const SITE: &str = "lab.example";
/// The medium's label as the tutorial writes it: spaces and all.
const LABEL: &str = "Cluster Platform Provisioner ISO";

/// The `bootfleet` binary as a client of one gateway, with a scratch directory of its own (its
/// XDG config directory and the files it reads and writes).
struct Cli {
    url: String,
    token: String,
    dir: tempfile::TempDir,
}

impl Cli {
    /// Runs `bootfleet args...` with the URL and `token` in the environment.
    async fn run_as(&self, token: &str, args: &[&str]) -> Output {
        let command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bootfleet"))
            .args(args)
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("BOOTFLEET_GRPC_URL", &self.url)
            .env("BOOTFLEET_TOKEN", token)
            .env_remove("BOOTFLEET_GRPC_CA")
            .env_remove("BOOTFLEET_LOG")
            .output();
        tokio::time::timeout(std::time::Duration::from_secs(120), command)
            .await
            .expect("the cli ends")
            .expect("run the cli")
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_as(&self.token, args).await
    }

    /// Runs with `-o json`, asserts exit 0, and parses stdout.
    async fn json(&self, args: &[&str]) -> Value {
        let args = [args, &["-o", "json"]].concat();
        let out = self.run(&args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    }

    /// Creates a script of `kind` from a file holding `body`, as an operator would.
    async fn script(&self, kind: &str, body: &str) -> String {
        let file = self.file(&format!("{kind}.txt"), body);
        let row = self.json(&[kind, "create", "--file", &file]).await;
        assert_eq!(row["text"], body, "{kind}");
        row["id"].as_str().expect("id").to_owned()
    }

    /// Starts a build of `kind` from `inputs` and follows it to completion: a progress line per
    /// change on stderr (no bar, no escape codes: the output is piped), the done row on stdout.
    async fn build(&self, kind: &str, inputs: Value) -> Value {
        let file = self.file(&format!("{kind}.json"), &inputs.to_string());
        let args = [kind, "create", "--file", &file, "--follow", "-o", "json"];
        let out = self.run(&args).await;
        assert_eq!(out.status.code(), Some(0), "{inputs}: {}", text(&out));
        let row: Value = serde_json::from_slice(&out.stdout).expect("the done row");
        assert_eq!(
            (&row["status"], &row["progress"]),
            (&json!("done"), &json!(100))
        );
        let id = row["id"].as_str().expect("id");
        let progress = String::from_utf8_lossy(&out.stderr);
        let last = progress.lines().last().unwrap_or_default();
        assert_eq!(last, format!("{kind} {id}: done 100%"), "{progress}");
        assert!(
            !progress.contains('\u{1b}') && !progress.contains('\r'),
            "{progress:?}"
        );
        row
    }

    /// Writes `body` into the scratch directory; answers its path.
    fn file(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path.to_str().expect("utf-8").to_owned()
    }
}

#[path = "support/cli_output.rs"]
mod cli_output;
use cli_output::{expect_exit, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_with_the_cli_alone_from_scripts_to_a_checked_iso() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let nats = NatsServer::start();
    let db = tempfile::tempdir().expect("tempdir");
    let system = support::start_system_with_grpc(&nats, db.path()).await;
    let cli = Cli {
        url: system.grpc_url().expect("grpc url"),
        token: support::token(Role::Admin),
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let api = format!("{}/api", system.base_url());

    // A key pair (nothing stored; the private half is the operator's to keep), its public half
    // registered for the site.
    let pair = cli
        .json(&["sshkeys", "generate", "--algorithm", "ecdsa"])
        .await;
    let public = pair["publicKey"].as_str().expect("public key").to_owned();
    let private = pair["privateKey"].as_str().expect("private key");
    assert!(public.starts_with("ecdsa-sha2-nistp256 "), "{public}");
    assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    cli.file("id_ecdsa", private);
    let key = cli
        .json(&["sshkeys", "create", "--site", SITE, "--text", &public])
        .await;
    assert_eq!(key["artifactId"], SITE);

    // The scripts, each linking to the next by the id it got: what runs before and after the
    // installer, the kickstart that fetches both and trusts the key, the sub script that starts
    // the installer with it, and the main script's menu that chains the sub script.
    let preboot = cli
        .script(
            "prebootscripts",
            "#!/bin/sh\nlogger 'bootfleet: installer starting'\n",
        )
        .await;
    let postboot_text = format!(
        "#!/bin/sh\naddr=$(hostname -I | cut -d ' ' -f 1)\n\
         curl -fsS -X POST \"{api}/localnodes?ip=$addr&artifactId={SITE}&pingable=true\"\n"
    );
    let postboot = cli.script("postbootscripts", &postboot_text).await;
    let kickstart_text = format!(
        "text\nreboot\nlang en_US.UTF-8\nkeyboard us\ntimezone UTC\n\
         sshkey --username=root \"{public}\"\n\
         %pre\ncurl -fsS {api}/prebootscripts/{preboot} | sh\n%end\n\
         %post\ncurl -fsS -o /usr/local/sbin/postboot {api}/postbootscripts/{postboot}\n%end\n"
    );
    let kickstart = cli.script("kickstarts", &kickstart_text).await;
    let subscript = cli
        .script(
            "subscripts",
            &format!(
                "#!ipxe\nset repo http://mirror.example/os\n\
                 kernel ${{repo}}/vmlinuz inst.repo=${{repo}} inst.ks={api}/kickstarts/{kickstart}\n\
                 initrd ${{repo}}/initrd.img\nboot\n"
            ),
        )
        .await;
    let mainscript = cli
        .script(
            "mainscripts",
            &format!(
                "#!ipxe\nmenu Install\nitem os Install the OS\n\
                 choose --default os --timeout 3000 pick && goto ${{pick}}\n\
                 :os\nchain {api}/subscripts/{subscript}\n"
            ),
        )
        .await;
    let listed = cli
        .json(&["kickstarts", "list", "--search", &preboot])
        .await;
    assert_eq!(listed["total"], 1, "{listed}");
    let got = cli.json(&["mainscripts", "get", &mainscript]).await;
    assert!(got["text"].as_str().expect("text").contains(&subscript));

    // The network bootloaders for a site's distributor: iPXE for UEFI and BIOS, each embedding
    // the script that chains the main script.
    let embedded = format!("#!ipxe\ndhcp\nchain {api}/mainscripts/{mainscript}\n");
    let ipxe = |platform: &str, driver: &str, extension: &str| json!({"script": embedded, "platform": platform, "driver": driver, "extension": extension});
    let uefi = cli
        .build("ipxes", ipxe("bin-x86_64-efi", "ipxe", "efi"))
        .await;
    assert_eq!(
        uefi["url"],
        format!("/ipxes/{}/ipxe.efi", uefi["id"].as_str().expect("id"))
    );
    // The tutorial's BIOS `ipxe.kpxe` has no prebuilt binary in Debian: bad input (exit 2) at
    // once, naming the one that has; that one is built instead.
    let kpxe = cli.file(
        "kpxe.json",
        &ipxe("bin-x86_64-pcbios", "ipxe", "kpxe").to_string(),
    );
    expect_exit(
        &cli.run(&["ipxes", "create", "--file", &kpxe, "--follow"])
            .await,
        2,
        "bin-x86_64-pcbios/undionly.kpxe",
    );
    let bios = cli
        .build("ipxes", ipxe("bin-x86_64-pcbios", "undionly", "kpxe"))
        .await;
    assert!(
        bios["url"]
            .as_str()
            .expect("url")
            .ends_with("/undionly.kpxe"),
        "{bios}"
    );

    // The media bootloaders for the ISO: iPXE for UEFI again and a BIOS `ipxe.lkrn`, GRUB's image
    // and its x64 and x86 EFI builds, SYSLINUX's three files.
    let iso_uefi = cli
        .build("ipxes", ipxe("bin-x86_64-efi", "ipxe", "efi"))
        .await;
    let iso_bios = cli.build("ipxes", ipxe("bin", "ipxe", "lkrn")).await;
    let grub = |architecture: &str, fragment: &str| {
        json!({"label": LABEL, "platform": "x86_64-efi", "architecture": architecture,
               "extension": "efi", "fragment": fragment})
    };
    let grub_img = cli.build("grubs", grub("x64", "img")).await;
    let grub_x64 = cli.build("grubs", grub("x64", "efi")).await;
    let grub_x86 = cli.build("grubs", grub("x86", "efi")).await;
    let syslinux = |fragment: &str| json!({ "fragment": fragment });
    let ldlinux = cli.build("syslinuxs", syslinux("ldlinux.c32")).await;
    let isolinux = cli.build("syslinuxs", syslinux("isolinux.bin")).await;
    let isohdpfx = cli.build("syslinuxs", syslinux("isohdpfx.bin")).await;

    // Their status, as the tutorial checks it before going on: every one done.
    let ipxes = cli.json(&["ipxes", "list", "--page-size", "50"]).await;
    let rows = ipxes["rows"].as_array().expect("rows");
    assert!(rows.len() >= 3, "{ipxes}");
    assert!(rows.iter().all(|r| r["status"] == "done"), "{ipxes}");
    let img = grub_img["id"].as_str().expect("id");
    assert_eq!(cli.json(&["grubs", "get", img]).await["progress"], 100);

    // The ISO from their files (by the paths the rows report), followed to completion.
    let url = |row: &Value| row["url"].as_str().expect("url").to_owned();
    let iso = cli
        .build(
            "isos",
            json!({
                "label": LABEL,
                "ipxeUefiUrl": url(&iso_uefi),
                "ipxeBiosUrl": url(&iso_bios),
                "grubImgUrl": url(&grub_img),
                "grubEfiX64Url": url(&grub_x64),
                "grubEfiX86Url": url(&grub_x86),
                "ldLinuxUrl": url(&ldlinux),
                "isolinuxBinUrl": url(&isolinux),
                "isohdpfxBinUrl": url(&isohdpfx),
            }),
        )
        .await;
    let iso_id = iso["id"].as_str().expect("id").to_owned();

    // Downloaded with the CLI: it checks the size and SHA-256 the API reports and prints the
    // digest; the file's own digest is the same.
    let reported = cli.json(&["isos", "get", &iso_id]).await;
    let file = &reported["files"][0];
    let name = file["name"].as_str().expect("file name");
    let api_sha = file["sha256"].as_str().expect("sha256").to_owned();
    assert_eq!(reported["sha256"], api_sha.as_str());
    let target = cli.dir.path().join("dist.iso");
    let target_path = target.to_str().expect("utf-8");
    let download = cli
        .run(&["isos", "download", &iso_id, name, "-O", target_path])
        .await;
    assert_eq!(download.status.code(), Some(0), "{}", text(&download));
    assert_eq!(
        String::from_utf8_lossy(&download.stdout).trim_end(),
        format!("{api_sha}  {target_path}")
    );
    let bytes = std::fs::read(&target).expect("the downloaded iso");
    assert_eq!(bytes.len() as u64, file["size"].as_u64().expect("size"));
    let own: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(own, api_sha);
    assert!(!cli.dir.path().join("dist.iso.part").exists());
    // And it is the medium asked for: bootable from BIOS and UEFI, with the tutorial's label.
    let report = std::process::Command::new("xorriso")
        .args([
            "-indev",
            target_path,
            "-pvd_info",
            "-report_el_torito",
            "plain",
        ])
        .output()
        .expect("xorriso");
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.contains("BIOS") && report.contains("UEFI"),
        "{report}"
    );

    // The failure paths: a verb that does not exist (usage, 2), an ISO that does not exist (3),
    // a wrong token (4).
    expect_exit(&cli.run(&["isos", "burn", &iso_id]).await, 2, "burn");
    let missing = "00000000-0000-4000-8000-000000000000";
    expect_exit(&cli.run(&["isos", "get", missing]).await, 3, "hint:");
    expect_exit(
        &cli.run_as("not-a-token", &["isos", "list"]).await,
        4,
        "hint:",
    );
    system.stop().await;
}

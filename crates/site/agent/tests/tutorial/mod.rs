//! The original Cluster Platform Provisioner tutorial (`shared/seeds/002_*`), replayed request by
//! request, in its order, with its bodies as written: only the host, the ids (this system's are
//! UUIDs, the tutorial's are row numbers), the token and — where the tutorial tells the operator
//! to use their own — the private key are substituted. It runs against the whole system and a
//! real distributor of the tutorial's site (`felix.pojtinger.swabia.sol`) whose LAN interface is
//! the tutorial's `enp0s25` in `192.168.178.0/24`, with the tutorial's node at 192.168.178.102
//! running a real sshd. On SQLite and on PostgreSQL.
//!
//! One request is not taken as written on the default (prebuilt) iPXE backend: a BIOS `ipxe.kpxe`
//! needs iPXE compiled (Debian ships none). It is refused at once, naming `driver` and the
//! prebuilt alternative, and the replay goes on with that alternative, as an operator would.
//!
//! ```text
//!  lan ns:   br0
//!  infra ns: i0 10.77.0.2 (gateway :8080), enp0s25 192.168.178.2  nats, services, distributor
//!  node ns:  n0 192.168.178.102  sshd (no route anywhere else)
//! ```

use super::*;
use bootfleet_testkit::{database_url_for_lab, Backend};
use reqwest::Method;
use sha2::{Digest, Sha256};

const SITE: &str = "felix.pojtinger.swabia.sol";
/// The tutorial's gateway and file server, replaced by this lab's gateway.
const SEED_API: &str = "http://services.provisioner.sandbox.cloud.alphahorizon.io:30002";
const SEED_FILES: &str = "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003";
const NODE_IP: &str = "192.168.178.102";

/// The tutorial's request bodies, verbatim (the seed's JSON, host and all).
mod seed {
    pub const IPXE_UEFI: &str = r##"{
"script": "#!ipxe\ndhcp\nchain http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/mainscripts/1",
"platform": "bin-x86_64-efi",
"driver": "ipxe",
"extension": "efi"
}"##;
    pub const IPXE_BIOS_DISTRIBUTOR: &str = r##"{
"script": "#!ipxe\ndhcp\nchain http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/mainscripts/1",
"platform": "bin-x86_64-pcbios",
"driver": "ipxe",
"extension": "kpxe"
}"##;
    pub const IPXE_BIOS_ISO: &str = r##"{
"script": "#!ipxe\ndhcp\nchain http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/mainscripts/1",
"platform": "bin",
"driver": "ipxe",
"extension": "lkrn"
}"##;
    pub const GRUB_IMG: &str = r##"{
"label": "Cluster Platform Provisioner ISO",
"platform": "x86_64-efi",
"architecture": "x64",
"extension": "efi",
"fragment": "img"
}"##;
    pub const GRUB_X64: &str = r##"{
"label": "Cluster Platform Provisioner ISO",
"platform": "x86_64-efi",
"architecture": "x64",
"extension": "efi",
"fragment": "efi"
}"##;
    pub const GRUB_X86: &str = r##"{
"label": "Cluster Platform Provisioner ISO",
"platform": "x86_64-efi",
"architecture": "x86",
"extension": "efi",
"fragment": "efi"
}"##;
    pub const LDLINUX: &str = r##"{
"fragment": "ldlinux.c32"
}"##;
    pub const ISOLINUX: &str = r##"{
"fragment": "isolinux.bin"
}"##;
    pub const ISOHDPFX: &str = r##"{
"fragment": "isohdpfx.bin"
}"##;
    pub const MAINSCRIPT: &str = r##"{
"text": "#!ipxe\nmenu Choose Script\nitem mainsubscriptserver_fedora29 Main Sub Script Server Fedora 29\nchoose --default mainsubscriptserver_fedora29 --timeout 3000 server && goto ${server}\n:mainsubscriptserver_fedora29\nchain http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/subscripts/1"
}"##;
    pub const SUBSCRIPT: &str = r##"{
"text": "#!ipxe\nmenu Choose Script\nitem subscript Fedora 29\nchoose --default subscript --timeout 3000 subscript && goto ${subscript}\n:subscript\nset base http://dl.fedoraproject.org/pub/fedora/linux/releases/29/Server/x86_64/os\nkernel ${base}/images/pxeboot/vmlinuz initrd=initrd.img inst.repo=${base} inst.ks=http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/kickstarts/1\ninitrd ${base}/images/pxeboot/initrd.img\nboot"
}"##;
    pub const SSHKEY: &str = r##"{
"text": "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB69xaEXw3y8PZeV6mjkTfK8X3z/0GlWe5dzuWcccD8fVHFl6W+XZ6qN+a8h0RD6OcFbk1mYTyh8sV2KbyIFNBk= pojntfx@pojntfx-x230-fedora\n",
"artifactId": "felix.pojtinger.swabia.sol"
}"##;
    pub const KICKSTART: &str = r##"{
"text": "#platform=x86, AMD64, or Intel EM64T\n#version=DEVEL\n# Keyboard layouts\nkeyboard us\n# Root password\nrootpw --plaintext asdfasdf123$$44\nsshkey --username=root \"ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBB69xaEXw3y8PZeV6mjkTfK8X3z/0GlWe5dzuWcccD8fVHFl6W+XZ6qN+a8h0RD6OcFbk1mYTyh8sV2KbyIFNBk= pojntfx@pojntfx-x230-fedora\"\n# System language\nlang en_US\n# Reboot after installation\nreboot\n# System timezone\ntimezone Europe/Berlin\n# Use text mode install\ntext\n# Network information\nnetwork --bootproto=dhcp --device=enp0s25\n# Use network installation\nurl --url=\"http://dl.fedoraproject.org/pub/fedora/linux/releases/29/Server/x86_64/os\"\n# System authorization information\nauth --useshadow --passalgo=sha512\n# Firewall configuration\nfirewall --disabled\n# SELinux configuration\nselinux --enforcing\n# Do not configure the X Window System\nskipx\n\n# System bootloader configuration\nbootloader --location=mbr\n# Clear the Master Boot Record\nzerombr\n# Partition clearing information\nclearpart --all\n# Disk partitioning information\npart /boot --asprimary --fstype=\"ext4\" --size=512\npart / --asprimary --fstype=\"ext4\" --grow --size=1\n\n%pre\ncurl http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/prebootscripts/1 | bash\n%end\n\n%post\ncurl http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/postbootscripts/1 > /usr/local/bin/postboot.sh\nchmod 744 /usr/local/bin/postboot.sh\ncat << EOF > /etc/systemd/system/postboot.service\n[Unit]\nDescription=Run once\nRequires=network-online.target\nAfter=network-online.target\n[Service]\nExecStart=/usr/local/bin/postboot.sh\n[Install]\nWantedBy=multi-user.target\nEOF\nchmod 664 /etc/systemd/system/postboot.service\nsystemctl enable postboot\n%end\n\n%packages\n@standard\n\n%end \n"
}"##;
    pub const PREBOOTSCRIPT: &str = r##"{
"text": "#!/bin/bash\necho \"This could be the preboot script!\"\n"
}"##;
    pub const POSTBOOTSCRIPT: &str = r##"{
"text": "#!/bin/bash\nsudo dnf install openssh-server -y\nmkdir -p ~/.ssh\nsystemctl enable sshd\nip=$(echo $(ip -4 addr show | grep -Eo \"inet (addr:)?([0-9]*.){3}[0-9]*\" | grep -Eo \"([0-9]*.){3}[0-9]*\" | grep -v \"127.0.0.1\") | cut -d \" \" -f 1)\ncurl --request POST \"http://services.provisioner.sandbox.cloud.alphahorizon.io:30002/api/localnodes?ip=${ip}&artifactId=felix.pojtinger.swabia.sol&pingable=true\"\n"
}"##;
    pub const DISTRIBUTOR: &str = r##"{
"ipxePxeUefiUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/ipxes/bffaf7bb-b52f-4b19-99ba-d7d4fa25b28b/ipxe.efi",
"ipxePxeBiosUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/ipxes/cf6de9eb-2079-4708-98fc-6264f2a9c9af/ipxe.kpxe",
"artifactId": 1,
"device": "enp0s25",
"range": "192.168.178.1"
}"##;
    pub const DISTRIBUTOR_OFF: &str = r##"{
"on": false,
"artifactId": 1
}"##;
    pub const DISTRIBUTOR_ON: &str = r##"{
"on": true,
"artifactId": 1
}"##;
    pub const ISO: &str = r##"{
"label": "Cluster Platform Provisioner ISO",
"ipxeUefiUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/ipxes/1353f0e4-09b9-48b1-a4fb-f45532730c65/ipxe.efi",
"ipxeBiosUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/ipxes/eff537ee-bf99-48ea-be96-ed9ee08d62b9/ipxe.lkrn",
"grubImgUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/grubs/c23bee3a-ee2d-4f44-8223-86bed61b7940/grub.img",
"grubEfiX64Url": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/grubs/e8f68f77-5cb5-4a0a-8d47-fb31a73ea3bc/grub.zip",
"grubEfiX86Url": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/grubs/da39b0b5-d15c-41e8-ab8a-4cf710cf427d/grub.zip",
"ldLinuxUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/syslinuxs/83b15488-0ed5-4ee3-8352-5e3cecc87423/ldlinux.c32",
"isolinuxBinUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/syslinuxs/b9771721-53bf-4dcb-a094-1a901a9203b9/isolinux.bin",
"isohdpfxBinUrl": "http://services.provisioner.sandbox.cloud.alphahorizon.io:30003/syslinuxs/dc68e8f5-900c-49ff-a376-e84b7c806056/isohdpfx.bin"
}"##;
    pub const GLOBALNODE: &str = r##"{
"script": "curl https://install.zerotier.com/ | sudo bash\nzerotier-cli join 1c33c1ced0d02ef9\nip a | grep zt",
"privateKey": "(the private key the operator got from /api/sshkey)"
}"##;
}

/// A seed body with the tutorial's hosts replaced by this lab's gateway.
fn body(seed: &str) -> Value {
    let text = seed.replace(SEED_API, GATEWAY).replace(SEED_FILES, GATEWAY);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("seed body is JSON ({e}): {text}"))
}

/// The tutorial's file URL for an artifact row (`http://<files>/ipxes/<id>/ipxe.efi`), with this
/// lab's host and the row's own id and file.
fn file_url(row: &Value) -> String {
    format!("{GATEWAY}{}", row["url"].as_str().expect("url"))
}

struct Replay {
    admin: String,
}

impl Replay {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        api(method, path.to_owned(), self.admin.clone(), body).await
    }

    /// `POST /api/<collection>` with a seed body: 201, the row.
    async fn create(&self, collection: &str, seed: &str) -> Value {
        let (status, row) = self
            .send(
                Method::POST,
                &format!("/api/{collection}"),
                Some(body(seed)),
            )
            .await;
        assert_eq!(status, 201, "POST /api/{collection}: {row}");
        row
    }

    /// `GET` of one row, 200.
    async fn get(&self, collection: &str, id: &Value) -> Value {
        let id = id.as_str().expect("id");
        let (status, row) = self
            .send(Method::GET, &format!("/api/{collection}/{id}"), None)
            .await;
        assert_eq!(status, 200, "GET /api/{collection}/{id}: {row}");
        row
    }

    /// The tutorial: "check whether they are actually done (have a progress of 100)".
    async fn done(&self, collection: &str, row: &Value) -> Value {
        for _ in 0..600 {
            let now = self.get(collection, &row["id"]).await;
            assert_ne!(now["status"], "failed", "{collection}: {now}");
            if now["progress"] == 100 {
                assert_eq!(now["status"], "done", "{now}");
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{collection} {} never reached progress 100", row["id"]);
    }
}

fn replay(backend: Backend) {
    let database_dir = tempfile::tempdir().expect("tempdir");
    // Before entering the namespaces: the shared PostgreSQL must start outside them.
    let database_url = database_url_for_lab(backend, database_dir.path());
    let mut lab = NetLab::new();
    let infra_ns = lab.host("infra", "i0", "10.77.0.2/24", None);
    lab.host("infra", "enp0s25", "192.168.178.2/24", None);
    let node_ns = lab.host("node", "n0", &format!("{NODE_IP}/24"), None);
    // The tutorial's script for the node fetches from the internet; the node can reach nothing
    // outside the lab (no default route), so it fails there and sends nothing anywhere.
    let routes = lab
        .command(&node_ns, "ip")
        .args(["route", "show", "default"])
        .output()
        .expect("ip route");
    assert!(routes.stdout.is_empty(), "the node namespace has a way out");
    let lab = &lab;
    lab.run_in(&infra_ns, || {
        runtime().block_on(async {
            let infra = Infra::start_on(Some(database_url)).await;
            let (nats, dir) = (&infra.nats, infra.dir.path());
            let replay = Replay {
                admin: infra.token(Role::Admin),
            };
            let cache = dir.join("site-cache");
            std::fs::create_dir_all(&cache).expect("cache");
            let _distributor = ChildGuard(
                distributor(nats.url(), &cache)
                    .env("DISTRIBUTOR_ARTIFACT_ID", SITE)
                    .args(["--heartbeat-secs", "1"])
                    .spawn()
                    .expect("start the distributor"),
            );

            // Create Network Distributable.
            let uefi_dist = replay.create("ipxes", seed::IPXE_UEFI).await;
            let (status, refused) = replay
                .send(
                    Method::POST,
                    "/api/ipxes",
                    Some(body(seed::IPXE_BIOS_DISTRIBUTOR)),
                )
                .await;
            assert_eq!(status, 400, "{refused}");
            assert_eq!(refused["error"]["field"], "driver", "{refused}");
            let message = refused["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("bin-x86_64-pcbios/undionly.kpxe")
                    && message.contains("BOOTFLEET_IPXE_SOURCE"),
                "the refusal names the alternative and the compile backend: {message}"
            );
            let mut undionly = body(seed::IPXE_BIOS_DISTRIBUTOR);
            undionly["driver"] = json!("undionly");
            let (status, bios_dist) = replay
                .send(Method::POST, "/api/ipxes", Some(undionly))
                .await;
            assert_eq!(status, 201, "{bios_dist}");
            // Create Media Distributable.
            let uefi_iso = replay.create("ipxes", seed::IPXE_UEFI).await;
            let bios_iso = replay.create("ipxes", seed::IPXE_BIOS_ISO).await;
            let grub_img = replay.create("grubs", seed::GRUB_IMG).await;
            let grub_x64 = replay.create("grubs", seed::GRUB_X64).await;
            let grub_x86 = replay.create("grubs", seed::GRUB_X86).await;
            let ldlinux = replay.create("syslinuxs", seed::LDLINUX).await;
            let isolinux = replay.create("syslinuxs", seed::ISOLINUX).await;
            let isohdpfx = replay.create("syslinuxs", seed::ISOHDPFX).await;

            // Prestart Runtime Configuration.
            let mainscript = replay.create("mainscripts", seed::MAINSCRIPT).await;
            let subscript = replay.create("subscripts", seed::SUBSCRIPT).await;
            let (status, pair) = replay
                .send(Method::GET, "/api/sshkey?algorithm=ecdsa", None)
                .await;
            assert_eq!(status, 200, "{pair}");
            assert!(
                pair["publicKey"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("ecdsa-sha2-nistp256 ")),
                "{pair}"
            );
            let private_key = pair["privateKey"].as_str().expect("privateKey").to_owned();
            assert!(
                private_key.ends_with('\n'),
                "the newline the tutorial warns of"
            );
            let sshkey = replay.create("sshkeys", seed::SSHKEY).await;
            let kickstart = replay.create("kickstarts", seed::KICKSTART).await;
            let prebootscript = replay.create("prebootscripts", seed::PREBOOTSCRIPT).await;
            let postbootscript = replay.create("postbootscripts", seed::POSTBOOTSCRIPT).await;

            // Distribute Network Distributable: every registry gives back what was stored.
            for (collection, row, seed) in [
                ("mainscripts", &mainscript, seed::MAINSCRIPT),
                ("subscripts", &subscript, seed::SUBSCRIPT),
                ("sshkeys", &sshkey, seed::SSHKEY),
                ("kickstarts", &kickstart, seed::KICKSTART),
                ("prebootscripts", &prebootscript, seed::PREBOOTSCRIPT),
                ("postbootscripts", &postbootscript, seed::POSTBOOTSCRIPT),
            ] {
                // As the tutorial's curl gets it: the stored text itself (what iPXE, anaconda or
                // a node's shell fetches), or its row as JSON.
                let id = row["id"].as_str().expect("id");
                let got = reqwest::Client::new()
                    .get(format!("{GATEWAY}/api/{collection}/{id}"))
                    .bearer_auth(&replay.admin)
                    .send()
                    .await
                    .expect("get");
                assert_eq!(got.status(), 200, "{collection}");
                let json = got
                    .headers()
                    .get("content-type")
                    .is_some_and(|t| t.as_bytes().starts_with(b"application/json"));
                let text = got.text().await.expect("text");
                let text = if json {
                    serde_json::from_str::<Value>(&text).expect("json")["text"]
                        .as_str()
                        .expect("text")
                        .to_owned()
                } else {
                    text
                };
                assert_eq!(
                    text,
                    body(seed)["text"].as_str().expect("seed text"),
                    "{collection}"
                );
            }
            // "Get private SSH key" (`/api/sshkeys/2`): this system keeps public keys only, as
            // the tutorial itself asks ("DO NOT UPLOAD THIS KEY"); there is no second row.
            let (status, list) = replay.send(Method::GET, "/api/sshkeys", None).await;
            assert_eq!(status, 200, "{list}");
            assert_eq!(list["total"], 1, "{list}");
            let (status, list) = replay.send(Method::GET, "/api/ipxes", None).await;
            assert_eq!(status, 200, "{list}");
            assert_eq!(list["total"], 4, "{list}");

            let mut distributor_row = Value::Null;
            for _ in 0..100 {
                let (status, list) = replay
                    .send(
                        Method::GET,
                        &format!("/api/distributors?search={SITE}&searchFields=artifactId"),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{list}");
                if list["rows"][0]["online"] == true {
                    distributor_row = list["rows"][0].clone();
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(distributor_row["artifactId"], SITE, "{distributor_row}");
            let distributor_id = distributor_row["id"].as_str().expect("id").to_owned();

            // Update UEFI and BIOS iPXEs on distributor: the tutorial's body, its URLs naming
            // this system's rows; `"artifactId": 1` and `"range": "192.168.178.1"` as written.
            let uefi_dist = replay.done("ipxes", &uefi_dist).await;
            let bios_dist = replay.done("ipxes", &bios_dist).await;
            let mut configure = body(seed::DISTRIBUTOR);
            configure["ipxePxeUefiUrl"] = json!(file_url(&uefi_dist));
            configure["ipxePxeBiosUrl"] = json!(file_url(&bios_dist));
            let (status, configured) = replay
                .send(
                    Method::PUT,
                    &format!("/api/distributors/{distributor_id}"),
                    Some(configure),
                )
                .await;
            assert_eq!(status, 200, "{configured}");
            assert_eq!(configured["device"], "enp0s25", "{configured}");
            let served = configured["bootFiles"].as_array().expect("bootFiles");
            for role in ["uefi_x64", "bios"] {
                assert!(served.iter().any(|f| f["role"] == role), "{configured}");
            }
            // Update distributor status to off, then on.
            for (seed, on) in [(seed::DISTRIBUTOR_OFF, false), (seed::DISTRIBUTOR_ON, true)] {
                let (status, row) = replay
                    .send(
                        Method::PUT,
                        &format!("/api/distributors/{distributor_id}/status"),
                        Some(body(seed)),
                    )
                    .await;
                assert_eq!(status, 200, "{row}");
                assert_eq!(row["on"], on, "{row}");
            }

            // Distribute Media Distributable: each part done, then the ISO from their URLs.
            let parts = [
                ("ipxes", &uefi_iso, "ipxeUefiUrl"),
                ("ipxes", &bios_iso, "ipxeBiosUrl"),
                ("grubs", &grub_img, "grubImgUrl"),
                ("grubs", &grub_x64, "grubEfiX64Url"),
                ("grubs", &grub_x86, "grubEfiX86Url"),
                ("syslinuxs", &ldlinux, "ldLinuxUrl"),
                ("syslinuxs", &isolinux, "isolinuxBinUrl"),
                ("syslinuxs", &isohdpfx, "isohdpfxBinUrl"),
            ];
            let mut iso_body = body(seed::ISO);
            for (collection, row, field) in parts {
                let done = replay.done(collection, row).await;
                iso_body[field] = json!(file_url(&done));
            }
            let (status, iso) = replay.send(Method::POST, "/api/isos", Some(iso_body)).await;
            assert_eq!(status, 201, "{iso}");
            let iso = replay.done("isos", &iso).await;
            let url = file_url(&iso);
            assert!(url.ends_with("/dist.iso"), "{iso}");
            let bytes = reqwest::Client::new()
                .get(&url)
                .bearer_auth(&replay.admin)
                .send()
                .await
                .expect("download")
                .bytes()
                .await
                .expect("bytes");
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(
                iso["sha256"],
                digest.as_str(),
                "the ISO as the API reports it"
            );
            // Its volume id is the label as written.
            assert_eq!(
                &bytes[0x8028..0x8028 + 32],
                format!("{:<32}", "Cluster Platform Provisioner ISO").as_bytes()
            );

            // The node's postbootscript registers it (its curl, with a node token).
            let (status, node) = api(
                Method::POST,
                format!("/api/localnodes?ip={NODE_IP}&artifactId={SITE}&pingable=true"),
                infra.token(Role::Node),
                None,
            )
            .await;
            assert_eq!(status, 201, "{node}");
            // Get Localnodes, Get Localnode.
            let (status, list) = replay.send(Method::GET, "/api/localnodes", None).await;
            assert_eq!(status, 200, "{list}");
            assert_eq!(list["rows"][0]["ip"], NODE_IP, "{list}");
            let node = replay.get("localnodes", &node["id"]).await;
            assert_eq!(node["artifactId"], SITE, "{node}");

            // Create Globalnode from Localnode: the tutorial's script, the operator's private
            // key, through the site's distributor to the node's sshd.
            let sshd = Sshd::start_in(
                lab,
                &node_ns,
                format!("{NODE_IP}:22").parse().expect("addr"),
                pair["publicKey"].as_str().expect("publicKey"),
            );
            let mut globalnode = body(seed::GLOBALNODE);
            globalnode["privateKey"] = json!(private_key);
            let (status, ran) = replay
                .send(
                    Method::PUT,
                    &format!(
                        "/api/localnodes/{}/script",
                        node["id"].as_str().expect("id")
                    ),
                    Some(globalnode),
                )
                .await;
            assert_eq!(status, 200, "{ran}\nsshd:\n{}", sshd.log());
            // No zerotier here (and no internet): `ip a | grep zt` finds nothing, exit 1.
            assert_eq!(ran["exitCode"], 1, "{ran}");
            assert!(
                ran["stderr"].is_string() && ran["stdout"].is_string(),
                "{ran}"
            );
            drop(sshd);
            infra.system.stop().await;
        });
    });
}

#[test]
fn the_tutorial_replays_as_written_on_sqlite() {
    replay(Backend::Sqlite);
}

#[test]
fn the_tutorial_replays_as_written_on_postgres() {
    replay(Backend::Postgres);
}

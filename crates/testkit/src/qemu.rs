//! QEMU guests that network-boot on a [`NetLab`](crate::netlab::NetLab) bridge, with their
//! serial console captured to a file. TCG only (no KVM on these machines). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netlab::NetLab;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM (Debian `ipxe-qemu`): the ROM does the PXE boot.
    Bios,
    /// OVMF with the NIC's option ROM removed: the firmware's own UEFI PXE (arch 7).
    Uefi,
}

#[derive(Debug)]
pub struct Qemu {
    child: Child,
    serial: PathBuf,
    dir: tempfile::TempDir,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

impl Qemu {
    /// Boots from the network through tap `tap` (already on the lab's bridge) with `mac`.
    pub fn netboot(lab: &NetLab, tap: &str, mac: &str, firmware: Firmware) -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        let serial = dir.path().join("serial.log");
        let mut cmd = lab.command(&lab.ns("lan"), "qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            "256",
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ]);
        match firmware {
            Firmware::Bios => {
                cmd.args([
                    "-boot",
                    "n",
                    "-device",
                    &format!("e1000,netdev=n0,mac={mac}"),
                ]);
            }
            Firmware::Uefi => {
                let vars = dir.path().join("OVMF_VARS.fd");
                std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF vars (apt-get install ovmf)");
                cmd.args([
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                ])
                .args([
                    "-drive",
                    &format!("if=pflash,format=raw,file={}", vars.display()),
                ])
                .args([
                    "-device",
                    &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
                ]);
            }
        }
        let log = std::fs::File::create(dir.path().join("qemu.log")).expect("log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86 ipxe-qemu ovmf)");
        Qemu { child, serial, dir }
    }

    /// What the guest printed on its serial console so far.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console shows `needle`, at most `within`.
    pub fn wait_for_serial(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.serial().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! QEMU guests that network-boot on a [`NetLab`](crate::netlab::NetLab) bridge, with their
//! serial console captured to a file. TCG only (no KVM on these machines). Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use crate::netlab::NetLab;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE option ROM (Debian `ipxe-qemu`): the ROM does the PXE boot.
    Bios,
    /// OVMF with the NIC's option ROM removed: the firmware's own UEFI PXE (arch 7).
    Uefi,
}

/// The hardware of a [`Qemu::netboot_machine`] guest.
#[derive(Clone, Debug)]
pub struct MachineSpec {
    pub cpus: u32,
    pub memory_mib: u32,
    /// A raw disk image, used (and written) in place.
    pub disk: PathBuf,
}

#[derive(Debug)]
pub struct Qemu {
    child: Child,
    serial: PathBuf,
    dir: tempfile::TempDir,
}

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// What a [`Qemu::local`] guest boots from.
#[derive(Clone, Debug)]
pub enum LocalBoot {
    /// An ISO attached as a CD-ROM (IDE on SeaBIOS, AHCI on OVMF).
    Cdrom(PathBuf),
    /// An image attached as a (read-only snapshot) hard disk: how a USB stick or a `dd`-ed disk looks.
    Disk(PathBuf),
    /// QEMU loads the kernel and initrd itself (no firmware boot path), with this command line.
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// The address inside a [`Qemu::local`] guest's network at which the host's forwarded loopback
/// port answers (`http://10.0.2.100/...` reaches `127.0.0.1:<port>`).
pub const GUEST_FORWARD_ADDR: &str = "10.0.2.100";

/// The NIC model of a [`Qemu::local_with_nic`] guest (always without option ROM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalNic {
    E1000,
    VirtioNet,
}

impl LocalNic {
    fn device(self) -> &'static str {
        match self {
            LocalNic::E1000 => "e1000,netdev=n0,romfile=",
            LocalNic::VirtioNet => "virtio-net-pci,netdev=n0,romfile=",
        }
    }
}

impl Qemu {
    /// Boots from the network through tap `tap` (already on the lab's bridge) with `mac`.
    pub fn netboot(lab: &NetLab, tap: &str, mac: &str, firmware: Firmware) -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        let cmd = netboot_command(lab, tap, mac, firmware, "");
        Self::spawn(cmd, dir, firmware)
    }

    /// A machine of the lab (issue 15): boots from the network through `tap` with `mac`, with
    /// `cpus` vCPUs, `memory_mib` of RAM and `disk` (a raw image, written in place) as a
    /// virtio-blk disk. BIOS: SeaBIOS tries the NIC first (`-boot n`) and the disk after;
    /// UEFI: the NIC is boot option 1 and the disk 2 (`bootindex`), so PXE always comes first
    /// and the distributor decides. `-no-reboot`: a reboot ends QEMU; boot again to go on.
    pub fn netboot_machine(
        lab: &NetLab,
        tap: &str,
        mac: &str,
        firmware: Firmware,
        machine: &MachineSpec,
    ) -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = netboot_command(lab, tap, mac, firmware, ",bootindex=1");
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=none,id=d0",
            machine.disk.display()
        ));
        cmd.args([
            "-device",
            match firmware {
                Firmware::Bios => "virtio-blk-pci,drive=d0",
                Firmware::Uefi => "virtio-blk-pci,drive=d0,bootindex=2",
            },
        ]);
        cmd.args(["-smp", &machine.cpus.to_string()]);
        Self::spawn_with_memory(cmd, dir, firmware, machine.memory_mib)
    }

    /// Boots `boot` on this host with QEMU's user network in `restrict=on` mode: the guest gets an
    /// address from QEMU's internal DHCP, cannot reach anything, except that TCP to
    /// [`GUEST_FORWARD_ADDR`]:80 is forwarded to `127.0.0.1:forward_port` (one `socat` per
    /// connection: a `tcp:` chardev would carry only one connection). Nothing touches a real
    /// interface. The NIC is an e1000 without option ROM (so the firmware boots the medium).
    pub fn local(boot: &LocalBoot, firmware: Firmware, forward_port: u16) -> Qemu {
        Self::local_with_nic(boot, firmware, forward_port, LocalNic::E1000)
    }

    /// [`Qemu::local`] with the given NIC model instead of the e1000.
    pub fn local_with_nic(
        boot: &LocalBoot,
        firmware: Firmware,
        forward_port: u16,
        nic: LocalNic,
    ) -> Qemu {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-netdev",
            &format!(
                "user,id=n0,restrict=on,guestfwd=tcp:{GUEST_FORWARD_ADDR}:80-cmd:socat - TCP:127.0.0.1:{forward_port}"
            ),
            // No option ROM: the firmware must boot the medium, not try PXE; the iPXE on the medium
            // and Linux both drive an e1000 natively.
            "-device",
            nic.device(),
        ]);
        match boot {
            LocalBoot::Cdrom(iso) => {
                cmd.arg("-drive").arg(format!(
                    "file={},media=cdrom,readonly=on,format=raw",
                    iso.display()
                ));
                cmd.args(["-boot", "d"]);
            }
            LocalBoot::Disk(image) => {
                cmd.arg("-drive").arg(format!(
                    "file={},if=ide,format=raw,snapshot=on",
                    image.display()
                ));
                cmd.args(["-boot", "c"]);
            }
            LocalBoot::Kernel {
                kernel,
                initrd,
                append,
            } => {
                cmd.arg("-kernel").arg(kernel);
                cmd.arg("-initrd").arg(initrd);
                cmd.arg("-append").arg(append);
            }
        }
        Self::spawn(cmd, dir, firmware)
    }

    fn spawn(cmd: Command, dir: tempfile::TempDir, firmware: Firmware) -> Qemu {
        Self::spawn_with_memory(cmd, dir, firmware, 256)
    }

    fn spawn_with_memory(
        mut cmd: Command,
        dir: tempfile::TempDir,
        firmware: Firmware,
        memory_mib: u32,
    ) -> Qemu {
        let serial = dir.path().join("serial.log");
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            &memory_mib.to_string(),
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()));
        if firmware == Firmware::Uefi {
            let vars = dir.path().join("OVMF_VARS.fd");
            std::fs::copy(OVMF_VARS, &vars).expect("copy OVMF vars (apt-get install ovmf)");
            cmd.args([
                "-drive",
                &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
            ])
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
        }
        let child = crate::spawn_logged(
            &mut cmd,
            &dir.path().join("qemu.log"),
            "qemu-system-x86_64 (apt-get install qemu-system-x86 ipxe-qemu ovmf)",
        );
        Qemu { child, serial, dir }
    }

    /// What the guest printed on its serial console so far.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    /// Waits until the serial console shows `needle`, at most `within`.
    pub fn wait_for_serial(&self, needle: &str, within: Duration) -> bool {
        crate::wait_until(within, Duration::from_millis(100), || {
            self.serial().contains(needle)
        })
    }

    /// Panics, showing the serial console, unless it shows `needle` within `within`.
    pub fn expect_serial(&self, needle: &str, within: Duration) {
        assert!(
            self.wait_for_serial(needle, within),
            "no {needle:?} within {within:?}; serial:\n{}",
            self.serial()
        );
    }

    /// Whether QEMU has ended (the guest powered off or rebooted under `-no-reboot`).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until QEMU ends, at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.exited() {
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

/// QEMU in the lab's `lan` namespace, booting from its NIC on tap `tap` with `mac` (UEFI: a
/// virtio NIC without option ROM, `uefi_nic` appended to its options).
fn netboot_command(
    lab: &NetLab,
    tap: &str,
    mac: &str,
    firmware: Firmware,
    uefi_nic: &str,
) -> Command {
    let mut cmd = lab.command(&lab.ns("lan"), "qemu-system-x86_64");
    cmd.args([
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
    ]);
    match firmware {
        Firmware::Bios => cmd.args([
            "-boot",
            "n",
            "-device",
            &format!("e1000,netdev=n0,mac={mac}"),
        ]),
        Firmware::Uefi => cmd.args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},romfile={uefi_nic}"),
        ]),
    };
    cmd
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

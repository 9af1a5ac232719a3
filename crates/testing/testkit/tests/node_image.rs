//! The node guest: Debian's kernel plus the test initramfs boots under QEMU, gets an address from
//! QEMU's DHCP, and POSTs its registration (with the bearer token) to the host. If this fails, no
//! test that waits for a node to register can mean anything.

use std::process::Command;
use std::time::{Duration, Instant};

use bootfleet_testkit::http_recorder::HttpRecorder;
use bootfleet_testkit::node_image::{NodeImage, FAILED_MARKER, REGISTERED_MARKER};
use bootfleet_testkit::qemu::{Firmware, LocalBoot, LocalNic, Qemu, GUEST_FORWARD_ADDR};

/// Generous for TCG on a busy 2-core machine; a registration takes ~10 s when idle.
const BOOT_BOUND: Duration = Duration::from_secs(90);

fn image() -> NodeImage {
    let started = Instant::now();
    let image = NodeImage::get();
    eprintln!(
        "NodeImage::get() took {:?} (kernel {})",
        started.elapsed(),
        image.kernel_version()
    );
    image
}

/// Which of the image's kernels QEMU starts.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// Debian's bzImage as shipped (decompresses itself in the guest).
    BzImage,
    /// The decompressed ELF through QEMU's PVH entry.
    Vmlinux,
}

/// The kernel command line that makes the node register at `tail` of the host as the guest
/// reaches it (`GUEST_FORWARD_ADDR`), for `site` with `token`.
fn register_at(tail: &str, site: &str, token: &str) -> String {
    NodeImage::cmdline(&format!("http://{GUEST_FORWARD_ADDR}{tail}"), site, token)
}

fn boot(
    image: &NodeImage,
    kernel: Kernel,
    nic: LocalNic,
    append: String,
    port: u16,
) -> (Qemu, Instant) {
    let boot = LocalBoot::Kernel {
        kernel: match kernel {
            Kernel::BzImage => image.kernel.clone(),
            Kernel::Vmlinux => image.vmlinux.clone(),
        },
        initrd: image.initrd.clone(),
        append,
    };
    let started = Instant::now();
    (
        Qemu::local_with_nic(&boot, Firmware::Bios, port, nic),
        started,
    )
}

fn registers_over(nic: LocalNic, kernel: Kernel) {
    let image = image();
    let recorder = HttpRecorder::start("ok");
    let append = register_at("/api/localnodes", "site-1", "tok-123.abc");
    let (qemu, started) = boot(&image, kernel, nic, append, recorder.port());
    let request = recorder.wait_for("/api/localnodes", BOOT_BOUND);
    let elapsed = started.elapsed();
    let Some(request) = request else {
        panic!(
            "{nic:?}/{kernel:?}: no registration within {BOOT_BOUND:?}.\nserial:\n{}",
            qemu.serial()
        );
    };
    eprintln!("{nic:?}/{kernel:?}: QEMU start → registration POST: {elapsed:?}");
    assert_eq!(request.method, "POST", "serial:\n{}", qemu.serial());
    assert_eq!(
        request.target,
        "/api/localnodes?ip=10.0.2.15&artifactId=site-1",
        "serial:\n{}",
        qemu.serial()
    );
    assert_eq!(
        request.header("authorization"),
        Some("Bearer tok-123.abc"),
        "{request:?}"
    );
    assert!(request.body.is_empty(), "{request:?}");
    let registered = format!("{REGISTERED_MARKER}10.0.2.15");
    qemu.expect_serial(&registered, Duration::from_secs(30));
    // It powers off afterwards (the kernel prints this right before QEMU exits).
    qemu.expect_serial("reboot: Power down", Duration::from_secs(30));
    assert_eq!(recorder.requests().len(), 1, "{:?}", recorder.requests());
}

#[test]
fn node_registers_over_e1000_booting_the_shipped_kernel() {
    registers_over(LocalNic::E1000, Kernel::BzImage);
}

#[test]
fn node_registers_over_virtio_net_booting_vmlinux() {
    registers_over(LocalNic::VirtioNet, Kernel::Vmlinux);
}

#[test]
fn node_reports_a_failed_registration_and_powers_off() {
    let image = image();
    let recorder = HttpRecorder::start("ok");
    // Port 81 is not forwarded: QEMU's restricted network refuses the connection.
    let append = register_at(":81/api/localnodes?x=1", "a b", "");
    assert!(append.contains("bootfleet.artifact=a%20b "), "{append}");
    let (qemu, started) = boot(
        &image,
        Kernel::Vmlinux,
        LocalNic::E1000,
        append,
        recorder.port(),
    );
    qemu.expect_serial(FAILED_MARKER, BOOT_BOUND);
    let serial = qemu.serial();
    let line = serial.lines().find(|l| l.contains(FAILED_MARKER));
    eprintln!(
        "after {:?}: {}",
        started.elapsed(),
        line.unwrap_or_default()
    );
    assert!(
        serial
            .contains("POST http://10.0.2.100:81/api/localnodes?x=1&ip=10.0.2.15&artifactId=a%20b"),
        "serial:\n{serial}"
    );
    assert!(!serial.contains(REGISTERED_MARKER), "serial:\n{serial}");
    qemu.expect_serial("reboot: Power down", Duration::from_secs(30));
    assert!(recorder.requests().is_empty());
}

#[test]
fn image_is_cached_and_initrd_is_a_newc_archive() {
    let first = image();
    let started = Instant::now();
    assert_eq!(NodeImage::get(), first);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(first.kernel.is_file() && first.initrd.is_file());
    // Debian's kernel has a PVH entry, so the fast path is really taken.
    assert_ne!(first.vmlinux, first.kernel);
    let elf = std::fs::read(&first.vmlinux).expect("read vmlinux");
    assert!(elf.starts_with(b"\x7fELF"));
    let kver = first.kernel_version();
    assert!(kver.ends_with("-amd64"), "{kver}");
    assert!(first.kernel.starts_with(
        first
            .initrd
            .parent()
            .expect("initrd lives in the kernel's directory")
    ));

    // GNU cpio reads what the kernel will unpack.
    let out = Command::new("cpio")
        .args(["-it", "--quiet", "-F"])
        .arg(&first.initrd)
        .output()
        .expect("run cpio (apt-get install cpio)");
    assert!(out.status.success(), "{out:?}");
    let listing = String::from_utf8_lossy(&out.stdout);
    for entry in [
        "init",
        "bin/busybox",
        "bin/sh",
        "dev/console",
        "etc/bootfleet/udhcpc.script",
        "etc/bootfleet/modules",
        // Their dependencies vary by kernel (Debian 13 builds virtio_pci in).
        "lib/modules/e1000.ko",
        "lib/modules/virtio_net.ko",
    ] {
        assert!(listing.lines().any(|l| l == entry), "{entry}:\n{listing}");
    }
}

#[test]
fn cmdline_carries_the_registration() {
    let line = NodeImage::cmdline("http://10.0.2.100/api/localnodes", "site-1", "t0k");
    assert!(line.contains("console=ttyS0"), "{line}");
    assert!(
        line.contains("bootfleet.register=http://10.0.2.100/api/localnodes "),
        "{line}"
    );
    assert!(line.contains("bootfleet.artifact=site-1 "), "{line}");
    assert!(line.ends_with("bootfleet.token=t0k"), "{line}");
}

#[test]
#[should_panic(expected = "must be printable ASCII without spaces")]
fn cmdline_refuses_a_token_the_kernel_would_split() {
    NodeImage::cmdline("http://10.0.2.100/api/localnodes", "site-1", "two words");
}

//! A "node" guest for tests: Debian's Linux kernel plus a tiny busybox initramfs that, once booted,
//! configures its network by DHCP and registers itself with Bootfleet's REST API the way a freshly
//! installed host does, then powers off.
//!
//! Nothing of it is committed: [`NodeImage::get`] downloads the kernel package that Debian's
//! `linux-image-amd64` depends on (`apt-get download`, no installation), keeps the kernel and the
//! NIC modules (`e1000`, `virtio_net` and their dependencies) in a cache, and writes the initramfs
//! (a newc cpio, written here) next to them. Later calls, from any test binary, reuse the cache
//! without touching apt.
//!
//! Cache: `$XDG_CACHE_HOME` (or `~/.cache`) `/bootfleet-test/node-image/<kernel version>/`. Delete
//! that directory to pick up a newer Debian kernel. `BOOTFLEET_NODE_KERNEL_PACKAGE=<package>`
//! (e.g. a Debian 13 `linux-image-…-amd64`) uses that kernel package instead of the default one.
//!
//! ```no_run
//! use bootfleet_testkit::node_image::NodeImage;
//! use bootfleet_testkit::qemu::{Firmware, LocalBoot, Qemu};
//! let image = NodeImage::get();
//! let append = NodeImage::cmdline("http://10.0.2.100/api/localnodes", "site-1", "secret");
//! let boot = LocalBoot::Kernel { kernel: image.kernel, initrd: image.initrd, append };
//! let _guest = Qemu::local(&boot, Firmware::Bios, 8080);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Printed on the console, followed by the guest's IPv4 address, once the POST succeeded.
pub const REGISTERED_MARKER: &str = "bootfleet-node: registered ";
/// Printed on the console, followed by the reason, when a step failed (the guest then powers off).
pub const FAILED_MARKER: &str = "bootfleet-node: failed: ";
/// Printed once `bootfleet.mode=inventory` posted the inventory (the guest then powers off).
pub const INVENTORY_MARKER: &str = "bootfleet-node: inventory posted";
/// Printed once `bootfleet.mode=install` wrote the disk and posted `installed` (then it reboots).
pub const INSTALLED_MARKER: &str = "bootfleet-node: installed, callback posted";

/// The kernel and initramfs of a node guest, ready for `qemu -kernel … -initrd …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeImage {
    /// Debian's kernel as shipped (`/boot/vmlinuz-*`, a bzImage): boots everywhere (iPXE, OVMF,
    /// QEMU `-kernel`).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The same kernel decompressed to its ELF `vmlinux`, which QEMU's `-kernel` starts through
    /// its PVH entry point under SeaBIOS ([`Firmware::Bios`](crate::qemu::Firmware::Bios)). It
    /// spares the guest decompressing itself, ~8 s of a ~17 s TCG boot. Neither OVMF nor iPXE can
    /// boot it: use [`kernel`](Self::kernel) there. Equal to `kernel` if the kernel has no PVH entry.
    pub vmlinux: PathBuf,
}

/// The modules the initramfs loads; their dependencies (from each module's `.modinfo`) are added
/// and loaded first. `virtio_pci` is the bus driver `virtio_net` needs but does not depend on.
/// `virtio_blk` for the disk the test installer writes (the lab's machine guests have a
/// virtio-blk disk, `/dev/vda`).
const ROOT_MODULES: &[&str] = &["e1000", "virtio_pci", "virtio_net", "virtio_blk"];

/// The Debian metapackage whose dependency is the current kernel package.
const KERNEL_METAPACKAGE: &str = "linux-image-amd64";

/// Busybox from Debian's `busybox-static` (a dynamically linked one cannot run in the initramfs).
const BUSYBOX: &str = "/bin/busybox";

/// Bumped when the cache layout or the way the kernel directory is built changes.
const LAYOUT_VERSION: &str = "2";

/// Runs as PID 1 inside the guest (busybox ash). Every step is bounded; every way out prints a
/// marker and powers off, so a test never waits on a silent guest.
const INIT_SCRIPT: &str = r#"#!/bin/sh
# Bootfleet test node: DHCP, register with Bootfleet's REST API, power off.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /etc /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
# Applet links (busybox finds itself through /proc/self/exe).
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

say() { echo "bootfleet-node: $*"; }
fail() {
  say "failed: $*"
  poweroff -f
  sleep 10
  exit 1
}
# Runs "$@" every 0.1 s until it prints something, at most 100 times (10 s); prints that.
poll() {
  i=0
  while [ $i -lt 100 ]; do
    found=$("$@")
    if [ -n "$found" ]; then echo "$found"; return 0; fi
    i=$((i + 1))
    usleep 100000
  done
  return 1
}
# A last resort should any bounded step below still get stuck.
( sleep 150; say "failed: gave up after 150 s"; poweroff -f ) &

REGISTER=
ARTIFACT=
TOKEN=
MODE=register
API=
MACHINE=
MTOKEN=
set -f
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    bootfleet.register=*) REGISTER=${arg#bootfleet.register=} ;;
    bootfleet.artifact=*) ARTIFACT=${arg#bootfleet.artifact=} ;;
    bootfleet.token=*) TOKEN=${arg#bootfleet.token=} ;;
    bootfleet.mode=*) MODE=${arg#bootfleet.mode=} ;;
    bootfleet.api=*) API=${arg#bootfleet.api=} ;;
    bootfleet.machine=*) MACHINE=${arg#bootfleet.machine=} ;;
    bootfleet.mtoken=*) MTOKEN=${arg#bootfleet.mtoken=} ;;
  esac
done
set +f
case "$MODE" in
  register) [ -n "$REGISTER" ] || fail "no bootfleet.register= on the kernel command line" ;;
  inventory|install)
    [ -n "$API" ] && [ -n "$MACHINE" ] ||
      fail "bootfleet.mode=$MODE needs bootfleet.api= and bootfleet.machine= (and bootfleet.mtoken=)" ;;
  *) fail "unknown bootfleet.mode=$MODE" ;;
esac

# JSON string contents: backslashes and quotes escaped, control characters dropped.
json_str() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\000-\037'; }
# POST JSON to the machines API with the machine's token.
post_json() {
  timeout 30 wget -q -O /tmp/response --header "Authorization: Bearer $MTOKEN" \
    --header "Content-Type: application/json" --post-data "$2" "$1" 2>/tmp/wget.err
}
firmware() { if [ -d /sys/firmware/efi ]; then echo uefi; else echo bios; fi; }

do_inventory() {
  model=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
  count=$(grep -c '^processor' /proc/cpuinfo)
  # Installed memory: the online memory blocks (what the machine has), else MemTotal (what
  # the kernel has left after its own reservations).
  mem=0
  if [ -r /sys/devices/system/memory/block_size_bytes ]; then
    bs=$((0x$(cat /sys/devices/system/memory/block_size_bytes)))
    for b in /sys/devices/system/memory/memory*; do
      [ "$(cat "$b/online" 2>/dev/null)" = 1 ] && mem=$((mem + bs))
    done
  fi
  [ "$mem" -gt 0 ] || mem=$(( $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo) * 1024 ))
  disks=
  sep=
  for d in /sys/block/*; do
    n=${d##*/}
    case "$n" in loop*|ram*|zram*|sr*|fd*|dm-*|md*) continue ;; esac
    [ -e "$d/device" ] || continue
    size=$(( $(cat "$d/size") * 512 ))
    dmodel=$(cat "$d/device/model" 2>/dev/null | sed 's/ *$//')
    serial=$(cat "$d/serial" 2>/dev/null || cat "$d/device/serial" 2>/dev/null)
    disks="$disks$sep{\"name\":\"$(json_str "$n")\",\"sizeBytes\":$size,\"model\":\"$(json_str "$dmodel")\",\"serial\":\"$(json_str "$serial" | sed 's/ *$//')\"}"
    sep=,
  done
  nics=
  sep=
  for d in /sys/class/net/*; do
    n=${d##*/}
    [ "$n" = lo ] && continue
    [ -e "$d/device" ] || continue
    mac=$(cat "$d/address")
    driver=$(readlink "$d/device/driver" 2>/dev/null)
    driver=${driver##*/}
    speed=$(cat "$d/speed" 2>/dev/null)
    case "$speed" in ''|-*|*[!0-9]*) speed=null ;; esac
    link=false
    [ "$(cat "$d/carrier" 2>/dev/null)" = 1 ] && link=true
    nics="$nics$sep{\"mac\":\"$(json_str "$mac")\",\"driver\":\"$(json_str "$driver")\",\"speedMbps\":$speed,\"link\":$link}"
    sep=,
  done
  body="{\"firmware\":\"$(firmware)\",\"cpu\":{\"model\":\"$(json_str "$model")\",\"count\":$count},\"memoryBytes\":$mem,\"disks\":[$disks],\"nics\":[$nics]}"
  say "inventory $body"
  post_json "$API/api/machines/$MACHINE/inventory" "$body" ||
    fail "POST $API/api/machines/$MACHINE/inventory: $(cat /tmp/wget.err | tr '\n' ' ')"
  say "inventory posted"
  poweroff -f
  sleep 10
  exit 0
}

first_disk() {
  for n in vda sda nvme0n1 hda; do
    if [ -b "/dev/$n" ]; then echo "/dev/$n"; return; fi
  done
}

do_install() {
  fw=$(firmware)
  image=/bootfleet/disk-$fw.img.gz
  [ -r "$image" ] || fail "no $image in this initramfs (boot the install initrd)"
  disk=$(poll first_disk) || fail "no disk appeared within 10 s"
  say "installing the $fw disk image on $disk"
  zcat "$image" | dd of="$disk" bs=65536 2>/tmp/dd.err || fail "writing $disk: $(cat /tmp/dd.err | tr '\n' ' ')"
  sync
  post_json "$API/api/machines/$MACHINE/events" '{"type":"installed"}' ||
    fail "POST $API/api/machines/$MACHINE/events: $(cat /tmp/wget.err | tr '\n' ' ')"
  say "installed, callback posted"
  reboot -f
  sleep 10
  exit 0
}

while read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$m.ko" 2>/tmp/insmod.err || say "insmod $m: $(cat /tmp/insmod.err)"
done </etc/bootfleet/modules

first_ethernet() {
  for d in /sys/class/net/*; do
    [ "${d##*/}" = lo ] && continue
    if [ "$(cat "$d/type" 2>/dev/null)" = 1 ]; then echo "${d##*/}"; return; fi
  done
}
IF=$(poll first_ethernet) ||
  fail "no ethernet interface appeared within 10 s (modules: $(cat /etc/bootfleet/modules | tr '\n' ' '))"

ip link set lo up
ip link set "$IF" up || fail "cannot bring up $IF"
# A DISCOVER sent before the link is up is lost (e1000 takes ~2 s): wait for the carrier.
carrier() { [ "$(cat "/sys/class/net/$IF/carrier" 2>/dev/null)" = 1 ] && echo up; }
poll carrier >/dev/null
say "dhcp on $IF"
timeout 60 udhcpc -f -q -n -i "$IF" -s /etc/bootfleet/udhcpc.script -t 15 -T 1 -A 1 ||
  fail "no DHCP lease on $IF"
IP=$(cat /run/bootfleet-ip 2>/dev/null)
[ -n "$IP" ] || fail "DHCP on $IF gave no address"

case "$MODE" in
  inventory) do_inventory ;;
  install) do_install ;;
esac

case "$REGISTER" in
  *\?*) SEP='&' ;;
  *) SEP='?' ;;
esac
URL="$REGISTER${SEP}ip=$IP&artifactId=$ARTIFACT"
say "registering at $URL"
# No `wget -T`: Debian 12's busybox 1.35 wget segfaults with it; `timeout` bounds the request.
if [ -n "$TOKEN" ]; then
  timeout 30 wget -q -O /tmp/response --header "Authorization: Bearer $TOKEN" --post-data '' "$URL" 2>/tmp/wget.err
else
  timeout 30 wget -q -O /tmp/response --post-data '' "$URL" 2>/tmp/wget.err
fi
rc=$?
[ $rc = 0 ] || fail "POST $URL (wget exit $rc): $(cat /tmp/wget.err | tr '\n' ' ')"
say "response: $(head -c 300 /tmp/response | tr '\n' ' ')"
say "registered $IP"
poweroff -f
sleep 10
"#;

/// udhcpc's hook: configures the lease it got and leaves the address in `/run/bootfleet-ip`.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    for r in $router; do
      ip route add default via "$r" dev "$interface" && break
    done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done
    echo "$ip" >/run/bootfleet-ip
    echo "bootfleet-node: lease $ip/${mask:-24} on $interface, router ${router:-none}"
    ;;
  leasefail|nak)
    echo "bootfleet-node: dhcp $1 on $interface"
    ;;
esac
exit 0
"#;

static IMAGE: OnceLock<NodeImage> = OnceLock::new();

impl NodeImage {
    /// Builds (or reuses from the cache) Debian's kernel and the initramfs. The first build on a
    /// machine downloads the kernel package (~70 MB); later calls only check the cache. Safe to
    /// call from several threads and test binaries at once (a file lock serialises builds).
    /// Panics naming the missing package or failing command.
    pub fn get() -> NodeImage {
        IMAGE.get_or_init(build_or_reuse).clone()
    }

    /// The kernel command line that makes the initramfs register: it POSTs to
    /// `<register_url>?ip=<its own IPv4>&artifactId=<artifact_id>` (or `&ip=…` if the URL already
    /// has a query) with `Authorization: Bearer <token>` (none if `token` is empty) and an empty
    /// body, prints [`REGISTERED_MARKER`]`<ip>` or [`FAILED_MARKER`]`<reason>` on the serial
    /// console and powers off. `artifact_id` is percent-encoded here; the URL and the token must be
    /// single words of printable ASCII (the kernel splits its command line at spaces).
    pub fn cmdline(register_url: &str, artifact_id: &str, token: &str) -> String {
        assert!(
            !register_url.is_empty(),
            "NodeImage::cmdline: empty register_url"
        );
        for (what, value) in [("register_url", register_url), ("token", token)] {
            assert!(
                value.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
                "NodeImage::cmdline: {what} {value:?} must be printable ASCII without spaces or quotes"
            );
        }
        let line = format!(
            "console=ttyS0 panic=-1 quiet bootfleet.register={register_url} bootfleet.artifact={} bootfleet.token={token}",
            percent_encode(artifact_id)
        );
        // x86's COMMAND_LINE_SIZE.
        assert!(
            line.len() < 2048,
            "NodeImage::cmdline: {} bytes is longer than the kernel accepts (2047)",
            line.len()
        );
        line
    }

    /// The kernel command line of a machine mode (issue 15): `bootfleet.mode=<mode>
    /// bootfleet.api=<api> bootfleet.machine=<machine> bootfleet.mtoken=<token>`.
    ///
    /// - `inventory`: after DHCP, POSTs `<api>/api/machines/<machine>/inventory` with
    ///   `Authorization: Bearer <token>` and the JSON
    ///   `{"firmware":"bios|uefi","cpu":{"model":"…","count":N},"memoryBytes":N,
    ///   "disks":[{"name":"vda","sizeBytes":N,"model":"","serial":""}],
    ///   "nics":[{"mac":"52:54:00:…","driver":"e1000","speedMbps":1000|null,"link":true}]}`,
    ///   prints [`INVENTORY_MARKER`] and powers off.
    /// - `install` (boot [`NodeImage::install_initrd`]): writes the firmware's disk image from
    ///   [`crate::disk_image`] onto the first disk (`/dev/vda`…), POSTs
    ///   `<api>/api/machines/<machine>/events` with `{"type":"installed"}`, prints
    ///   [`INSTALLED_MARKER`] and reboots.
    pub fn mode_cmdline(mode: &str, api: &str, machine: &str, token: &str) -> String {
        assert!(matches!(mode, "inventory" | "install"), "mode {mode:?}");
        for (what, value) in [("api", api), ("machine", machine), ("token", token)] {
            assert!(
                !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
                "NodeImage::mode_cmdline: {what} {value:?} must be printable ASCII without spaces or quotes"
            );
        }
        format!(
            "console=ttyS0 panic=-1 quiet bootfleet.mode={mode} bootfleet.api={api} bootfleet.machine={machine} bootfleet.mtoken={token}"
        )
    }

    /// The initramfs for `bootfleet.mode=install`: the node initramfs with the disk images
    /// appended (a second cpio archive: the kernel unpacks both) as
    /// `/bootfleet/disk-bios.img.gz` (the boot sector) and `/bootfleet/disk-uefi.img.gz` (the GPT
    /// disk with its ESP). Built once per cache (next to the node initramfs).
    pub fn install_initrd(&self) -> PathBuf {
        let name = self
            .initrd
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("initrd")
            .replace(".cpio", "");
        let path = self
            .initrd
            .with_file_name(format!("{name}-install-{DISK_IMAGES_VERSION}.cpio"));
        if path.is_file() {
            return path;
        }
        let dir = path.parent().expect("cache dir");
        let _lock = lock(&dir.join(".install-lock"), Duration::from_secs(300));
        if path.is_file() {
            return path;
        }
        let work = tempfile::tempdir().expect("tempdir");
        let uefi = crate::disk_image::uefi_disk_image(work.path());
        let mut cpio = Cpio::default();
        cpio.dir("bootfleet");
        cpio.file(
            "bootfleet/disk-bios.img.gz",
            0o644,
            &gzip(&crate::disk_image::bios_boot_sector(), work.path()),
        );
        cpio.file(
            "bootfleet/disk-uefi.img.gz",
            0o644,
            &gzip(&uefi, work.path()),
        );
        let mut bytes = std::fs::read(&self.initrd).expect("read the node initramfs");
        bytes.extend_from_slice(&cpio.finish());
        write_atomically(&path, &bytes);
        path
    }

    /// The kernel release the image boots (`6.1.0-…-amd64`).
    pub fn kernel_version(&self) -> String {
        self.kernel
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .unwrap_or_default()
            .to_owned()
    }
}

/// Bumped when the disk images of the install initramfs change.
const DISK_IMAGES_VERSION: &str = "1";

fn gzip(bytes: &[u8], work: &Path) -> Vec<u8> {
    let input = work.join("gzip-input");
    std::fs::write(&input, bytes).expect("write gzip input");
    let out = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(&input)
        .output()
        .expect("run gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(".cache"))
        })
        .expect("node image cache: neither XDG_CACHE_HOME nor HOME is set to an absolute path");
    base.join("bootfleet-test").join("node-image")
}

fn build_or_reuse() -> NodeImage {
    let root = cache_root();
    std::fs::create_dir_all(&root)
        .unwrap_or_else(|e| panic!("create node image cache {}: {e}", root.display()));
    let busybox = read_static_busybox();
    let package = std::env::var("BOOTFLEET_NODE_KERNEL_PACKAGE")
        .ok()
        .filter(|p| !p.is_empty());

    // Fast path, no lock: everything in the cache appears by rename, so what exists is complete.
    if let Some(image) = cached(&root, package.as_deref(), &busybox) {
        return image;
    }

    let _lock = lock(&root.join(".lock"), Duration::from_secs(600));
    let kernel_dir = match known_kernel_dir(&root, package.as_deref()) {
        Some(dir) => dir,
        None => build_kernel_dir(&root, package.as_deref()),
    };
    let initrd = ensure_initrd(&kernel_dir, &busybox);
    image_in(&kernel_dir, initrd)
}

fn image_in(kernel_dir: &Path, initrd: PathBuf) -> NodeImage {
    let kernel = kernel_file(kernel_dir);
    let vmlinux = kernel_dir.join("vmlinux");
    NodeImage {
        vmlinux: if vmlinux.is_file() {
            vmlinux
        } else {
            kernel.clone()
        },
        kernel,
        initrd,
    }
}

/// The cached image, if the kernel directory and the initramfs for this code are there.
fn cached(root: &Path, package: Option<&str>, busybox: &[u8]) -> Option<NodeImage> {
    let dir = known_kernel_dir(root, package)?;
    let initrd = dir.join(initrd_name(&dir, busybox)?);
    initrd.is_file().then(|| image_in(&dir, initrd))
}

/// The file naming the kernel release built for the default (`linux-image-amd64`) kernel, or for
/// an explicitly chosen package.
fn pointer_file(root: &Path, package: Option<&str>) -> PathBuf {
    match package {
        None => root.join("default-kernel"),
        Some(p) => root.join(format!("package-{}", sanitize(p))),
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A complete kernel directory built by this version of the code for `package`, if any.
fn known_kernel_dir(root: &Path, package: Option<&str>) -> Option<PathBuf> {
    let kver = std::fs::read_to_string(pointer_file(root, package)).ok()?;
    let dir = root.join(kver.trim());
    let manifest = std::fs::read_to_string(dir.join("manifest")).ok()?;
    (manifest == manifest_text() && kernel_file(&dir).is_file()).then_some(dir)
}

fn manifest_text() -> String {
    format!(
        "layout={LAYOUT_VERSION}\nroots={}\n",
        ROOT_MODULES.join(",")
    )
}

fn kernel_file(dir: &Path) -> PathBuf {
    let kver = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    dir.join(format!("vmlinuz-{kver}"))
}

/// `initrd-<hash>.cpio`, the hash covering everything that goes into it, so a changed script or
/// busybox gets a new file instead of a stale one.
fn initrd_name(kernel_dir: &Path, busybox: &[u8]) -> Option<String> {
    let order = std::fs::read_to_string(kernel_dir.join("modules.load")).ok()?;
    let mut h = Fnv64::new();
    for part in [
        LAYOUT_VERSION.as_bytes(),
        INIT_SCRIPT.as_bytes(),
        UDHCPC_SCRIPT.as_bytes(),
        order.as_bytes(),
        busybox,
    ] {
        h.write(&(part.len() as u64).to_le_bytes());
        h.write(part);
    }
    Some(format!("initrd-{:016x}.cpio", h.finish()))
}

struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn read_static_busybox() -> Vec<u8> {
    let bytes = std::fs::read(BUSYBOX).unwrap_or_else(|e| {
        panic!("{BUSYBOX} not readable ({e}): install Debian's busybox-static (apt-get install busybox-static)")
    });
    assert!(
        is_static_elf(&bytes),
        "{BUSYBOX} is not a statically linked ELF (Debian's `busybox` instead of `busybox-static`?): \
         apt-get install busybox-static"
    );
    bytes
}

/// A 64-bit little-endian ELF without a PT_INTERP program header.
fn is_static_elf(b: &[u8]) -> bool {
    let u16_at = |o: usize| b.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if b.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).all(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        u32_at(at).is_some_and(|t| t != 3)
    })
}

/// An exclusive `flock` on `path`, waited for at most `within`.
fn lock(path: &Path, within: Duration) -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open lock file {}: {e}", path.display()));
    let deadline = Instant::now() + within;
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(std::fs::TryLockError::WouldBlock) => panic!(
                "another process held {} for more than {} s (a node image build stuck?)",
                path.display(),
                within.as_secs()
            ),
            Err(std::fs::TryLockError::Error(e)) => panic!("lock {}: {e}", path.display()),
        }
    }
}

/// Runs `cmd` with its output in files under `logs`, killing it after `within`. Returns stdout.
/// `hint` says which Debian package provides the program.
fn run(cmd: &mut Command, hint: &str, logs: &Path, within: Duration) -> String {
    let out_path = logs.join("cmd.stdout");
    run_to(cmd, hint, logs, within, &out_path);
    std::fs::read_to_string(&out_path).unwrap_or_default()
}

/// [`run`] with stdout going to `out_path` (kept as is, binary or not).
fn run_to(cmd: &mut Command, hint: &str, logs: &Path, within: Duration, out_path: &Path) {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let shown = format!(
        "{program} {}",
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let err_path = logs.join("cmd.stderr");
    let out =
        File::create(out_path).unwrap_or_else(|e| panic!("create {}: {e}", out_path.display()));
    let err = File::create(&err_path).expect("create command log");
    let mut child = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): install Debian's {hint}"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for command") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{shown}` did not finish within {} s", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "`{shown}` failed ({status}):\n{stderr}");
}

/// `linux-image-<release>-amd64`, the package the metapackage depends on.
fn resolve_kernel_package(logs: &Path) -> String {
    let out = run(
        Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]),
        "apt",
        logs,
        Duration::from_secs(60),
    );
    out.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "`apt-cache depends {KERNEL_METAPACKAGE}` names no linux-image-* package \
                 (run apt-get update?):\n{out}"
            )
        })
}

/// Downloads and unpacks the kernel package, keeps the kernel and the needed modules
/// (decompressed) in `<root>/<release>/`, and points the package's pointer file at it.
fn build_kernel_dir(root: &Path, requested: Option<&str>) -> PathBuf {
    remove_stale_builds(root);
    let work = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("create a build directory in {}: {e}", root.display()));
    let logs = work.path();
    let package = match requested {
        Some(p) => p.to_owned(),
        None => resolve_kernel_package(logs),
    };
    let download = logs.join("download");
    std::fs::create_dir(&download).expect("create download dir");
    run(
        Command::new("apt-get")
            .current_dir(&download)
            // The build dir is private; apt's `_apt` sandbox user could not write to it.
            .args(["-q", "-o", "APT::Sandbox::User=root"])
            .args(["-o", "Acquire::http::Timeout=30", "download", &package]),
        &format!("apt (and `apt-get update` if the package {package} is not found)"),
        logs,
        Duration::from_secs(300),
    );
    let deb = only_entry(&download, |n| n.ends_with(".deb"))
        .unwrap_or_else(|| panic!("apt-get download {package} left no .deb"));
    let tree = logs.join("tree");
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        "dpkg",
        logs,
        Duration::from_secs(300),
    );
    let _ = std::fs::remove_file(&deb);

    let vmlinuz = only_entry(&tree.join("boot"), |n| n.starts_with("vmlinuz-"))
        .unwrap_or_else(|| panic!("package {package} has no /boot/vmlinuz-*"));
    let kver = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .expect("vmlinuz name")
        .to_owned();
    let moddir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d).join(&kver))
        .find(|d| d.is_dir())
        .unwrap_or_else(|| panic!("package {package} has no lib/modules/{kver}"));

    let staged = logs.join(&kver);
    let staged_modules = staged.join("modules");
    std::fs::create_dir_all(&staged_modules).expect("create staging dir");
    let staged_kernel = staged.join(format!("vmlinuz-{kver}"));
    std::fs::rename(&vmlinuz, &staged_kernel).expect("move vmlinuz");
    extract_vmlinux(&staged_kernel, &staged.join("vmlinux"), logs);

    let order = collect_modules(&moddir, &staged_modules, logs);
    std::fs::write(staged.join("modules.load"), order.join("\n") + "\n").expect("write order");
    std::fs::write(staged.join("manifest"), manifest_text()).expect("write manifest");

    // Publish: swap in the new directory (an outdated one is moved aside; a valid one, reached
    // through another pointer, is kept: other processes may be booting its files).
    let target = root.join(&kver);
    let valid = std::fs::read_to_string(target.join("manifest")).ok() == Some(manifest_text())
        && kernel_file(&target).is_file();
    if valid {
        write_atomically(&pointer_file(root, requested), kver.as_bytes());
        return target;
    }
    if target.exists() {
        let aside = work.path().join("replaced");
        std::fs::rename(&target, &aside)
            .unwrap_or_else(|e| panic!("move aside {}: {e}", target.display()));
    }
    std::fs::rename(&staged, &target)
        .unwrap_or_else(|e| panic!("publish {}: {e}", target.display()));
    write_atomically(&pointer_file(root, requested), kver.as_bytes());
    target
}

/// Build directories and temporary files left in `dir` by killed processes (whoever builds holds
/// the lock, so none of them is in use).
fn remove_stale_builds(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".build-") {
            let _ = std::fs::remove_dir_all(entry.path());
        } else if name.starts_with(".tmp-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Decompresses a bzImage's payload to `out` if it is an ELF with a PVH entry note (what QEMU's
/// `-kernel` needs to start an ELF); otherwise writes nothing.
fn extract_vmlinux(bzimage: &Path, out: &Path, logs: &Path) {
    let image = std::fs::read(bzimage).expect("read vmlinuz");
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    // Boot protocol >= 2.08: `payload_offset`/`payload_length` locate the compressed kernel.
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return;
    }
    let setup_sects = match image.get(0x1f1) {
        Some(0) => 4,
        Some(&n) => usize::from(n),
        None => return,
    };
    let (Some(offset), Some(length)) = (u32_at(0x248), u32_at(0x24c)) else {
        return;
    };
    let start = (setup_sects + 1) * 512 + offset;
    let Some(payload) = image.get(start..start + length) else {
        return;
    };
    // The build appends the decompressed size (4 bytes) after xz and zstd streams.
    let (program, args, data): (&str, &[&str], &[u8]) = if payload.starts_with(b"\xfd7zXZ\0") {
        ("xz", &["-d", "-c", "--single-stream"], payload)
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        (
            "zstd",
            &["-d", "-c", "-q"],
            &payload[..payload.len().saturating_sub(4)],
        )
    } else if payload.starts_with(b"\x1f\x8b") {
        ("gzip", &["-d", "-c"], payload)
    } else {
        return;
    };
    let compressed = logs.join("payload");
    std::fs::write(&compressed, data).expect("write kernel payload");
    let hint = match program {
        "xz" => "xz-utils",
        p => p,
    };
    let tmp = logs.join("vmlinux.tmp");
    // gzip exits 2 on the trailing size ("trailing garbage ignored"): accept what it wrote.
    let mut cmd = Command::new(program);
    cmd.args(args).arg(&compressed);
    if program == "gzip" {
        let _ = cmd
            .stdout(File::create(&tmp).expect("create vmlinux"))
            .stderr(Stdio::null())
            .status();
    } else {
        run_to(&mut cmd, hint, logs, Duration::from_secs(120), &tmp);
    }
    let _ = std::fs::remove_file(&compressed);
    let elf = std::fs::read(&tmp).unwrap_or_default();
    if has_pvh_note(&elf) {
        std::fs::rename(&tmp, out).expect("store vmlinux");
    } else {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// An ELF64 with a `Xen` note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) in a PT_NOTE segment.
fn has_pvh_note(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|s| usize::from(u16::from_le_bytes([s[0], s[1]])))
    };
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|s| s.try_into().ok())
            .map(|s| u64::from_le_bytes(s) as usize)
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let ph = phoff + i * phentsize;
        if u32_at(ph) != Some(4) {
            return false;
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            return false;
        };
        let mut at = off;
        let end = off.saturating_add(size);
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32_at(at), u32_at(at + 4), u32_at(at + 8))
            else {
                return false;
            };
            let name = elf.get(at + 12..at + 12 + namesz).unwrap_or_default();
            if name == b"Xen\0" && kind == 18 {
                return true;
            }
            at += 12 + namesz.next_multiple_of(4) + descsz.next_multiple_of(4);
        }
        false
    })
}

fn only_entry(dir: &Path, pick: impl Fn(&str) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(&pick))
        .map(|e| e.path())
        .collect();
    found.sort();
    (found.len() == 1).then(|| found.remove(0))
}

/// Module name as the kernel sees it (`virtio-net.ko.xz` → `virtio_net`), and the compression.
fn module_name(file: &str) -> Option<(String, &'static str)> {
    let (stem, comp) = [
        (".ko", ""),
        (".ko.xz", "xz"),
        (".ko.zst", "zst"),
        (".ko.gz", "gz"),
    ]
    .iter()
    .find_map(|(ext, comp)| file.strip_suffix(ext).map(|s| (s, *comp)))?;
    Some((stem.replace('-', "_"), comp))
}

fn walk(dir: &Path, out: &mut BTreeMap<String, (PathBuf, &'static str)>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&path, out);
        } else if let Some((name, comp)) = entry.file_name().to_str().and_then(module_name) {
            out.insert(name, (path, comp));
        }
    }
}

/// Copies [`ROOT_MODULES`] and their dependencies, decompressed, to `dest/<name>.ko`; returns the
/// load order (dependencies first). Modules built into the kernel are skipped.
fn collect_modules(moddir: &Path, dest: &Path, logs: &Path) -> Vec<String> {
    let mut available = BTreeMap::new();
    walk(moddir, &mut available);
    let builtin: BTreeSet<String> = std::fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(module_name))
        .map(|(n, _)| n)
        .collect();

    let mut order = Vec::new();
    let mut visiting = BTreeSet::new();
    for root in ROOT_MODULES {
        add_module(
            root,
            &available,
            &builtin,
            dest,
            logs,
            &mut visiting,
            &mut order,
        );
    }
    order
}

fn add_module(
    name: &str,
    available: &BTreeMap<String, (PathBuf, &'static str)>,
    builtin: &BTreeSet<String>,
    dest: &Path,
    logs: &Path,
    visiting: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if order.iter().any(|m| m == name) || !visiting.insert(name.to_owned()) {
        return;
    }
    let Some((src, comp)) = available.get(name) else {
        assert!(
            builtin.contains(name),
            "kernel module {name} is neither in the kernel package nor built in"
        );
        return;
    };
    let out = dest.join(format!("{name}.ko"));
    match *comp {
        "" => {
            std::fs::copy(src, &out).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
        comp => {
            // busybox insmod in the guest takes plain ELF modules: decompress here.
            let (program, hint) = match comp {
                "xz" => ("xz", "xz-utils"),
                "zst" => ("zstd", "zstd"),
                _ => ("gzip", "gzip"),
            };
            run_to(
                Command::new(program).args(["-d", "-c"]).arg(src),
                hint,
                logs,
                Duration::from_secs(60),
                &out,
            );
        }
    }
    let bytes = std::fs::read(&out).expect("read module");
    assert!(
        bytes.starts_with(b"\x7fELF"),
        "{} is not an ELF module after decompression",
        src.display()
    );
    for dep in modinfo_depends(&bytes) {
        add_module(&dep, available, builtin, dest, logs, visiting, order);
    }
    order.push(name.to_owned());
}

/// The `depends=a,b` entry of a module's `.modinfo` section.
fn modinfo_depends(module: &[u8]) -> Vec<String> {
    let key = b"\0depends=";
    let Some(at) = module.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &module[at + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .map(|d| d.trim().replace('-', "_"))
        .filter(|d| !d.is_empty())
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("cache file has a parent");
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .unwrap_or_else(|e| panic!("create a temporary file in {}: {e}", dir.display()));
    use std::os::unix::fs::PermissionsExt;
    tmp.write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    tmp.persist(path)
        .unwrap_or_else(|e| panic!("rename into {}: {e}", path.display()));
}

/// Writes the initramfs for `kernel_dir` unless it is already there; returns its path.
fn ensure_initrd(kernel_dir: &Path, busybox: &[u8]) -> PathBuf {
    let path = kernel_dir.join(initrd_name(kernel_dir, busybox).expect("modules.load in cache"));
    if path.is_file() {
        return path;
    }
    remove_stale_builds(kernel_dir);
    let order = std::fs::read_to_string(kernel_dir.join("modules.load")).expect("modules.load");
    let mut cpio = Cpio::default();
    for dir in [
        "bin",
        "dev",
        "etc",
        "etc/bootfleet",
        "lib",
        "lib/modules",
        "proc",
        "run",
        "sbin",
        "sys",
        "tmp",
        "usr",
        "usr/bin",
        "usr/sbin",
    ] {
        cpio.dir(dir);
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_device("dev/console", 0o600, 5, 1);
    cpio.file("bin/busybox", 0o755, busybox);
    cpio.symlink("bin/sh", "busybox");
    cpio.file("init", 0o755, INIT_SCRIPT.as_bytes());
    cpio.file(
        "etc/bootfleet/udhcpc.script",
        0o755,
        UDHCPC_SCRIPT.as_bytes(),
    );
    cpio.file("etc/bootfleet/modules", 0o644, order.as_bytes());
    for name in order.lines().filter(|l| !l.is_empty()) {
        let mut bytes = Vec::new();
        File::open(kernel_dir.join("modules").join(format!("{name}.ko")))
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .unwrap_or_else(|e| panic!("read cached module {name}: {e}"));
        cpio.file(&format!("lib/modules/{name}.ko"), 0o644, &bytes);
    }
    write_atomically(&path, &cpio.finish());
    path
}

/// A writer for the "newc" cpio format the kernel unpacks as initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8], rdev: (u32, u32)) {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible
            u32::try_from(data.len()).expect("cpio entry below 4 GiB"),
            0, // dev major
            0, // dev minor
            rdev.0,
            rdev.1,
            u32::try_from(name.len() + 1).expect("name length"),
            0, // check
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, &[], (0, 0));
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, data, (0, 0));
    }

    fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, 0o120777, target.as_bytes(), (0, 0));
    }

    fn char_device(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, 0o020000 | perm, &[], (major, minor));
    }

    fn finish(mut self) -> Vec<u8> {
        self.ino = 0;
        self.entry("TRAILER!!!", 0, &[], (0, 0));
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_cmdlines() {
        assert_eq!(
            NodeImage::mode_cmdline("inventory", "http://10.77.0.2:8090", "m-1", "tok.en"),
            "console=ttyS0 panic=-1 quiet bootfleet.mode=inventory bootfleet.api=http://10.77.0.2:8090 bootfleet.machine=m-1 bootfleet.mtoken=tok.en"
        );
        assert!(NodeImage::mode_cmdline("install", "http://a", "m", "t")
            .contains("bootfleet.mode=install "));
        for bad in [
            std::panic::catch_unwind(|| NodeImage::mode_cmdline("rescue", "http://a", "m", "t")),
            std::panic::catch_unwind(|| NodeImage::mode_cmdline("install", "http://a b", "m", "t")),
            std::panic::catch_unwind(|| NodeImage::mode_cmdline("install", "http://a", "", "t")),
        ] {
            assert!(bad.is_err());
        }
    }

    /// The init script (all modes) and the udhcpc hook parse as busybox sh scripts, and the
    /// inventory JSON escaper escapes.
    #[test]
    fn init_scripts_parse_and_escape_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in [("init", INIT_SCRIPT), ("udhcpc", UDHCPC_SCRIPT)] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            let out = Command::new(BUSYBOX)
                .args(["sh", "-n"])
                .arg(&path)
                .output()
                .expect("busybox sh -n");
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let start = INIT_SCRIPT.find("json_str() {").expect("json_str");
        let end = start + INIT_SCRIPT[start..].find('\n').expect("line end");
        let script = format!("{}\njson_str 'a\"b\\c\tend'", &INIT_SCRIPT[start..end]);
        let out = Command::new(BUSYBOX)
            .args(["sh", "-c", &script])
            .output()
            .expect("busybox sh");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a\\\"b\\\\cend");
    }

    #[test]
    fn percent_encodes_all_but_unreserved() {
        assert_eq!(percent_encode("site-1_a.b~"), "site-1_a.b~");
        assert_eq!(percent_encode("a b&c/é"), "a%20b%26c%2F%C3%A9");
    }

    #[test]
    fn module_names_and_depends() {
        assert_eq!(
            module_name("virtio-net.ko.xz"),
            Some(("virtio_net".to_owned(), "xz"))
        );
        assert_eq!(module_name("e1000.ko"), Some(("e1000".to_owned(), "")));
        assert_eq!(module_name("README"), None);
        let modinfo =
            b"\x7fELF...\0license=GPL\0depends=virtio_ring,virtio,net_failover\0vermagic=x\0";
        assert_eq!(
            modinfo_depends(modinfo),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(modinfo_depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn busybox_static_check() {
        assert!(is_static_elf(&read_static_busybox()));
        let dynamic = std::fs::read("/bin/sh").expect("read /bin/sh");
        assert!(!is_static_elf(&dynamic));
    }

    #[test]
    fn cpio_entries_are_aligned_and_terminated() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/x", 0o755, b"hello");
        let out = c.finish();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        let trailer = out
            .windows(10)
            .position(|w| w == b"TRAILER!!!")
            .expect("trailer");
        assert_eq!((trailer - 110) % 4, 0);
    }
}

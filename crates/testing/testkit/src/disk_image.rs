//! Bootable disk images that a test installer writes onto a guest's disk, and that print a
//! marker on the serial console when the guest boots them (LAB-NOTES-localboot.md):
//!
//! - BIOS: one 512-byte MBR boot sector (hand-assembled 16-bit code) that writes
//!   [`BIOS_DISK_MARKER`] to COM1 and halts. SeaBIOS boots any disk whose sector 0 ends in 55 AA.
//! - UEFI: a GPT disk of [`INSTALL_DISK_BYTES`] with one EFI system partition (FAT16, made with
//!   `mformat`/`mmd`/`mcopy`) holding `\EFI\BOOT\BOOTX64.EFI`, a `grub-mkstandalone` x86_64-efi
//!   image whose embedded configuration echoes [`UEFI_DISK_MARKER`] and halts. The GPT (both
//!   headers, both entry arrays, CRC32s) is written here.
//!
//! Tools: `grub-mkstandalone` (Debian `grub-common` + `grub-efi-amd64-bin`) and `mtools`, both in
//! `scripts/setup`.

use std::path::Path;
use std::process::Command;

/// Printed by the BIOS disk's boot sector.
pub const BIOS_DISK_MARKER: &str = "BOOTFLEET-LOCALDISK-BIOS-OK";
/// Printed by the UEFI disk's GRUB.
pub const UEFI_DISK_MARKER: &str = "BOOTFLEET-LOCALDISK-UEFI-OK";
/// The size of the guest disks the lab gives machines, and of the UEFI image (its backup GPT
/// sits in the disk's last sector).
pub const INSTALL_DISK_BYTES: u64 = 64 * 1024 * 1024;

const SECTOR: u64 = 512;
const ESP_FIRST_LBA: u64 = 2048;
const ESP_SECTORS: u64 = 65_536; // 32 MiB: FAT16
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// C12A7328-F81F-11D2-BA4B-00A0C93EC93B, in GPT's mixed-endian byte order.
const ESP_TYPE: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

/// The BIOS boot sector: `cli; cld; ds=ss=0; sp=7c00; for each byte of the message: wait for
/// COM1's transmitter (0x3fd bit 5), out 0x3f8; then hlt forever`.
pub fn bios_boot_sector() -> Vec<u8> {
    let message = format!("\r\n{BIOS_DISK_MARKER}\r\n\0");
    const MSG_OFFSET: u16 = 40;
    let msg = 0x7c00u16 + MSG_OFFSET;
    let mut code: Vec<u8> = vec![
        0xFA, // 0: cli
        0xFC, // 1: cld
        0x31,
        0xC0, // 2: xor ax,ax
        0x8E,
        0xD8, // 4: mov ds,ax
        0x8E,
        0xD0, // 6: mov ss,ax
        0xBC,
        0x00,
        0x7C, // 8: mov sp,0x7c00
        0xBE,
        msg as u8,
        (msg >> 8) as u8, // 11: mov si,msg
        0xAC,             // 14 loop: lodsb
        0x84,
        0xC0, // 15: test al,al
        0x74,
        0x12, // 17: jz done (37)
        0x88,
        0xC3, // 19: mov bl,al
        0xBA,
        0xFD,
        0x03, // 21: mov dx,0x3fd
        0xEC, // 24 wait: in al,dx
        0xA8,
        0x20, // 25: test al,0x20
        0x74,
        0xFB, // 27: jz wait (24)
        0xBA,
        0xF8,
        0x03, // 29: mov dx,0x3f8
        0x88,
        0xD8, // 32: mov al,bl
        0xEE, // 34: out dx,al
        0xEB,
        0xE9, // 35: jmp loop (14)
        0xF4, // 37 done: hlt
        0xEB,
        0xFD, // 38: jmp done (37)
    ];
    assert_eq!(code.len(), usize::from(MSG_OFFSET));
    code.extend_from_slice(message.as_bytes());
    assert!(
        code.len() <= 446,
        "boot code must leave the partition table"
    );
    code.resize(510, 0);
    code.extend_from_slice(&[0x55, 0xAA]);
    code
}

/// CRC-32 (IEEE, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn header(
    current: u64,
    backup: u64,
    entries_lba: u64,
    total: u64,
    entries_crc: u32,
    disk_guid: [u8; 16],
) -> Vec<u8> {
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(b"EFI PART");
    h.extend_from_slice(&0x0001_0000u32.to_le_bytes());
    h.extend_from_slice(&92u32.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // header CRC, filled below
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&current.to_le_bytes());
    h.extend_from_slice(&backup.to_le_bytes());
    h.extend_from_slice(&34u64.to_le_bytes()); // first usable
    h.extend_from_slice(&(total - 34).to_le_bytes()); // last usable
    h.extend_from_slice(&disk_guid);
    h.extend_from_slice(&entries_lba.to_le_bytes());
    h.extend_from_slice(&(ENTRIES as u32).to_le_bytes());
    h.extend_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    h.extend_from_slice(&entries_crc.to_le_bytes());
    let crc = crc32(&h);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h.resize(512, 0);
    h
}

/// A GPT disk image of `total_bytes` with `esp` (a FAT image of [`ESP_SECTORS`] sectors or
/// fewer) as its one partition, an EFI system partition at LBA 2048.
pub fn gpt_disk_with_esp(esp: &[u8], total_bytes: u64) -> Vec<u8> {
    let total = total_bytes / SECTOR;
    assert!(
        esp.len() as u64 <= ESP_SECTORS * SECTOR,
        "ESP image too large"
    );
    assert!(ESP_FIRST_LBA + ESP_SECTORS <= total - 34, "disk too small");
    let mut disk = vec![0u8; (total * SECTOR) as usize];
    // Protective MBR.
    let mbr = &mut disk[446..462];
    mbr[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    mbr[4] = 0xEE;
    mbr[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    mbr[8..12].copy_from_slice(&1u32.to_le_bytes());
    mbr[12..16].copy_from_slice(&u32::try_from(total - 1).unwrap_or(u32::MAX).to_le_bytes());
    disk[510] = 0x55;
    disk[511] = 0xAA;
    // Fixed GUIDs: the image is reproducible.
    let disk_guid = *b"bootfleet-disk-1";
    let part_guid = *b"bootfleet-esp--1";
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    entries[0..16].copy_from_slice(&ESP_TYPE);
    entries[16..32].copy_from_slice(&part_guid);
    entries[32..40].copy_from_slice(&ESP_FIRST_LBA.to_le_bytes());
    entries[40..48].copy_from_slice(&(ESP_FIRST_LBA + ESP_SECTORS - 1).to_le_bytes());
    for (i, unit) in "EFI system partition".encode_utf16().enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    let entries_crc = crc32(&entries);
    let entries_sectors = ENTRIES * ENTRY_SIZE / SECTOR;
    let put = |disk: &mut Vec<u8>, lba: u64, bytes: &[u8]| {
        let at = (lba * SECTOR) as usize;
        disk[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(
        &mut disk,
        1,
        &header(1, total - 1, 2, total, entries_crc, disk_guid),
    );
    put(&mut disk, 2, &entries);
    let backup_entries = total - 1 - entries_sectors;
    put(&mut disk, backup_entries, &entries);
    put(
        &mut disk,
        total - 1,
        &header(total - 1, 1, backup_entries, total, entries_crc, disk_guid),
    );
    put(&mut disk, ESP_FIRST_LBA, esp);
    disk
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{what}: {cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The UEFI disk image (GPT + ESP + GRUB printing [`UEFI_DISK_MARKER`]), built in `work`.
pub fn uefi_disk_image(work: &Path) -> Vec<u8> {
    let cfg = work.join("grub.cfg");
    std::fs::write(
        &cfg,
        format!(
            "serial --unit=0 --speed=115200\nterminal_output serial console\n\
             echo {UEFI_DISK_MARKER}\nsleep 1\nhalt\n"
        ),
    )
    .expect("write grub.cfg");
    let efi = work.join("BOOTX64.EFI");
    let modules = "serial terminal echo sleep halt";
    run(
        Command::new("grub-mkstandalone")
            .args(["-O", "x86_64-efi", "--locales=", "--themes=", "--fonts="])
            .arg(format!("--modules={modules}"))
            .arg(format!("--install-modules={modules} normal configfile"))
            .arg("-o")
            .arg(&efi)
            .arg(format!("boot/grub/grub.cfg={}", cfg.display())),
        "grub-mkstandalone (grub-efi-amd64-bin)",
    );
    let esp = work.join("esp.img");
    let file = std::fs::File::create(&esp).expect("create esp.img");
    file.set_len(ESP_SECTORS * SECTOR).expect("size esp.img");
    drop(file);
    let image = esp.to_str().expect("utf-8 path");
    run(
        Command::new("mformat").args([
            "-i",
            image,
            "-T",
            &ESP_SECTORS.to_string(),
            "-h",
            "64",
            "-s",
            "32",
            "-v",
            "ESP",
            "::",
        ]),
        "mformat (mtools)",
    );
    run(
        Command::new("mmd").args(["-i", image, "::/EFI", "::/EFI/BOOT"]),
        "mmd (mtools)",
    );
    run(
        Command::new("mcopy")
            .args(["-i", image])
            .arg(&efi)
            .arg("::/EFI/BOOT/BOOTX64.EFI"),
        "mcopy (mtools)",
    );
    let esp = std::fs::read(&esp).expect("read esp.img");
    gpt_disk_with_esp(&esp, INSTALL_DISK_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn boot_sector_is_signed_and_carries_the_marker() {
        let s = bios_boot_sector();
        assert_eq!(s.len(), 512);
        assert_eq!(&s[510..], &[0x55, 0xAA]);
        let text = String::from_utf8_lossy(&s);
        assert!(text.contains(BIOS_DISK_MARKER));
        // mov si points at the message.
        let si = usize::from(u16::from_le_bytes([s[12], s[13]])) - 0x7c00;
        assert!(s[si..].starts_with(b"\r\n"), "si at {si}");
    }

    #[test]
    fn gpt_headers_check_out() {
        let esp = vec![0xAB; 4096];
        let total = 8 * 1024 * 1024 * 8; // 64 MiB
        let disk = gpt_disk_with_esp(&esp, total);
        assert_eq!(disk.len() as u64, total);
        let sectors = total / SECTOR;
        for (lba, other) in [(1, sectors - 1), (sectors - 1, 1)] {
            let at = (lba * SECTOR) as usize;
            let h = &disk[at..at + 92];
            assert_eq!(&h[..8], b"EFI PART");
            let mut zeroed = h.to_vec();
            zeroed[16..20].fill(0);
            assert_eq!(
                u32::from_le_bytes(h[16..20].try_into().expect("field")),
                crc32(&zeroed)
            );
            assert_eq!(
                u64::from_le_bytes(h[24..32].try_into().expect("field")),
                lba
            );
            assert_eq!(
                u64::from_le_bytes(h[32..40].try_into().expect("field")),
                other
            );
            let entries_lba = u64::from_le_bytes(h[72..80].try_into().expect("field")) as usize;
            let entries = &disk[entries_lba * 512..entries_lba * 512 + 16384];
            assert_eq!(
                u32::from_le_bytes(h[88..92].try_into().expect("field")),
                crc32(entries)
            );
            assert_eq!(&entries[..16], &ESP_TYPE);
        }
        assert_eq!(disk[450], 0xEE);
        assert_eq!(&disk[2048 * 512..2048 * 512 + 4096], &esp[..]);
    }

    /// Both images boot to their marker, straight from disk (no network).
    #[test]
    fn disk_images_boot_to_their_markers() {
        use crate::qemu::{Firmware, LocalBoot, Qemu};
        let work = tempfile::tempdir().expect("tempdir");
        let bios = work.path().join("bios.img");
        let mut sector = bios_boot_sector();
        sector.resize(1024 * 1024, 0);
        std::fs::write(&bios, sector).expect("write");
        let uefi = work.path().join("uefi.img");
        let started = std::time::Instant::now();
        std::fs::write(&uefi, uefi_disk_image(work.path())).expect("write");
        eprintln!(
            "uefi disk image built in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let recorder = crate::http_recorder::HttpRecorder::start("");
        for (image, firmware, marker) in [
            (bios, Firmware::Bios, BIOS_DISK_MARKER),
            (uefi, Firmware::Uefi, UEFI_DISK_MARKER),
        ] {
            let started = std::time::Instant::now();
            let vm = Qemu::local(&LocalBoot::Disk(image), firmware, recorder.port());
            assert!(
                vm.wait_for_serial(marker, std::time::Duration::from_secs(120)),
                "{firmware:?}: no {marker}:\n{}",
                vm.serial()
            );
            eprintln!(
                "{firmware:?} disk booted to its marker in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
}

//! Boot artifacts: what each kind takes as input (REST and, as JSON, on the bus) and the rows the
//! API returns. The builders validate inputs; these types only give them a shape.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::format_timestamp;
use crate::proto;

/// The kinds of artifact, by their REST collection name (`/api/<name>`, `/<name>/<id>/<file>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArtifactKind {
    Ipxes,
    Grubs,
    Syslinuxs,
    Isos,
}

impl ArtifactKind {
    pub const ALL: [ArtifactKind; 4] = [
        ArtifactKind::Ipxes,
        ArtifactKind::Grubs,
        ArtifactKind::Syslinuxs,
        ArtifactKind::Isos,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ArtifactKind::Ipxes => "ipxes",
            ArtifactKind::Grubs => "grubs",
            ArtifactKind::Syslinuxs => "syslinuxs",
            ArtifactKind::Isos => "isos",
        }
    }

    /// For messages and operation ids.
    pub fn singular(self) -> &'static str {
        match self {
            ArtifactKind::Ipxes => "ipxe",
            ArtifactKind::Grubs => "grub",
            ArtifactKind::Syslinuxs => "syslinux",
            ArtifactKind::Isos => "iso",
        }
    }

    pub fn parse(name: &str) -> Option<ArtifactKind> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The object store name of one built file: content address, then file name. Rows with equal
/// content share the bytes.
pub fn object_name(content_key: &str, file: &str) -> String {
    format!("{content_key}/{file}")
}

/// The artifact id named by `value`: `/<kind>/<id>/<file>` (what the gateway makes of a URL on
/// this system) or a bare id. Anything else, a URL to another host above all, is refused.
pub fn artifact_id_of(
    field: &'static str,
    value: &str,
    kind: ArtifactKind,
) -> Result<String, ApiError> {
    let id = if let Some(path) = value.strip_prefix('/') {
        let mut parts = path.split('/');
        let (Some(k), Some(id), Some(file), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiError::invalid(
                field,
                format!("must be /{}/<id>/<file> or an artifact id", kind.name()),
            ));
        };
        if k != kind.name() {
            return Err(ApiError::invalid(
                field,
                format!("must name one of the {} (got /{k}/…)", kind.name()),
            ));
        }
        if file.is_empty() {
            return Err(ApiError::invalid(field, "names no file"));
        }
        id
    } else if value.contains("://") {
        return Err(ApiError::invalid(
            field,
            "must be an artifact of this system; other hosts are never fetched from",
        ));
    } else {
        value
    };
    crate::validate::id(field, id)
}

/// `POST /api/ipxes`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpxeInput {
    /// The iPXE script (`#!ipxe` …), at most 256 KiB.
    #[schema(schema_with = crate::rules::schema::text)]
    pub script: String,
    /// `bin-x86_64-efi`, `bin-x86_64-pcbios`, `bin`, `bin-arm64-efi`.
    pub platform: String,
    /// `ipxe`, `snponly`, `undionly`.
    pub driver: String,
    /// `efi`, `kpxe`, `lkrn`.
    pub extension: String,
    /// The sites whose site-bound node tokens may download it; empty or absent: every site.
    /// Not part of what is built: artifacts that differ only here share their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::rules::schema::sites)]
    pub sites: Vec<String>,
}

/// `POST /api/grubs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrubInput {
    /// The medium's label, 1–32 letters, digits, `-`, `_`, `.` and single spaces: GRUB finds its
    /// medium by a marker named after it (spaces and dots become `_`).
    #[schema(schema_with = crate::rules::schema::label)]
    pub label: String,
    /// `efi` (GRUB's own names `x86_64-efi` and `i386-efi` are taken as `efi`: the architecture
    /// decides what is built).
    #[schema(schema_with = crate::rules::schema::grub_platform)]
    pub platform: String,
    /// `x64` (BOOTX64.EFI) or `x86` (BOOTIA32.EFI).
    #[schema(schema_with = crate::rules::schema::grub_architecture)]
    pub architecture: String,
    /// `efi`.
    #[schema(schema_with = crate::rules::schema::grub_extension)]
    pub extension: String,
    /// `img` (a FAT image for El Torito) or `efi` (a zip of `EFI/BOOT/`).
    #[schema(schema_with = crate::rules::schema::grub_fragment)]
    pub fragment: String,
    /// The sites whose site-bound node tokens may download it; empty or absent: every site.
    /// Not part of what is built: artifacts that differ only here share their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::rules::schema::sites)]
    pub sites: Vec<String>,
}

/// `POST /api/syslinuxs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyslinuxInput {
    /// `ldlinux.c32`, `isolinux.bin` or `isohdpfx.bin`.
    #[schema(schema_with = crate::rules::schema::syslinux_fragment)]
    pub fragment: String,
    /// The sites whose site-bound node tokens may download it; empty or absent: every site.
    /// Not part of what is built: artifacts that differ only here share their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::rules::schema::sites)]
    pub sites: Vec<String>,
}

/// `POST /api/isos`. Every `…Url` names an artifact of this system: `/<kind>/<id>/<file>`, the
/// same as an absolute URL on this gateway, or the artifact's bare id. Nothing is fetched from
/// anywhere else.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IsoInput {
    /// The volume id, as written (see `GrubInput`'s `label`); the GRUB images must be built for it.
    #[schema(schema_with = crate::rules::schema::label)]
    pub label: String,
    pub ipxe_uefi_url: String,
    pub ipxe_bios_url: String,
    pub grub_img_url: String,
    pub grub_efi_x64_url: String,
    pub grub_efi_x86_url: String,
    pub ld_linux_url: String,
    pub isolinux_bin_url: String,
    pub isohdpfx_bin_url: String,
    /// The sites whose site-bound node tokens may download it; empty or absent: every site.
    /// Not part of what is built: artifacts that differ only here share their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = crate::rules::schema::sites)]
    pub sites: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactFileRow {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// Where to download it (`GET`, with Range and ETag).
    pub url: String,
}

/// Stands for the sites of inputs that cannot be read: no site has this (empty) id, so a node
/// token bound to a site is refused such an artifact (fail closed), while operators still read it.
pub const UNREADABLE_SITES: &str = "";

/// The sites an artifact's stored inputs mark it for (every kind's inputs carry `sites`);
/// `[UNREADABLE_SITES]` when they cannot be read.
pub fn sites_of(inputs_json: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Sites {
        #[serde(default)]
        sites: Vec<String>,
    }
    serde_json::from_str::<Sites>(inputs_json)
        .map(|s| s.sites)
        .unwrap_or_else(|_| vec![UNREADABLE_SITES.to_owned()])
}

/// What every artifact row carries besides its inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BuildState {
    pub id: String,
    /// `queued`, `working`, `done` or `failed`.
    pub status: String,
    /// 0 to 100, from the build's real steps.
    pub progress: u32,
    /// The tool's message when `failed`; empty otherwise.
    pub error: String,
    /// The main file's download URL (empty until `done`).
    pub url: String,
    /// The main file's size and SHA-256 (0 and empty until `done`).
    pub size: u64,
    pub sha256: String,
    pub files: Vec<ArtifactFileRow>,
    pub created_at: String,
    pub updated_at: String,
}

impl BuildState {
    /// The row's state; the first file is the main one (`url`, `size`, `sha256`).
    pub fn from_proto(a: &proto::Artifact) -> BuildState {
        let file_url = |name: &str| format!("/{}/{}/{name}", a.kind, a.id);
        let files: Vec<ArtifactFileRow> = a
            .files
            .iter()
            .map(|f| ArtifactFileRow {
                name: f.name.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                url: file_url(&f.name),
            })
            .collect();
        let main = files.first();
        BuildState {
            id: a.id.clone(),
            status: a.status.clone(),
            progress: a.progress,
            error: a.error.clone(),
            url: main.map(|f| f.url.clone()).unwrap_or_default(),
            size: main.map(|f| f.size).unwrap_or_default(),
            sha256: main.map(|f| f.sha256.clone()).unwrap_or_default(),
            created_at: format_timestamp(a.created_at_ms),
            updated_at: format_timestamp(a.updated_at_ms),
            files,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpxeRow {
    #[serde(flatten)]
    pub build: BuildState,
    #[serde(flatten)]
    pub input: IpxeInput,
    /// True only when the script is compiled into the binary; false when the binary is
    /// Debian's and the script is delivered beside it (`autoexec.ipxe`).
    pub embedded: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrubRow {
    #[serde(flatten)]
    pub build: BuildState,
    #[serde(flatten)]
    pub input: GrubInput,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyslinuxRow {
    #[serde(flatten)]
    pub build: BuildState,
    #[serde(flatten)]
    pub input: SyslinuxInput,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IsoRow {
    #[serde(flatten)]
    pub build: BuildState,
    #[serde(flatten)]
    pub input: IsoInput,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_refs_stay_inside_the_system() {
        let id = "6a3c2f0e-0d2f-4c7e-9f3e-1a2b3c4d5e6f";
        assert_eq!(
            artifact_id_of("f", &format!("/ipxes/{id}/ipxe.efi"), ArtifactKind::Ipxes).as_deref(),
            Ok(id)
        );
        assert_eq!(
            artifact_id_of("f", id, ArtifactKind::Ipxes).as_deref(),
            Ok(id)
        );
        for bad in [
            format!("http://evil.example/ipxes/{id}/ipxe.efi"),
            format!("/grubs/{id}/x"),
            format!("/ipxes/{id}"),
            format!("/ipxes/{id}/"),
            format!("/ipxes/../{id}/x"),
            "/ipxes/x/y".to_owned(),
            "file:///etc/passwd".to_owned(),
            String::new(),
        ] {
            assert!(
                artifact_id_of("f", &bad, ArtifactKind::Ipxes).is_err(),
                "{bad}"
            );
        }
    }
}

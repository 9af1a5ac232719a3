//! Turning a kind's input JSON into a validated build request, and its content address.

use bootfleet_api::artifacts::{
    artifact_id_of, ArtifactKind, GrubInput, IpxeInput, IsoInput, SyslinuxInput,
};
use bootfleet_api::{validate, ApiError};
use bootfleet_boot_media::{grub, ipxe, syslinux, BuildError};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// A validated request of one kind.
#[derive(Debug)]
pub enum Request {
    Ipxe(IpxeInput, ipxe::IpxeTarget),
    Grub(GrubInput, grub::GrubSpec),
    Syslinux(SyslinuxInput, syslinux::SyslinuxFragment),
    Iso(Box<IsoInput>, Box<IsoRefs>),
}

/// The artifact ids an ISO is made of, one per input field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsoRefs {
    pub ipxe_uefi: String,
    pub ipxe_bios: String,
    pub grub_img: String,
    pub grub_efi_x64: String,
    pub grub_efi_x86: String,
    pub ldlinux: String,
    pub isolinux_bin: String,
    pub isohdpfx_bin: String,
}

pub fn invalid(e: BuildError) -> ApiError {
    match e {
        BuildError::Invalid { field, message } => ApiError::invalid(field, message),
        other => ApiError::internal(other.to_string()),
    }
}

fn from_json<T: DeserializeOwned>(json: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde::Deserialize::deserialize(&mut de).map_err(|e: serde_json::Error| {
        ApiError::invalid("body", format!("does not fit this kind of artifact: {e}"))
    })
}

impl Request {
    /// The sites the artifact is marked for (not part of what is built).
    pub fn sites(&self) -> &[String] {
        match self {
            Request::Ipxe(i, _) => &i.sites,
            Request::Grub(i, _) => &i.sites,
            Request::Syslinux(i, _) => &i.sites,
            Request::Iso(i, _) => &i.sites,
        }
    }
}

pub fn parse(kind: ArtifactKind, json: &str) -> Result<Request, ApiError> {
    let request = parse_kind(kind, json)?;
    validate::sites("sites", request.sites())?;
    Ok(request)
}

fn parse_kind(kind: ArtifactKind, json: &str) -> Result<Request, ApiError> {
    match kind {
        ArtifactKind::Ipxes => {
            let input: IpxeInput = from_json(json)?;
            validate::text("script", &input.script)?;
            let target = ipxe::IpxeTarget::parse(&input.platform, &input.driver, &input.extension)
                .map_err(invalid)?;
            ipxe::validate_script(&input.script).map_err(invalid)?;
            Ok(Request::Ipxe(input, target))
        }
        ArtifactKind::Grubs => {
            let input: GrubInput = from_json(json)?;
            let spec = grub::GrubSpec::parse(
                &input.label,
                &input.platform,
                &input.architecture,
                &input.extension,
                &input.fragment,
            )
            .map_err(invalid)?;
            Ok(Request::Grub(input, spec))
        }
        ArtifactKind::Syslinuxs => {
            let input: SyslinuxInput = from_json(json)?;
            let fragment = syslinux::SyslinuxFragment::parse(&input.fragment).map_err(invalid)?;
            Ok(Request::Syslinux(input, fragment))
        }
        ArtifactKind::Isos => {
            let input: IsoInput = from_json(json)?;
            bootfleet_boot_media::validate_label(&input.label).map_err(invalid)?;
            let refs = IsoRefs {
                ipxe_uefi: artifact_id_of(
                    "ipxeUefiUrl",
                    &input.ipxe_uefi_url,
                    ArtifactKind::Ipxes,
                )?,
                ipxe_bios: artifact_id_of(
                    "ipxeBiosUrl",
                    &input.ipxe_bios_url,
                    ArtifactKind::Ipxes,
                )?,
                grub_img: artifact_id_of("grubImgUrl", &input.grub_img_url, ArtifactKind::Grubs)?,
                grub_efi_x64: artifact_id_of(
                    "grubEfiX64Url",
                    &input.grub_efi_x64_url,
                    ArtifactKind::Grubs,
                )?,
                grub_efi_x86: artifact_id_of(
                    "grubEfiX86Url",
                    &input.grub_efi_x86_url,
                    ArtifactKind::Grubs,
                )?,
                ldlinux: artifact_id_of(
                    "ldLinuxUrl",
                    &input.ld_linux_url,
                    ArtifactKind::Syslinuxs,
                )?,
                isolinux_bin: artifact_id_of(
                    "isolinuxBinUrl",
                    &input.isolinux_bin_url,
                    ArtifactKind::Syslinuxs,
                )?,
                isohdpfx_bin: artifact_id_of(
                    "isohdpfxBinUrl",
                    &input.isohdpfx_bin_url,
                    ArtifactKind::Syslinuxs,
                )?,
            };
            Ok(Request::Iso(Box::new(input), Box::new(refs)))
        }
    }
}

/// The content address: what is built (kind, normalised inputs — for an ISO, the content
/// addresses of its parts) and with which tools. Equal keys mean equal bytes.
pub fn content_key(kind: ArtifactKind, canonical_inputs: &str, tool_versions: &str) -> String {
    let mut h = Sha256::new();
    for part in [kind.name(), canonical_inputs, tool_versions] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    /// The OpenAPI document states the builders' rules from `bootfleet_api::rules`; these hold
    /// the lists and the label pattern to what the builders accept.
    #[test]
    fn the_documented_rules_are_the_builders_rules() {
        use bootfleet_api::rules::*;
        let bad = ["", "EFI", "x86_64", "bin", "img ", "zip"];
        let with_bad = |good: &[&'static str]| [good, &bad[..]].concat();
        for platform in with_bad(GRUB_PLATFORMS) {
            for architecture in with_bad(GRUB_ARCHITECTURES) {
                for extension in with_bad(GRUB_EXTENSIONS) {
                    for fragment in with_bad(GRUB_FRAGMENTS) {
                        let documented = GRUB_PLATFORMS.contains(&platform)
                            && GRUB_ARCHITECTURES.contains(&architecture)
                            && GRUB_EXTENSIONS.contains(&extension)
                            && GRUB_FRAGMENTS.contains(&fragment);
                        let parsed =
                            grub::GrubSpec::parse("L", platform, architecture, extension, fragment);
                        assert_eq!(
                            parsed.is_ok(),
                            documented,
                            "{platform} {architecture} {extension} {fragment}"
                        );
                    }
                }
            }
        }
        for fragment in with_bad(SYSLINUX_FRAGMENTS) {
            let parsed = syslinux::SyslinuxFragment::parse(fragment);
            assert_eq!(
                parsed.is_ok(),
                SYSLINUX_FRAGMENTS.contains(&fragment),
                "{fragment}"
            );
        }
        let pattern = regex::Regex::new(LABEL_PATTERN).expect("label pattern");
        let long = "x".repeat(LABEL_MAX_LEN + 1);
        for label in [
            "Cluster Platform Provisioner ISO",
            "a",
            "a.b_c-d",
            " a",
            "a ",
            "a  b",
            "a/b",
            "ä",
            "",
            &long[1..],
            &long,
        ] {
            let documented = pattern.is_match(label) && label.chars().count() <= LABEL_MAX_LEN;
            assert_eq!(
                bootfleet_boot_media::validate_label(label).is_ok(),
                documented,
                "{label:?}"
            );
        }
    }

    use super::*;

    #[test]
    fn keys_depend_on_every_part() {
        let k = content_key(ArtifactKind::Ipxes, "a", "v1");
        assert_eq!(k.len(), 64);
        assert_eq!(k, content_key(ArtifactKind::Ipxes, "a", "v1"));
        assert_ne!(k, content_key(ArtifactKind::Ipxes, "a", "v2"));
        assert_ne!(k, content_key(ArtifactKind::Grubs, "a", "v1"));
        // Length-prefixed: moving a boundary changes the key.
        assert_ne!(
            content_key(ArtifactKind::Ipxes, "ab", "c"),
            content_key(ArtifactKind::Ipxes, "a", "bc")
        );
    }
}

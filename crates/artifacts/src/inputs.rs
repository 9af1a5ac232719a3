//! Turning a kind's input JSON into a validated build request, and its content address.

use bootfleet_api::artifacts::{ArtifactKind, GrubInput, IpxeInput, IsoInput, SyslinuxInput};
use bootfleet_api::{validate, ApiError};
use bootfleet_artifact_build::{grub, ipxe, syslinux, BuildError};
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

/// `/<kind>/<id>/<file>` (what the gateway makes of a URL on this system) or a bare id.
fn artifact_ref(field: &'static str, value: &str, kind: ArtifactKind) -> Result<String, ApiError> {
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
    validate::id(field, id)
}

pub fn parse(kind: ArtifactKind, json: &str) -> Result<Request, ApiError> {
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
            bootfleet_artifact_build::validate_label(&input.label).map_err(invalid)?;
            let refs = IsoRefs {
                ipxe_uefi: artifact_ref("ipxeUefiUrl", &input.ipxe_uefi_url, ArtifactKind::Ipxes)?,
                ipxe_bios: artifact_ref("ipxeBiosUrl", &input.ipxe_bios_url, ArtifactKind::Ipxes)?,
                grub_img: artifact_ref("grubImgUrl", &input.grub_img_url, ArtifactKind::Grubs)?,
                grub_efi_x64: artifact_ref(
                    "grubEfiX64Url",
                    &input.grub_efi_x64_url,
                    ArtifactKind::Grubs,
                )?,
                grub_efi_x86: artifact_ref(
                    "grubEfiX86Url",
                    &input.grub_efi_x86_url,
                    ArtifactKind::Grubs,
                )?,
                ldlinux: artifact_ref("ldLinuxUrl", &input.ld_linux_url, ArtifactKind::Syslinuxs)?,
                isolinux_bin: artifact_ref(
                    "isolinuxBinUrl",
                    &input.isolinux_bin_url,
                    ArtifactKind::Syslinuxs,
                )?,
                isohdpfx_bin: artifact_ref(
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
    use super::*;

    #[test]
    fn iso_refs_stay_inside_the_system() {
        let id = "6a3c2f0e-0d2f-4c7e-9f3e-1a2b3c4d5e6f";
        assert_eq!(
            artifact_ref("f", &format!("/ipxes/{id}/ipxe.efi"), ArtifactKind::Ipxes).as_deref(),
            Ok(id)
        );
        assert_eq!(
            artifact_ref("f", id, ArtifactKind::Ipxes).as_deref(),
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
                artifact_ref("f", &bad, ArtifactKind::Ipxes).is_err(),
                "{bad}"
            );
        }
    }

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

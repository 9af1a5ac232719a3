//! Parsing public keys people post, and generating key pairs, in-process (no `ssh-keygen`).

use bootfleet_api::{proto, ApiError};
use getrandom::rand_core::UnwrapErr;
use getrandom::SysRng;
use ssh_key::private::{KeypairData, RsaKeypair};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey, PublicKey};

/// RSA keys shorter than this are refused when posted (OpenSSH's own floor is 1024; NIST's 2048).
pub const MIN_POSTED_RSA_BITS: usize = 2048;

/// A validated public key, normalized to one OpenSSH line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub text: String,
    pub algorithm: String,
    pub fingerprint: String,
    pub comment: String,
}

/// The longest comment a posted key may carry (OpenSSH's own are `user@host`).
pub const MAX_COMMENT_CHARS: usize = 256;
/// A comment with a run of this many base64 characters carries key material, not a name: a
/// private key's body pasted after the public key would otherwise be served to every node.
const KEY_MATERIAL_RUN: usize = 48;

/// Checks a public key's comment: bounded, printable, and no key material in it.
fn check_comment(field: &str, comment: &str) -> Result<(), ApiError> {
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::invalid(
            field,
            format!("the key's comment is longer than {MAX_COMMENT_CHARS} characters"),
        ));
    }
    if comment.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "the key's comment must be printable text",
        ));
    }
    let mut run = 0;
    for c in comment.chars() {
        run = if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=') {
            run + 1
        } else {
            0
        };
        if run >= KEY_MATERIAL_RUN {
            return Err(ApiError::invalid(
                field,
                "the key's comment holds key material (a long base64 run); post only the public key line, with a short comment; it was not stored",
            ));
        }
    }
    Ok(())
}

fn rsa_bits(key: &KeyData) -> Option<usize> {
    let n = key.rsa()?.n().as_positive_bytes()?;
    let first = *n.first()?;
    Some(n.len() * 8 - first.leading_zeros() as usize)
}

/// Parses one OpenSSH public key line. The text is never logged or echoed back: a user who
/// pasted a private key by mistake must not find it in our logs.
pub fn parse_public(field: &str, text: &str) -> Result<ParsedKey, ApiError> {
    let trimmed = text.trim();
    if trimmed.contains("PRIVATE KEY") {
        return Err(ApiError::invalid(
            field,
            "this is a private key; post only the public key (the .pub file); it was not stored",
        ));
    }
    if trimmed.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if trimmed.lines().count() != 1 {
        return Err(ApiError::invalid(
            field,
            "must be exactly one public key line",
        ));
    }
    let key = PublicKey::from_openssh(trimmed).map_err(|_| {
        ApiError::invalid(
            field,
            "not an OpenSSH public key (expected e.g. `ssh-ed25519 AAAA... comment`)",
        )
    })?;
    let comment = key
        .comment()
        .as_str()
        .map_err(|_| ApiError::invalid(field, "the key's comment must be printable text"))?;
    check_comment(field, comment)?;
    match key.algorithm() {
        Algorithm::Dsa => {
            return Err(ApiError::invalid(
                field,
                "ssh-dss keys are insecure and not accepted",
            ))
        }
        Algorithm::Rsa { .. } => {
            let bits = rsa_bits(key.key_data()).unwrap_or(0);
            if bits < MIN_POSTED_RSA_BITS {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "rsa keys must have at least {MIN_POSTED_RSA_BITS} bits (this has {bits})"
                    ),
                ));
            }
        }
        _ => {}
    }
    let text = key
        .to_openssh()
        .map_err(|e| ApiError::internal(format!("cannot encode key: {e}")))?;
    Ok(ParsedKey {
        text,
        algorithm: key.algorithm().as_str().to_owned(),
        fingerprint: key.fingerprint(HashAlg::Sha256).to_string(),
        comment: comment.to_owned(),
    })
}

/// The algorithms `GET /api/sshkey?algorithm=` offers.
pub const GENERATED_ALGORITHMS: [&str; 5] = [
    "ed25519",
    "ecdsa-p256",
    "ecdsa-p384",
    "rsa-3072",
    "rsa-4096",
];

/// Canonical algorithm name for `GET /api/sshkey?algorithm=`; empty means the default, ed25519.
pub fn generated_algorithm(requested: &str) -> Result<&'static str, ApiError> {
    let requested = requested.trim().to_ascii_lowercase();
    let known = bootfleet_api::rules::SSH_KEY_ALGORITHMS
        .iter()
        .find(|(name, _)| *name == requested)
        .map(|(_, algorithm)| *algorithm);
    let name = match known {
        _ if requested.is_empty() => "ed25519",
        Some(algorithm) => algorithm,
        None => {
            return Err(ApiError::invalid(
                "algorithm",
                format!(
                    "unsupported; use one of {}",
                    GENERATED_ALGORITHMS.join(", ")
                ),
            ))
        }
    };
    Ok(name)
}

/// Generates a key pair. CPU-bound (RSA takes a while): call from a blocking thread.
pub fn generate(algorithm: &'static str) -> Result<proto::GeneratedSshKey, ApiError> {
    let fail = |e: ssh_key::Error| ApiError::internal(format!("key generation failed: {e}"));
    // The kernel's randomness; it does not fail once the system has booted.
    let mut rng = UnwrapErr(SysRng);
    let mut key = match algorithm {
        "ed25519" => PrivateKey::random(&mut rng, Algorithm::Ed25519).map_err(fail)?,
        "ecdsa-p256" => PrivateKey::random(
            &mut rng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        )
        .map_err(fail)?,
        "ecdsa-p384" => PrivateKey::random(
            &mut rng,
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP384,
            },
        )
        .map_err(fail)?,
        "rsa-3072" | "rsa-4096" => {
            let bits = if algorithm == "rsa-3072" { 3072 } else { 4096 };
            let pair = RsaKeypair::random(&mut rng, bits).map_err(fail)?;
            PrivateKey::new(KeypairData::from(pair), "").map_err(fail)?
        }
        other => {
            return Err(generated_algorithm(other)
                .err()
                .unwrap_or_else(|| ApiError::internal("unreachable algorithm")))
        }
    };
    key.set_comment("bootfleet");
    let private_key = key.to_openssh(LineEnding::LF).map_err(fail)?;
    let public = key.public_key();
    Ok(proto::GeneratedSshKey {
        algorithm: algorithm.to_owned(),
        private_key: private_key.to_string(),
        public_key: public.to_openssh().map_err(fail)?,
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG2Y7dKzjZ0mXkUo3xw1Vv0bLxq3vZxq8wq0xq6Vv1nU alice@example";

    #[test]
    fn a_comment_is_short_printable_text_without_key_material() {
        let pair = generate("ed25519").expect("generate");
        // The type and key, without the generator's own comment.
        let line = pair
            .public_key
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let body: String = pair
            .private_key
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        for (comment, what) in [
            // Within the length bound, so the key material itself is what is refused.
            (&body[..120], "key material"),
            (&"x".repeat(MAX_COMMENT_CHARS + 1), "longer"),
        ] {
            let posted = format!("{line} {comment}");
            let err = parse_public("text", &posted).expect_err(what);
            assert_eq!(err.field.as_deref(), Some("text"));
            assert!(err.message.contains(what), "{}", err.message);
            assert!(
                !err.message.contains(&body[..120]),
                "the key is not echoed back"
            );
        }
        let ok = parse_public(
            "text",
            &format!("{line} deploy key for rack-7 (ops@example.org)"),
        )
        .expect("a human comment");
        assert_eq!(ok.comment, "deploy key for rack-7 (ops@example.org)");
        // The re-serialised line is the parsed key and its comment, nothing else.
        assert_eq!(
            ok.text,
            format!("{line} deploy key for rack-7 (ops@example.org)")
        );
    }

    #[test]
    fn parses_and_normalizes_a_public_key() {
        let k = parse_public("text", &format!("  {ED25519}\n")).expect("valid key");
        assert_eq!(k.text, ED25519);
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment, "alice@example");
        assert!(k.fingerprint.starts_with("SHA256:"));
    }

    #[test]
    fn refuses_private_keys_and_garbage_without_echoing_them() {
        let generated = generate("ed25519").expect("generate");
        let err = parse_public("text", &generated.private_key).expect_err("private key");
        assert_eq!(err.field.as_deref(), Some("text"));
        assert!(err.message.contains("private key"));
        assert!(!err.message.contains("BEGIN"));
        for bad in [
            "",
            "ssh-ed25519",
            "hello world",
            "ssh-ed25519 AAAA!!!",
            &format!("{ED25519}\n{ED25519}"),
        ] {
            let err = parse_public("text", bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("text"), "{bad}");
        }
    }

    #[test]
    fn every_generated_algorithm_parses_back() {
        for name in GENERATED_ALGORITHMS {
            let pair = generate(name).expect(name);
            let parsed = parse_public("text", &pair.public_key).expect(name);
            assert_eq!(parsed.fingerprint, pair.fingerprint, "{name}");
            let private = PrivateKey::from_openssh(&pair.private_key).expect(name);
            assert_eq!(
                private
                    .public_key()
                    .fingerprint(HashAlg::Sha256)
                    .to_string(),
                pair.fingerprint
            );
            if name.starts_with("rsa") {
                let bits = rsa_bits(private.public_key().key_data());
                assert_eq!(bits, Some(if name == "rsa-3072" { 3072 } else { 4096 }));
            }
        }
    }

    #[test]
    fn algorithm_names_and_aliases() {
        assert_eq!(generated_algorithm("").ok(), Some("ed25519"));
        assert_eq!(generated_algorithm("RSA").ok(), Some("rsa-3072"));
        assert_eq!(generated_algorithm("ecdsa").ok(), Some("ecdsa-p256"));
        for bad in ["dsa", "rsa-1024", "ed448", "; rm -rf /"] {
            let err = generated_algorithm(bad).expect_err(bad);
            assert_eq!(err.field.as_deref(), Some("algorithm"));
        }
    }
}

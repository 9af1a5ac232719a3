//! Compact JSON Web Signatures (RFC 7515) as the gateway's tokens use them, on `ring`.
//!
//! HS256 tokens are minted and checked with the gateway's secret; RS256, ES256 and EdDSA tokens
//! are checked with a public key the operator configures (PEM). Only what the gateway needs is
//! here: no JWK sets, no encryption, no other algorithms, and a header that names a critical
//! extension (`crit`) is refused, as the RFC asks of anything that does not understand it.
//! (`ring` is already in the tree through rustls; a JWT crate brought a second generation of
//! RustCrypto with it, a fifth of the release build.)

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::{hmac, signature};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A signature algorithm, by its JOSE name (`alg`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    fn from_name(name: &str) -> Option<Alg> {
        [Alg::Hs256, Alg::Rs256, Alg::Es256, Alg::EdDsa]
            .into_iter()
            .find(|alg| alg.name() == name)
    }
}

/// A public key that checks one algorithm's signatures, in the form `ring` takes it.
#[derive(Clone, Debug)]
pub struct PublicKey {
    alg: Alg,
    /// RS256: the PKCS#1 `RSAPublicKey`; ES256: the uncompressed point; EdDSA: the 32 bytes.
    key: Vec<u8>,
}

// DER object identifiers (their content bytes) of the keys we take.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OBJECT_ID: u8 = 0x06;

/// RSA moduli `ring` verifies with (RSA_PKCS1_2048_8192_SHA256).
const RSA_BITS: std::ops::RangeInclusive<usize> = 2048..=8192;

impl PublicKey {
    /// Reads a PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo) holding an RSA, P-256 or
    /// Ed25519 key, or `RSA PUBLIC KEY` (PKCS#1). The algorithm follows from the key.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_owned())?;
        let (label, der) = pem_block(text)?;
        match label {
            "RSA PUBLIC KEY" => rsa_key(der),
            "PUBLIC KEY" => spki_key(&der),
            other => Err(format!(
                "a PEM {other:?} block; expected \"PUBLIC KEY\" (RSA, P-256 or Ed25519) or \"RSA PUBLIC KEY\""
            )),
        }
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        let alg: &dyn signature::VerificationAlgorithm = match self.alg {
            Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Alg::Es256 => &signature::ECDSA_P256_SHA256_FIXED,
            Alg::EdDsa => &signature::ED25519,
            Alg::Hs256 => return false,
        };
        signature::UnparsedPublicKey::new(alg, &self.key)
            .verify(message, sig)
            .is_ok()
    }
}

/// The first PEM block of `text`: its label and its decoded body.
fn pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    let begin = text
        .find("-----BEGIN ")
        .ok_or("not a PEM file (no -----BEGIN line)")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or("a PEM BEGIN line without its end")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + "-----".len()..];
    let end_line = format!("-----END {label}-----");
    let body = &body[..body
        .find(&end_line)
        .ok_or_else(|| format!("the PEM block {label:?} has no {end_line} line"))?];
    let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| format!("the PEM block {label:?} is not base64"))?;
    Ok((label, der))
}

/// One DER element at the start of `input`: its tag, its content and what follows it.
fn der_element(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "a malformed DER key".to_owned();
    let (&tag, rest) = input.split_first().ok_or_else(bad)?;
    let (&first, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
    match der_element(input)? {
        (t, content, rest) if t == tag => Ok((content, rest)),
        _ => Err("a malformed DER key".to_owned()),
    }
}

/// A SubjectPublicKeyInfo: the algorithm (and curve) and the key's bits.
fn spki_key(der: &[u8]) -> Result<PublicKey, String> {
    let (spki, _) = expect(der, SEQUENCE)?;
    let (algorithm, rest) = expect(spki, SEQUENCE)?;
    let (bits, _) = expect(rest, BIT_STRING)?;
    // The first byte of a BIT STRING counts the unused bits of its last byte: none in a key.
    let key = match bits.split_first() {
        Some((0, key)) => key,
        _ => return Err("a malformed DER key".to_owned()),
    };
    let (oid, params) = expect(algorithm, OBJECT_ID)?;
    match oid {
        OID_RSA => rsa_key(key.to_vec()),
        OID_EC => {
            let curve = expect(params, OBJECT_ID).map(|(curve, _)| curve);
            if curve != Ok(OID_P256) {
                return Err("an EC key on a curve other than P-256 (ES256 needs P-256)".into());
            }
            // An uncompressed point: 0x04, then x and y.
            if key.len() != 65 || key[0] != 0x04 {
                return Err("a P-256 key that is not an uncompressed point".into());
            }
            Ok(PublicKey {
                alg: Alg::Es256,
                key: key.to_vec(),
            })
        }
        OID_ED25519 if key.len() == 32 => Ok(PublicKey {
            alg: Alg::EdDsa,
            key: key.to_vec(),
        }),
        OID_ED25519 => Err("an Ed25519 key that is not 32 bytes".into()),
        _ => Err("a public key of a kind not taken here (RSA, P-256 or Ed25519)".into()),
    }
}

/// A PKCS#1 RSAPublicKey (modulus, exponent), checked for a modulus `ring` verifies with.
fn rsa_key(der: Vec<u8>) -> Result<PublicKey, String> {
    let (fields, _) = expect(&der, SEQUENCE)?;
    let (modulus, rest) = expect(fields, INTEGER)?;
    expect(rest, INTEGER)?;
    let modulus = match modulus {
        [0, rest @ ..] => rest,
        all => all,
    };
    let bits = modulus
        .first()
        .map_or(0, |&b| modulus.len() * 8 - b.leading_zeros() as usize);
    if !RSA_BITS.contains(&bits) {
        return Err(format!(
            "an RSA key of {bits} bits; RS256 keys here have 2048 to 8192"
        ));
    }
    Ok(PublicKey {
        alg: Alg::Rs256,
        key: der,
    })
}

// `typ` first, as other implementations write it.
#[derive(Serialize, Deserialize)]
struct Header {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    alg: String,
    #[serde(default, skip_serializing)]
    crit: Option<serde_json::Value>,
}

/// Why a token was refused, before its claims are looked at.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not three base64url parts, or a header that is not JSON naming an algorithm.
    Malformed,
    /// An algorithm this verifier has no key for (including `none`).
    NoKey,
    /// The signature does not match, or the claims are not the expected JSON.
    Invalid,
}

/// A token split into its parts, its header read and nothing checked yet.
pub struct Token<'a> {
    alg: Option<Alg>,
    signed: &'a str,
    payload: &'a str,
    signature: &'a str,
}

// By hand: the parts are a bearer credential and stay out of logs.
impl std::fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("alg", &self.alg).finish()
    }
}

impl<'a> Token<'a> {
    pub fn parse(token: &'a str) -> Result<Token<'a>, Refused> {
        let (signed, signature) = token.rsplit_once('.').ok_or(Refused::Malformed)?;
        let (header, payload) = signed.split_once('.').ok_or(Refused::Malformed)?;
        // Exactly three parts: a fourth would hide in the claims and fail only after the
        // signature was checked.
        if payload.contains('.') {
            return Err(Refused::Malformed);
        }
        let header: Header = URL_SAFE_NO_PAD
            .decode(header)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(Refused::Malformed)?;
        if header.crit.is_some() {
            return Err(Refused::NoKey);
        }
        Ok(Token {
            alg: Alg::from_name(&header.alg),
            signed,
            payload,
            signature,
        })
    }

    /// The algorithm the header names, if it is one known here.
    pub fn alg(&self) -> Option<Alg> {
        self.alg
    }

    /// The claims, if an HS256 token carries `secret`'s signature.
    pub fn verify_hs256<T: DeserializeOwned>(&self, secret: &[u8]) -> Result<T, Refused> {
        if self.alg != Some(Alg::Hs256) {
            return Err(Refused::NoKey);
        }
        let sig = self.signature_bytes()?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        hmac::verify(&key, self.signed.as_bytes(), &sig).map_err(|_| Refused::Invalid)?;
        self.claims()
    }

    /// The claims, if the token is signed by `key` with `key`'s algorithm.
    pub fn verify_with<T: DeserializeOwned>(&self, key: &PublicKey) -> Result<T, Refused> {
        if self.alg != Some(key.alg) {
            return Err(Refused::NoKey);
        }
        let sig = self.signature_bytes()?;
        if !key.verifies(self.signed.as_bytes(), &sig) {
            return Err(Refused::Invalid);
        }
        self.claims()
    }

    fn signature_bytes(&self) -> Result<Vec<u8>, Refused> {
        URL_SAFE_NO_PAD
            .decode(self.signature)
            .map_err(|_| Refused::Malformed)
    }

    fn claims<T: DeserializeOwned>(&self) -> Result<T, Refused> {
        let json = URL_SAFE_NO_PAD
            .decode(self.payload)
            .map_err(|_| Refused::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| Refused::Invalid)
    }
}

/// Signs `claims` as an HS256 token with `secret`.
pub fn sign_hs256<T: Serialize>(claims: &T, secret: &[u8]) -> Result<String, String> {
    let header = Header {
        alg: Alg::Hs256.name().to_owned(),
        typ: Some("JWT".to_owned()),
        crit: None,
    };
    let unencodable = |e: serde_json::Error| format!("cannot encode token: {e}");
    let header = serde_json::to_vec(&header).map_err(unencodable)?;
    let claims = serde_json::to_vec(claims).map_err(unencodable)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    Ok(compact(&header, &claims, |signed| {
        hmac::sign(&key, signed).as_ref().to_vec()
    }))
}

/// A compact token of a header's and the claims' JSON, signed by `sign` over their parts.
/// (Public to the crate's tests too, which sign with other keys and headers.)
pub(crate) fn compact(header: &[u8], claims: &[u8], sign: impl FnOnce(&[u8]) -> Vec<u8>) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = sign(signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tokens minted by another implementation (jsonwebtoken 10.4.0) with the claims
    /// `{"sub":"interop","role":"user","iss":"bootfleet","iat":1764547200,"exp":4102444800}`:
    /// HS256 with the secret `[7; 32]`, the others with the private halves of the keys below
    /// and RFC 8410's Ed25519 example key.
    const HS256: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJpbnRlcm9wIiwicm9sZSI6InVzZXIiLCJpc3MiOiJib290ZmxlZXQiLCJpYXQiOjE3NjQ1NDcyMDAsImV4cCI6NDEwMjQ0NDgwMH0.NNFix1zoah8K3HwTOhRKeb60Z8YKkBwbeCyn5qRy0Ls";
    const RS256: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJpbnRlcm9wIiwicm9sZSI6InVzZXIiLCJpc3MiOiJib290ZmxlZXQiLCJpYXQiOjE3NjQ1NDcyMDAsImV4cCI6NDEwMjQ0NDgwMH0.EowJcLwuUkRKKAk0YO3K40nXx769dkRKHDW14TVil5KvS5LB-DYTH7p2eeNRgFTDir_ukEnUu9aamc1FN3KHNKujqg35oTNxFjS-lvfvT8gqvKiHmxC0D5MwfXm7M3-DG9c1rNRZmjFDdUhEgqzhN-3qZPEB5h8QLlEZzt7jwvNcFZtmrqQo_fJrZWEE_Zz0TerzXA0tGo4w5LMdPQKU95klR2kXN0g8lB62Ui-jsPPdmRXzo-rjooJn4UEFFsen_48eY5T0yQopElI-5oSDeqKCpcatHagzQTbJ_S-Ow8yUxUmoXu-xTRyVoc5n04lEiFcIQjZeXLw-hnL8LM_0Gw";
    const ES256: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJpbnRlcm9wIiwicm9sZSI6InVzZXIiLCJpc3MiOiJib290ZmxlZXQiLCJpYXQiOjE3NjQ1NDcyMDAsImV4cCI6NDEwMjQ0NDgwMH0.tzoIdjAvYWIF6IZLeI_RPQ41_80xDGMdyfkTkfADnR-PdYSi-3Ivhwx85xUPC66FRAwo5BlKJXY06AyLYzfdiQ";
    const EDDSA: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFZERTQSJ9.eyJzdWIiOiJpbnRlcm9wIiwicm9sZSI6InVzZXIiLCJpc3MiOiJib290ZmxlZXQiLCJpYXQiOjE3NjQ1NDcyMDAsImV4cCI6NDEwMjQ0NDgwMH0.rl8QqOXo5UYrZ3SLt6DP2EltnmpG9c4iZJhv0K8iAYX8qqzjVC0K5UMkyqr03WkLAa3-cJYI0LRm241SkQjHCQ";

    // Public keys of testdata/jwt (openssl made them; their private halves were thrown away).
    const RSA_SPKI: &str = include_str!("../testdata/jwt/rsa-2048.pem");
    const RSA_PKCS1: &str = include_str!("../testdata/jwt/rsa-2048-pkcs1.pem");
    const P256: &str = include_str!("../testdata/jwt/p256.pem");
    const RSA_1024: &str = include_str!("../testdata/jwt/rsa-1024.pem");
    const P384: &str = include_str!("../testdata/jwt/p384.pem");
    // The public key of RFC 8410, section 10.3.
    const ED25519: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    #[derive(Debug, PartialEq, Deserialize)]
    struct Interop {
        sub: String,
        exp: u64,
    }

    fn key(pem: &str) -> PublicKey {
        PublicKey::from_pem(pem.as_bytes()).expect("a usable key")
    }

    fn expected() -> Interop {
        Interop {
            sub: "interop".into(),
            exp: 4_102_444_800,
        }
    }

    /// The token with one character of its signature changed (not the last, which may carry
    /// only padding bits).
    fn altered(token: &str) -> String {
        let at = token.len() - 5;
        let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
        format!("{}{swapped}{}", &token[..at], &token[at + 1..])
    }

    #[test]
    fn tokens_of_another_implementation_verify() {
        let parsed = Token::parse(HS256).expect("parsed");
        assert_eq!(parsed.verify_hs256::<Interop>(&[7; 32]), Ok(expected()));
        assert_eq!(
            parsed.verify_hs256::<Interop>(&[8; 32]),
            Err(Refused::Invalid)
        );
        for (token, pem, alg) in [
            (RS256, RSA_SPKI, Alg::Rs256),
            (RS256, RSA_PKCS1, Alg::Rs256),
            (ES256, P256, Alg::Es256),
            (EDDSA, ED25519, Alg::EdDsa),
        ] {
            let key = key(pem);
            assert_eq!(key.alg(), alg);
            let parsed = Token::parse(token).expect("parsed");
            assert_eq!(
                parsed.verify_with::<Interop>(&key),
                Ok(expected()),
                "{alg:?}"
            );
            let altered = altered(token);
            assert_eq!(
                Token::parse(&altered)
                    .expect("parsed")
                    .verify_with::<Interop>(&key),
                Err(Refused::Invalid),
                "{alg:?} altered"
            );
            // A key of one kind never checks a token of another.
            assert_eq!(
                Token::parse(HS256)
                    .expect("parsed")
                    .verify_with::<Interop>(&key),
                Err(Refused::NoKey)
            );
        }
        assert_eq!(
            Token::parse(ES256)
                .expect("parsed")
                .verify_with::<Interop>(&key(RSA_SPKI)),
            Err(Refused::NoKey)
        );
    }

    #[test]
    fn minted_tokens_are_byte_for_byte_the_other_implementations() {
        #[derive(Serialize)]
        struct Claims {
            sub: &'static str,
            role: &'static str,
            iss: &'static str,
            iat: u64,
            exp: u64,
        }
        let claims = Claims {
            sub: "interop",
            role: "user",
            iss: "bootfleet",
            iat: 1_764_547_200,
            exp: 4_102_444_800,
        };
        let token = sign_hs256(&claims, &[7; 32]).expect("signed");
        assert_eq!(token, HS256, "the same header, claims and signature");
    }

    /// A signature by the public key used as an HMAC secret (the classic algorithm confusion)
    /// and the `none` algorithm get nowhere.
    #[test]
    fn algorithm_confusion_and_none_are_refused() {
        let rsa = key(RSA_SPKI);
        let claims = br#"{"sub":"interop","exp":4102444800}"#;
        let public_key_as_secret = hmac::Key::new(hmac::HMAC_SHA256, RSA_SPKI.as_bytes());
        for alg in ["RS256", "HS256"] {
            let header = format!(r#"{{"alg":"{alg}"}}"#);
            let forged = compact(header.as_bytes(), claims, |signed| {
                hmac::sign(&public_key_as_secret, signed).as_ref().to_vec()
            });
            let parsed = Token::parse(&forged).expect("parsed");
            assert!(parsed.verify_with::<Interop>(&rsa).is_err(), "{alg}");
            assert!(parsed.verify_hs256::<Interop>(&[7; 32]).is_err(), "{alg}");
        }
        let none = compact(br#"{"alg":"none"}"#, claims, |_| Vec::new());
        let parsed = Token::parse(&none).expect("parsed");
        assert_eq!(parsed.alg(), None);
        assert_eq!(
            parsed.verify_hs256::<Interop>(&[7; 32]),
            Err(Refused::NoKey)
        );
        assert_eq!(parsed.verify_with::<Interop>(&rsa), Err(Refused::NoKey));
    }

    #[test]
    fn malformed_tokens_and_critical_headers_are_refused() {
        for token in [
            "",
            "abc",
            "a.b",
            "!!.e30.AA",
            "e30.e30.AA",
            "bm90IGpzb24.e30.AA",
            "eyJhbGciOiJIUzI1NiJ9.e30.e30.AA",
        ] {
            assert_eq!(
                Token::parse(token).err(),
                Some(Refused::Malformed),
                "{token:?}"
            );
        }
        let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","crit":["exp"]}"#);
        assert_eq!(
            Token::parse(&format!("{crit}.e30.AA")).err(),
            Some(Refused::NoKey)
        );
        // Claims that are not JSON, behind a good signature, are refused too.
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let token = compact(br#"{"alg":"HS256"}"#, b"not json", |signed| {
            hmac::sign(&key, signed).as_ref().to_vec()
        });
        assert_eq!(
            Token::parse(&token)
                .expect("parsed")
                .verify_hs256::<Interop>(&[7; 32]),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn keys_that_cannot_serve_are_refused_with_the_reason() {
        let refusal = |pem: &str| PublicKey::from_pem(pem.as_bytes()).expect_err("refused");
        assert!(
            refusal(RSA_1024).contains("1024 bits"),
            "{}",
            refusal(RSA_1024)
        );
        assert!(refusal(P384).contains("P-256"), "{}", refusal(P384));
        assert!(refusal("not a key").contains("no -----BEGIN"));
        assert!(
            refusal("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .contains("CERTIFICATE")
        );
        assert!(
            refusal("-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n")
                .contains("base64")
        );
        assert!(
            refusal("-----BEGIN PUBLIC KEY-----\nMAMCAQE=\n-----END PUBLIC KEY-----\n")
                .contains("malformed")
        );
        let truncated = RSA_SPKI.replace("YwIDAQAB\n", "\n");
        assert!(PublicKey::from_pem(truncated.as_bytes()).is_err());
    }
}

//! Operator and node authentication with JWTs.
//!
//! Tokens are signed with an HS256 shared secret (minted by `bootfleet token`), or by a key the
//! operator configures (RS256/ES256/EdDSA public key in PEM). Roles: `admin` may do anything,
//! `user` may only read, `node` may only read what a booting node needs and register itself.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use bootfleet_api::{ApiError, ErrorCode};

use crate::jwt::{self, PublicKey, Token};

pub const ISSUER: &str = "bootfleet";
pub const DEFAULT_TOKEN_DAYS: u32 = 30;
/// A secret shorter than this is refused: HS256 is only as strong as its key.
pub const MIN_SECRET_BYTES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
    Node,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "user" => Ok(Role::User),
            "node" => Ok(Role::Node),
            other => Err(format!("unknown role {other:?} (admin, user or node)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::User => "user",
            Role::Node => "node",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    /// A `node` token scoped to one site (artifactId): it registers nodes of that site only,
    /// and reads only what is marked for its site or for every site ([`Claims::may_read`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

impl Claims {
    /// Whether these claims may read a thing marked for `sites` (empty: every site). Only a
    /// node token bound to a site is limited; `what` names the thing in the refusal.
    pub fn may_read(&self, sites: &[String], what: &dyn Fn() -> String) -> Result<(), ApiError> {
        match (&self.role, &self.site) {
            (Role::Node, Some(site)) if !sites.is_empty() && !sites.contains(site) => {
                Err(ApiError::new(
                    ErrorCode::PermissionDenied,
                    format!(
                        "this node token is for site \"{site}\"; {} is for other sites",
                        what()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// [`Claims::may_read`] for a request that may carry no claims (a machine token, say).
pub fn may_read(
    claims: Option<&Claims>,
    sites: &[String],
    what: &dyn Fn() -> String,
) -> Result<(), ApiError> {
    claims.map_or(Ok(()), |c| c.may_read(sites, what))
}

/// What a route requires of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (health, OpenAPI document).
    Public,
    /// `admin` or `user`.
    Read,
    /// `admin` only.
    Write,
    /// What a booting node fetches: `admin`, `user` or `node`; the token may come in `?token=`
    /// because iPXE and a kernel command line cannot send headers.
    NodeRead,
    /// What a node reports about itself (registration): `admin` or `node`. The token must come
    /// in the Authorization header.
    NodeWrite,
    /// What a machine fetches for itself (its script, its rendered templates): its own machine
    /// token (checked by the `machines` service), or an `admin` or `user` token. Either may come
    /// in `?token=`, because iPXE cannot send headers.
    MachineRead,
    /// What a machine reports about itself (inventory, the install callback): its own machine
    /// token, or an `admin` token; in the header or `?token=`.
    MachineWrite,
}

impl Access {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public => true,
            Access::Read => matches!(role, Role::Admin | Role::User),
            Access::Write => role == Role::Admin,
            Access::NodeRead => true,
            Access::NodeWrite => matches!(role, Role::Admin | Role::Node),
            Access::MachineRead => matches!(role, Role::Admin | Role::User),
            Access::MachineWrite => role == Role::Admin,
        }
    }

    pub fn accepts_query_token(self) -> bool {
        matches!(
            self,
            Access::NodeRead | Access::MachineRead | Access::MachineWrite
        )
    }

    /// Whether a machine token (checked by the `machines` service, not here) may stand in for
    /// an operator token.
    pub fn accepts_machine_token(self) -> bool {
        matches!(self, Access::MachineRead | Access::MachineWrite)
    }
}

/// A machine token the caller presented (a request extension on machine routes).
#[derive(Clone)]
pub struct MachineToken(pub String);

impl std::fmt::Debug for MachineToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MachineToken(***)")
    }
}

impl MachineToken {
    /// `token` as a machine token, when `access` takes one and it is one: the `machines`
    /// service checks it (it holds the key), so it passes the gateway unverified.
    pub fn of(access: Access, token: Option<&str>) -> Option<MachineToken> {
        token
            .filter(|t| {
                access.accepts_machine_token()
                    && t.starts_with(bootfleet_api::machines::MACHINE_TOKEN_PREFIX)
            })
            .map(|t| MachineToken(t.to_owned()))
    }
}

/// A secret that never shows in `Debug` output.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Result<Secret, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the jwt secret must be at least {MIN_SECRET_BYTES} bytes"
            ));
        }
        Ok(Secret(bytes))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Verifies tokens: the HS256 secret and any configured public keys.
#[derive(Clone)]
pub struct Verifier {
    secret: Secret,
    keys: Vec<PublicKey>,
    verified: Arc<Verified>,
}

/// Seconds a token stays valid past its `exp` (clock skew between minter and gateway).
const LEEWAY_SECS: u64 = 30;

/// Tokens that passed every check, with their claims: a booting node sends the same token with
/// every read, and its signature and JSON need checking once (issue 19). Whether a token is
/// valid depends only on the keys, fixed for a `Verifier`'s life, and on the time, so a hit
/// still checks `exp`. Only verified tokens get in, so nobody without a key can fill it; when
/// full it starts over.
#[derive(Default)]
struct Verified(RwLock<HashMap<Box<str>, Claims>>);

impl Verified {
    const MAX: usize = 4096;

    fn get(&self, token: &str) -> Option<Claims> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn insert(&self, token: &str, claims: &Claims) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(token.into(), claims.clone());
    }

    fn remove(&self, token: &str) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("public_keys", &self.keys.len())
            .finish()
    }
}

impl Verifier {
    pub fn new(secret: Secret) -> Self {
        Verifier {
            secret,
            keys: Vec::new(),
            verified: Arc::default(),
        }
    }

    /// Adds a PEM public key (RSA, EC P-256 or Ed25519); the algorithm is taken from its kind.
    pub fn with_public_key_pem(mut self, pem: &[u8]) -> Result<Self, String> {
        let key = PublicKey::from_pem(pem).map_err(|e| format!("unusable jwt public key: {e}"))?;
        self.keys.push(key);
        Ok(self)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        self.verify_at(token, now_secs())
    }

    /// [`Verifier::verify`] at `now` (seconds since the epoch) for a token verified before;
    /// a new token's `exp` is checked against the clock.
    fn verify_at(&self, token: &str, now: u64) -> Result<Claims, ApiError> {
        if let Some(claims) = self.verified.get(token) {
            if claims.exp.saturating_add(LEEWAY_SECS) < now {
                self.verified.remove(token);
                return Err(unauthenticated("token expired"));
            }
            return Ok(claims);
        }
        let claims = self.verify_signed(token, now)?;
        self.verified.insert(token, &claims);
        Ok(claims)
    }

    /// Every check on a token not seen before: header, key, signature, issuer, expiry.
    fn verify_signed(&self, token: &str, now: u64) -> Result<Claims, ApiError> {
        let token = Token::parse(token).map_err(|_| unauthenticated("malformed token"))?;
        let signed: Signed = match token.alg() {
            Some(jwt::Alg::Hs256) => token.verify_hs256(&self.secret.0),
            alg => {
                let mut keys = self
                    .keys
                    .iter()
                    .filter(|key| Some(key.alg()) == alg)
                    .peekable();
                if keys.peek().is_none() {
                    return Err(unauthenticated(
                        "token signed with an algorithm not configured here",
                    ));
                }
                // Several keys of one kind (a key being rolled over): any of them may have signed.
                keys.find_map(|key| token.verify_with(key).ok())
                    .ok_or(jwt::Refused::Invalid)
            }
        }
        .map_err(|_| unauthenticated("invalid token"))?;
        let invalid = || unauthenticated("invalid token");
        // A token meant for an audience is meant for someone else: this gateway names none.
        if signed.claims.iss != ISSUER || signed.aud.is_some() {
            return Err(invalid());
        }
        if signed
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err(invalid());
        }
        if signed.claims.exp.saturating_add(LEEWAY_SECS) < now {
            return Err(unauthenticated("token expired"));
        }
        Ok(signed.claims)
    }
}

/// A token's claims with the registered ones this gateway checks but does not keep.
#[derive(Deserialize)]
struct Signed {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    aud: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    nbf: Option<u64>,
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Mints an HS256 token valid for `days` days.
pub fn mint(secret: &Secret, role: Role, subject: &str, days: u32) -> Result<String, String> {
    mint_for_site(secret, role, subject, days, None)
}

/// Like [`mint`]; `site` scopes a `node` token to one site (artifactId).
pub fn mint_for_site(
    secret: &Secret,
    role: Role,
    subject: &str,
    days: u32,
    site: Option<&str>,
) -> Result<String, String> {
    if let Some(site) = site {
        if role != Role::Node {
            return Err("--site scopes node tokens only".into());
        }
        bootfleet_api::validate::artifact_id("site", site).map_err(|e| e.message)?;
    }
    let iat = now_secs();
    let claims = Claims {
        sub: subject.to_owned(),
        role,
        iss: ISSUER.to_owned(),
        iat,
        exp: iat + u64::from(days) * 86_400,
        site: site.map(str::to_owned),
    };
    jwt::sign_hs256(&claims, &secret.0)
}

/// The token of an `Authorization` value `Bearer <token>` (the scheme in any case).
pub fn bearer_token(value: &str) -> Option<String> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// Who calls a route, by the token the request carries.
#[derive(Debug)]
pub enum Caller {
    /// A machine's own token, passed on unverified: the `machines` service checks it (it holds
    /// the key).
    Machine(MachineToken),
    /// A verified token's claims; `None` where the route takes no token (public routes, and
    /// node reads while they are left open).
    Token(Option<Claims>),
}

/// The caller of a route of `access`, from the request's `Authorization` value and (REST
/// only) the `token` of its query string: the one check REST's routes and gRPC's calls both
/// make. 401 without a valid token, 403 with the wrong role. The query string is read only
/// when it can matter: a route that takes a token and a request without a bearer one.
pub fn identify(
    config: &crate::GatewayConfig,
    access: Access,
    authorization: Option<&str>,
    query: Option<&str>,
) -> Result<Caller, ApiError> {
    if access == Access::Public {
        return Ok(Caller::Token(None));
    }
    let bearer = authorization.and_then(bearer_token);
    let query_token = match bearer {
        Some(_) => None,
        None => query.and_then(token_of_query),
    };
    let token = bearer.as_deref().or(query_token.as_deref());
    if let Some(token) = MachineToken::of(access, token) {
        return Ok(Caller::Machine(token));
    }
    authorize(
        &config.verifier,
        access,
        config.open_node_reads,
        bearer.as_deref(),
        query_token.as_deref(),
    )
    .map(Caller::Token)
}

/// The `token` parameter of a query string, if it has one and parses.
fn token_of_query(query: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Decides whether a caller may use a route: 401 without a valid token, 403 with the wrong role.
pub fn authorize(
    verifier: &Verifier,
    access: Access,
    open_node_reads: bool,
    bearer: Option<&str>,
    query_token: Option<&str>,
) -> Result<Option<Claims>, ApiError> {
    if access == Access::Public || (access == Access::NodeRead && open_node_reads) {
        return Ok(None);
    }
    let token =
        match (bearer, query_token) {
            (Some(t), _) => t,
            (None, Some(t)) if access.accepts_query_token() => t,
            (None, Some(_)) => {
                return Err(unauthenticated(
                    "this route takes its token in the Authorization header, not ?token=",
                ))
            }
            (None, None) => return Err(unauthenticated(
                "missing token (Authorization: Bearer <token>; mint one with `bootfleet token`)",
            )),
        };
    let claims = verifier.verify(token)?;
    if !access.allows(claims.role) {
        return Err(ApiError::new(
            ErrorCode::PermissionDenied,
            format!("a {} token may not do this", claims.role),
        ));
    }
    Ok(Some(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(vec![7u8; 32]).expect("long enough")
    }

    /// A bearer token wins over `?token=` (which is not even read then); without one, the
    /// query's token is the caller's; public routes take neither.
    #[test]
    fn identify_takes_the_bearer_first_then_the_query_token() {
        let config = crate::GatewayConfig {
            verifier: Verifier::new(secret()),
            open_node_reads: false,
            body_limit: 1 << 20,
            limits: crate::server::ServeLimits::default(),
            services: Vec::new(),
            grpc_tls: None,
        };
        let admin = mint(&secret(), Role::Admin, "a", 3600).expect("mint");
        let node = mint(&secret(), Role::Node, "n", 3600).expect("mint");
        let role = |caller: Caller| match caller {
            Caller::Token(Some(c)) => Some(c.role),
            _ => None,
        };
        let bearer = format!("Bearer {admin}");
        let with_node = format!("token={node}");
        let caller = identify(&config, Access::Write, Some(&bearer), Some(&with_node));
        assert_eq!(role(caller.expect("admin")), Some(Role::Admin));
        let caller = identify(&config, Access::NodeRead, None, Some(&with_node));
        assert_eq!(role(caller.expect("node")), Some(Role::Node));
        let machine = format!("Bearer {}x", bootfleet_api::machines::MACHINE_TOKEN_PREFIX);
        let caller = identify(
            &config,
            Access::MachineRead,
            Some(&machine),
            Some(&with_node),
        );
        assert!(matches!(caller, Ok(Caller::Machine(_))));
        // A query string whose token is not one: 401, as with no token.
        let err = identify(&config, Access::NodeRead, None, Some("token=%zz&=")).expect_err("none");
        assert_eq!(err.code, ErrorCode::Unauthenticated);
        let caller = identify(
            &config,
            Access::Public,
            Some("Bearer junk"),
            Some("token=junk"),
        );
        assert!(matches!(caller, Ok(Caller::Token(None))));
    }

    /// A token verified once is answered from memory, and still expires there on time.
    #[test]
    fn a_remembered_token_still_expires() {
        let verifier = Verifier::new(secret());
        let token = mint(&secret(), Role::Node, "n", 1).expect("mint");
        let claims = verifier.verify(&token).expect("valid");
        assert_eq!(verifier.verified.len(), 1);
        assert_eq!(verifier.verify(&token).expect("remembered"), claims);
        let within_leeway = claims.exp + LEEWAY_SECS;
        assert_eq!(
            verifier.verify_at(&token, within_leeway).expect("valid"),
            claims
        );
        let error = verifier
            .verify_at(&token, within_leeway + 1)
            .expect_err("expired");
        assert_eq!(error.code, ErrorCode::Unauthenticated);
        assert_eq!(error.message, "token expired");
        assert_eq!(verifier.verified.len(), 0, "forgotten once expired");
    }

    /// A forged, altered or foreign token is never remembered, however often it is sent.
    #[test]
    fn only_verified_tokens_are_remembered() {
        let verifier = Verifier::new(secret());
        let foreign = Secret::new(vec![8u8; 32]).expect("long enough");
        let other = mint(&foreign, Role::Admin, "x", 1).expect("mint");
        let good = mint(&secret(), Role::Node, "n", 1).expect("mint");
        // One character inside the signature (the last one may carry only padding bits).
        let at = good.len() - 10;
        let swapped = if &good[at..=at] == "A" { "B" } else { "A" };
        let altered = format!("{}{swapped}{}", &good[..at], &good[at + 1..]);
        for _ in 0..2 {
            for token in [&other, &altered, &"not.a.token".to_owned()] {
                verifier.verify(token).expect_err("refused");
            }
        }
        assert_eq!(verifier.verified.len(), 0);
    }

    #[test]
    fn the_memory_of_tokens_is_bounded() {
        let verified = Verified::default();
        let claims = Claims {
            sub: "n".into(),
            role: Role::Node,
            iss: ISSUER.into(),
            iat: 0,
            exp: u64::MAX,
            site: None,
        };
        for i in 0..=Verified::MAX {
            verified.insert(&format!("token-{i}"), &claims);
        }
        assert!(verified.len() <= Verified::MAX);
        assert!(
            verified.get(&format!("token-{}", Verified::MAX)).is_some(),
            "the newest is kept"
        );
    }

    /// An artifact whose stored inputs cannot be read is refused to site-bound node tokens (fail
    /// closed) and still read by operators and unbound node tokens.
    #[test]
    fn unreadable_artifact_sites_are_refused_to_site_bound_nodes() {
        let claims = |role, site: Option<&str>| Claims {
            sub: "t".into(),
            role,
            iss: ISSUER.into(),
            iat: 0,
            exp: u64::MAX,
            site: site.map(str::to_owned),
        };
        let what = || "the artifact".to_owned();
        let unreadable = bootfleet_api::artifacts::sites_of("{not json");
        let error = claims(Role::Node, Some("site-1"))
            .may_read(&unreadable, &what)
            .expect_err("fails closed");
        assert_eq!(error.code, ErrorCode::PermissionDenied);
        for (role, site) in [(Role::Admin, None), (Role::User, None), (Role::Node, None)] {
            claims(role, site)
                .may_read(&unreadable, &what)
                .expect("read");
        }
        let readable = bootfleet_api::artifacts::sites_of(r#"{"sites": ["site-1"]}"#);
        assert_eq!(readable, ["site-1"]);
        claims(Role::Node, Some("site-1"))
            .may_read(&readable, &what)
            .expect("its own site");
        let every = bootfleet_api::artifacts::sites_of("{}");
        assert!(every.is_empty());
        claims(Role::Node, Some("site-2"))
            .may_read(&every, &what)
            .expect("every site");
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Secret::new(vec![1u8; 16]).is_err());
    }

    #[test]
    fn roles_and_access() {
        let v = Verifier::new(secret());
        let token = |role| mint(&secret(), role, "t", 1).expect("mint");
        let (admin, user, node) = (token(Role::Admin), token(Role::User), token(Role::Node));
        let check = |access, bearer: Option<&str>, query: Option<&str>| {
            authorize(&v, access, false, bearer, query).map_err(|e| e.code)
        };
        assert!(check(Access::Write, Some(&admin), None).is_ok());
        assert_eq!(
            check(Access::Write, Some(&user), None).err(),
            Some(ErrorCode::PermissionDenied)
        );
        assert_eq!(
            check(Access::Write, None, None).err(),
            Some(ErrorCode::Unauthenticated)
        );
        assert!(check(Access::Read, Some(&user), None).is_ok());
        assert_eq!(
            check(Access::Read, Some(&node), None).err(),
            Some(ErrorCode::PermissionDenied)
        );
        assert!(check(Access::NodeRead, None, Some(&node)).is_ok());
        // A query token only counts on node-facing routes.
        assert_eq!(
            check(Access::Read, None, Some(&admin)).err(),
            Some(ErrorCode::Unauthenticated)
        );
        assert!(authorize(&v, Access::NodeRead, true, None, None).is_ok());
        assert!(authorize(&v, Access::Read, true, None, None).is_err());
    }

    // The Ed25519 example key of RFC 8410, section 10.3, and its public half.
    const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

    /// A token signed with RFC 8410's example Ed25519 key (ring signs it here).
    fn ed25519_token(claims: &impl Serialize) -> String {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let body: String = ED_PRIVATE
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let pkcs8 = STANDARD.decode(body).expect("base64");
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .expect("the RFC's key");
        let claims = serde_json::to_vec(claims).expect("json");
        jwt::compact(br#"{"alg":"EdDSA"}"#, &claims, |signed| {
            pair.sign(signed).as_ref().to_vec()
        })
    }

    fn claims_now(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            role: Role::User,
            iss: ISSUER.into(),
            iat: now_secs(),
            exp: now_secs() + 60,
            site: None,
        }
    }

    #[test]
    fn tokens_signed_by_a_configured_key_are_accepted() {
        let claims = claims_now("sso");
        let token = ed25519_token(&claims);
        let without = Verifier::new(secret());
        assert_eq!(
            without.verify(&token).err().map(|e| e.code),
            Some(ErrorCode::Unauthenticated)
        );
        let with = Verifier::new(secret())
            .with_public_key_pem(ED_PUBLIC.as_bytes())
            .expect("public key");
        assert_eq!(with.verify(&token).ok(), Some(claims));
        assert!(Verifier::new(secret())
            .with_public_key_pem(b"not a key")
            .is_err());
    }

    /// Two keys of one kind (a key being rolled over): a token of either verifies.
    #[test]
    fn any_configured_key_of_the_kind_may_have_signed() {
        let other = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAeKe3hC8G/O1xKbJ+bbKpyetGipD3YWs0vVL3gXsN/bk=\n-----END PUBLIC KEY-----\n";
        let claims = claims_now("sso");
        let token = ed25519_token(&claims);
        let only_other = Verifier::new(secret())
            .with_public_key_pem(other.as_bytes())
            .expect("public key");
        assert!(only_other.verify(&token).is_err());
        let both = only_other
            .with_public_key_pem(ED_PUBLIC.as_bytes())
            .expect("public key");
        assert_eq!(both.verify(&token).ok(), Some(claims));
    }

    /// A token for another issuer or audience, or not valid yet, is refused, whoever signed it.
    #[test]
    fn issuer_audience_and_not_before_are_checked() {
        let v = Verifier::new(secret())
            .with_public_key_pem(ED_PUBLIC.as_bytes())
            .expect("public key");
        let mut json = serde_json::to_value(claims_now("sso")).expect("json");
        assert!(v.verify(&ed25519_token(&json)).is_ok());
        json["nbf"] = (now_secs() - 5).into();
        assert!(v.verify(&ed25519_token(&json)).is_ok(), "valid since");
        for (claim, value) in [
            ("iss", serde_json::json!("someone-else")),
            ("aud", serde_json::json!("another-service")),
            ("nbf", serde_json::json!(now_secs() + 3600)),
        ] {
            let mut refused = json.clone();
            refused[claim] = value;
            let error = v.verify(&ed25519_token(&refused)).expect_err(claim);
            assert_eq!(
                (error.code, error.message.as_str()),
                (ErrorCode::Unauthenticated, "invalid token"),
                "{claim}"
            );
        }
        let mut unsigned_role = json.clone();
        unsigned_role["role"] = "root".into();
        assert!(v.verify(&ed25519_token(&unsigned_role)).is_err());
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let v = Verifier::new(secret());
        let other = Secret::new(vec![8u8; 32]).expect("long enough");
        let forged = mint(&other, Role::Admin, "t", 1).expect("mint");
        assert_eq!(
            v.verify(&forged).err().map(|e| e.code),
            Some(ErrorCode::Unauthenticated)
        );
        assert_eq!(
            v.verify("abc").err().map(|e| e.code),
            Some(ErrorCode::Unauthenticated)
        );
        let expired = jwt::sign_hs256(
            &Claims {
                sub: "t".into(),
                role: Role::Admin,
                iss: ISSUER.into(),
                iat: 1,
                exp: 2,
                site: None,
            },
            &[7u8; 32],
        )
        .expect("encode");
        let err = v.verify(&expired).expect_err("expired");
        assert!(err.message.contains("expired"));
        let ok = v
            .verify(&mint(&secret(), Role::User, "me", 30).expect("mint"))
            .expect("valid");
        assert_eq!((ok.role, ok.sub.as_str()), (Role::User, "me"));
        assert!(ok.exp - ok.iat == 30 * 86_400);
    }

    #[test]
    fn site_scoped_node_tokens() {
        let token =
            mint_for_site(&secret(), Role::Node, "rack-1", 1, Some("site-a")).expect("mint");
        let claims = Verifier::new(secret()).verify(&token).expect("valid");
        assert_eq!(claims.site.as_deref(), Some("site-a"));
        // Tokens without a site still verify, and carry none.
        let plain = mint(&secret(), Role::Node, "n", 1).expect("mint");
        assert_eq!(
            Verifier::new(secret()).verify(&plain).expect("valid").site,
            None
        );
        assert!(mint_for_site(&secret(), Role::Admin, "x", 1, Some("site-a")).is_err());
        assert!(mint_for_site(&secret(), Role::Node, "x", 1, Some("bad site")).is_err());
    }
}

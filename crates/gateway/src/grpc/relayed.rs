//! What the services that take REST's bodies as JSON (`machines`, `actions`) share on gRPC:
//! the calls go through the REST routes' relay (`routes/relay.rs`), the rows come back as the
//! service's JSON (`JsonRow`), and a body is REST's, refused as REST refuses it. Its
//! `relayed_service!` also writes the typed services' lists and plain gets and deletes.

use bootfleet_api::{ApiError, ListParams};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::pb;
use super::{list_params, page_info, status, Api, Call};
use crate::auth::Access;
use crate::http::Trace;
use crate::routes::relay::{Caller, Id, Name, Relay, RowKey, ServiceCall, Site};

/// The methods of a gRPC service on a REST-shaped service, written as a table: each row is a
/// method, what it does and the operation it relays to; methods that do more follow the
/// table as they would in the `impl`.
///
/// - `list`: a page of the list (`ListOptions` -> `JsonPage`, `Access::Read`);
/// - `by(Key, Access)`: the row named by `Key` (`Id`, `Name`, `Site`), nothing else sent;
/// - `named(Input, Create | Put)`: a write of a registry keyed by name ([`Api::named_write`]);
/// - `write(Input, Access, prepare)`: a write whose key and body `prepare` checks
///   ([`Api::relay_write`]).
///
/// A service with typed messages (`impl Service { ... }`, no `via`) has rows of its own:
///
/// - `page(List)`: a page of the list, typed (`ListOptions` -> `List`'s page, `Access::Read`);
/// - `id(Row, Access)`: the row named by an `IdRequest`, nothing else sent (a get, a delete).
macro_rules! relayed_service {
    (impl $service:ident via $call:ty { $($table:tt)* } $($extra:tt)*) => {
        relayed_service!(@row $service, $call, [], [$($table)*], [$($extra)*]);
    };
    (impl $service:ident { $($table:tt)* } $($extra:tt)*) => {
        relayed_service!(@row $service, (), [], [$($table)*], [$($extra)*]);
    };
    (@row $service:ident, $call:ty, [$($done:tt)*], [], [$($extra:tt)*]) => {
        #[tonic::async_trait]
        impl $service for Api {
            $($done)*
            $($extra)*
        }
    };
    (@row $service:ident, $call:ty, [$($done:tt)*],
        [$method:ident: list => $op:expr; $($rest:tt)*], $extra:tt) => {
        relayed_service!(@row $service, $call, [$($done)*
            async fn $method(
                &self,
                req: Request<pb::ListOptions>,
            ) -> Result<Response<pb::JsonPage>, Status> {
                self.relay_list::<$call>(req, $op).await
            }
        ], [$($rest)*], $extra);
    };
    (@row $service:ident, $call:ty, [$($done:tt)*],
        [$method:ident: page($list:ty) => $op:expr; $($rest:tt)*], $extra:tt) => {
        relayed_service!(@row $service, $call, [$($done)*
            async fn $method(
                &self,
                req: Request<pb::ListOptions>,
            ) -> Result<Response<<$list as super::Paged>::Page>, Status> {
                self.list::<$list>(req, &$op).await
            }
        ], [$($rest)*], $extra);
    };
    (@row $service:ident, $call:ty, [$($done:tt)*],
        [$method:ident: id($row:ty, $access:ident) => $op:expr; $($rest:tt)*], $extra:tt) => {
        relayed_service!(@row $service, $call, [$($done)*
            async fn $method(
                &self,
                req: Request<bootfleet_api::proto::IdRequest>,
            ) -> Result<Response<$row>, Status> {
                self.by_id(req, Access::$access, &$op).await
            }
        ], [$($rest)*], $extra);
    };
    (@row $service:ident, $call:ty, [$($done:tt)*],
        [$method:ident: by($key:ty, $access:ident) => $op:expr; $($rest:tt)*], $extra:tt) => {
        relayed_service!(@row $service, $call, [$($done)*
            async fn $method(
                &self,
                req: Request<<$key as super::relayed::KeyedBy>::Ref>,
            ) -> Result<Response<pb::JsonRow>, Status> {
                self.relay_by::<$call, $key>(req, Access::$access, $op).await
            }
        ], [$($rest)*], $extra);
    };
    (@row $service:ident, $call:ty, [$($done:tt)*],
        [$method:ident: named($input:ty, $how:ident) => $op:expr; $($rest:tt)*], $extra:tt) => {
        relayed_service!(@row $service, $call, [$($done)*
            async fn $method(
                &self,
                req: Request<pb::JsonWrite>,
            ) -> Result<Response<pb::JsonRow>, Status> {
                self.named_write::<$call, $input>(req, $op, super::relayed::NamedWrite::$how)
                    .await
            }
        ], [$($rest)*], $extra);
    };
    (@row $service:ident, $call:ty, [$($done:tt)*],
        [$method:ident: write($input:ty, $access:ident, $prepare:expr) => $op:expr; $($rest:tt)*],
        $extra:tt) => {
        relayed_service!(@row $service, $call, [$($done)*
            async fn $method(
                &self,
                req: Request<pb::JsonWrite>,
            ) -> Result<Response<pb::JsonRow>, Status> {
                self.relay_write::<$call, $input, _, _>(req, Access::$access, $op, $prepare)
                    .await
            }
        ], [$($rest)*], $extra);
    };
}

/// How a write of a registry keyed by name names its row.
#[derive(Clone, Copy, Debug)]
pub(crate) enum NamedWrite {
    /// The body names the row; the call takes no key.
    Create,
    /// Creates or replaces the row `key`.
    Put,
}

/// A request that names one row: by id (`IdRequest`) or by name (`NameRef`).
pub(crate) trait RowRef {
    fn key(self) -> String;
}

/// The gRPC request that names a row by the REST path's `K`.
pub(crate) trait KeyedBy: RowKey {
    type Ref: RowRef + Send + 'static;
}

impl KeyedBy for Id {
    type Ref = bootfleet_api::proto::IdRequest;
}

impl KeyedBy for Name {
    type Ref = pb::NameRef;
}

impl KeyedBy for Site {
    type Ref = pb::SiteRef;
}

impl RowRef for bootfleet_api::proto::IdRequest {
    fn key(self) -> String {
        self.id
    }
}

impl RowRef for pb::NameRef {
    fn key(self) -> String {
        self.name
    }
}

impl RowRef for pb::SiteRef {
    fn key(self) -> String {
        self.artifact_id
    }
}

/// The answer as a row.
pub(super) fn row<C: ServiceCall>(reply: C::Reply) -> Response<pb::JsonRow> {
    let (json, created) = C::into_body(reply);
    Response::new(pb::JsonRow { json, created })
}

/// `value` checked as the REST path's `K`.
pub(super) fn checked<K: RowKey>(value: String) -> Result<String, Status> {
    K::check(value).map_err(|e| status(e.0))
}

/// REST's body of type `T` from a request's `json` (what REST calls the body, gRPC calls
/// `json`), refused as REST refuses it, naming the field.
pub(super) fn body<T: DeserializeOwned>(json: &str) -> Result<T, Status> {
    crate::http::parse_json(json.as_bytes()).map_err(|e| status(renamed_body(e, "json")))
}

/// An error about REST's `body` as one about the gRPC field `field`.
pub(super) fn renamed_body(mut e: ApiError, field: &str) -> ApiError {
    if e.field.as_deref() == Some("body") {
        e.field = Some(field.into());
        e.message = e.message.replacen("body", field, 1);
    }
    e
}

/// A create names its row by its body (or gets a new id): a key is a mistake.
pub(super) fn no_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "key",
            "must be empty on a create (the body names the row)",
        ))
    }
}

/// A write's `key` that names a machine by id; the body as it is.
pub(super) async fn id_key<T>(_: Relay, key: String, input: T) -> Result<(String, T), ApiError> {
    Ok((bootfleet_api::validate::id("key", &key)?, input))
}

/// A page of the service's list answer (`{rows, total, ...}`) as rows.
fn page(json: &str, params: &ListParams) -> Result<pb::JsonPage, Status> {
    #[derive(serde::Deserialize)]
    struct Listed {
        rows: Vec<serde_json::Value>,
        total: u64,
    }
    let listed: Listed = serde_json::from_str(json).map_err(|e| {
        status(ApiError::internal(format!(
            "a service answered a list that does not parse: {e}"
        )))
    })?;
    Ok(pb::JsonPage {
        rows: listed
            .rows
            .into_iter()
            .map(|r| pb::JsonRow {
                json: r.to_string(),
                created: false,
            })
            .collect(),
        page: page_info(listed.total, params),
    })
}

impl Api {
    /// The relay of an authorized call: the caller is the token's subject and role.
    pub(super) fn relay(&self, call: &Call) -> Relay {
        let mut caller = Caller::default();
        if let Some(claims) = &call.claims {
            caller.actor.clone_from(&claims.sub);
            caller.role = claims.role.to_string();
        }
        if let Some(crate::auth::MachineToken(token)) = &call.machine_token {
            caller.machine_token.clone_from(token);
        }
        Relay {
            bus: self.bus().clone(),
            trace: Trace(call.trace),
            caller,
        }
    }

    /// Sends `c` to the service's `op` and answers its row.
    pub(super) async fn relayed<C: ServiceCall>(
        &self,
        call: &Call,
        op: &str,
        c: C,
    ) -> Result<Response<pb::JsonRow>, Status> {
        let reply = self.relay(call).ask(op, c).await.map_err(status)?;
        Ok(row::<C>(reply))
    }

    /// A list (`Access::Read`).
    pub(super) async fn relay_list<C: ServiceCall>(
        &self,
        req: Request<pb::ListOptions>,
        op: &str,
    ) -> Result<Response<pb::JsonPage>, Status> {
        let call = self.authorize(&req, Access::Read)?;
        let params = list_params(Some(req.into_inner()))?;
        let mut c = self.relay(&call).call::<C>(String::new());
        c.set_list(params.to_proto());
        let reply = self.relay(&call).ask(op, c).await.map_err(status)?;
        let (json, _) = C::into_body(reply);
        Ok(Response::new(page(&json, &params)?))
    }

    /// A call that names a row (by `K`) and carries nothing else: a get, a delete, ...
    pub(super) async fn relay_by<C, K>(
        &self,
        req: Request<K::Ref>,
        access: Access,
        op: &str,
    ) -> Result<Response<pb::JsonRow>, Status>
    where
        C: ServiceCall,
        K: KeyedBy,
    {
        let call = self.authorize(&req, access)?;
        let key = checked::<K>(req.into_inner().key())?;
        let c = self.relay(&call).call::<C>(key);
        self.relayed(&call, op, c).await
    }

    /// A write of REST's body `T` about the row `key` (`""` for none), allowed to `access`:
    /// `prepare` checks the key and the body and may change the body (seal a secret) before
    /// it is sent.
    pub(super) async fn relay_write<C, T, F, Fut>(
        &self,
        req: Request<pb::JsonWrite>,
        access: Access,
        op: &str,
        prepare: F,
    ) -> Result<Response<pb::JsonRow>, Status>
    where
        C: ServiceCall,
        T: Serialize + DeserializeOwned,
        F: FnOnce(Relay, String, T) -> Fut,
        Fut: std::future::Future<Output = Result<(String, T), ApiError>>,
    {
        let call = self.authorize(&req, access)?;
        let write = req.into_inner();
        let parsed: T = body(&write.json)?;
        let relay = self.relay(&call);
        let (key, parsed) = prepare(relay.clone(), write.key, parsed)
            .await
            .map_err(status)?;
        let c = relay.call_with::<C, T>(key, &parsed).map_err(status)?;
        self.relayed(&call, op, c).await
    }

    /// A write of a registry keyed by name (profiles, groups, commands).
    pub(super) async fn named_write<C, T>(
        &self,
        req: Request<pb::JsonWrite>,
        op: &str,
        how: NamedWrite,
    ) -> Result<Response<pb::JsonRow>, Status>
    where
        C: ServiceCall,
        T: Serialize + DeserializeOwned,
    {
        self.relay_write::<C, T, _, _>(req, Access::Write, op, |_, key, input| async move {
            match how {
                NamedWrite::Create => no_key(&key)?,
                NamedWrite::Put => bootfleet_api::machines::word("key", &key)?,
            }
            Ok((key, input))
        })
        .await
    }
}

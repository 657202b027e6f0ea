//! OAuth clients: `POST/GET/DELETE /api/v1/clients` (admins only) and the
//! queries behind them, the token endpoint and the bootstrap.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::app::AppState;
use crate::auth::{self, secrets};
use crate::clock;
use crate::db::{Db, DbError, PgStatement, pg_read};
use crate::http::request::json_body;
use crate::http::{ApiError, Response};
use crate::users::Role;
use postgres::types::Type;

/// Scopes of a client created without `scopes`.
pub const DEFAULT_SCOPES: &str = "read write";
/// The only grant this service implements.
pub const CLIENT_CREDENTIALS: &str = "client_credentials";

/// What the token endpoint needs to know about a client.
#[derive(Debug, Clone)]
pub struct TokenClient {
    pub secret_hash: String,
    pub scopes: String,
    pub grant_types: String,
    pub user_id: i64,
    /// The owner's role, read when the token is issued.
    pub role: Role,
}

/// A client as `GET /api/v1/clients` lists it: never a secret or a hash.
#[derive(Debug, Serialize)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub domain: String,
    pub scopes: String,
    pub grant_types: String,
    pub redirect_uri: String,
    pub user_id: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// The answer to a create: the only time the secret is shown.
#[derive(Debug, Serialize)]
struct CreatedClient {
    client_id: String,
    client_secret: String,
    name: String,
    scopes: String,
    grant_types: String,
    redirect_uri: String,
}

/// A new client's fields, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClient {
    pub name: String,
    pub domain: String,
    pub scopes: String,
    pub grant_types: String,
    pub redirect_uri: String,
}

// --- Handlers --------------------------------------------------------------

/// `POST /api/v1/clients`.
pub fn create(state: &AppState, rq: &mut tiny_http::Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate(state, rq)?;
    auth::require_admin(&caller)?;
    auth::require_scope(&caller, auth::WRITE_SCOPE)?;
    let input = NewClient::parse(&json_body(rq)?)?;

    let id = secrets::new_client_id().map_err(ApiError::Internal)?;
    let secret = secrets::new_client_secret().map_err(ApiError::Internal)?;
    let hash = secrets::hash(&secret, state.config.bcrypt_cost).map_err(ApiError::Internal)?;
    insert(&state.db, &id, &hash, &input, caller.user_id)?;
    log::info!("client {id} created by user {}", caller.user_id);

    let body = CreatedClient {
        client_id: id.clone(),
        client_secret: secret,
        name: input.name,
        scopes: input.scopes,
        grant_types: input.grant_types,
        redirect_uri: input.redirect_uri,
    };
    Ok(Response::json(201, &body).with_header("Cache-Control", "no-store"))
}

/// `GET /api/v1/clients`: the caller's clients.
pub fn list(state: &AppState, rq: &tiny_http::Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate(state, rq)?;
    auth::require_admin(&caller)?;
    Ok(Response::json(200, &list_for_user(&state.db, caller.user_id)?))
}

/// `DELETE /api/v1/clients/{id}`: soft delete; the client gets no more tokens.
pub fn delete(state: &AppState, rq: &tiny_http::Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate(state, rq)?;
    auth::require_admin(&caller)?;
    auth::require_scope(&caller, auth::WRITE_SCOPE)?;
    if !soft_delete(&state.db, id, caller.user_id)? {
        return Err(ApiError::NotFound("Client not found"));
    }
    state.credentials.forget(id);
    log::info!("client {id} deleted by user {}", caller.user_id);
    Ok(Response::no_content())
}

// --- Validation ------------------------------------------------------------

impl NewClient {
    /// Validates a create body: `name` required; `domain`, `scopes`,
    /// `grant_types` (a string or an array of strings) and `redirect_uri` optional.
    pub fn parse(body: &Value) -> Result<NewClient, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::InvalidBody("the body must be a JSON object".into()));
        };
        let name = text(object, "name")?.map(str::trim).unwrap_or_default();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(field_error("name", "name is required and must be 1 to 100 characters"));
        }
        let domain = text(object, "domain")?.unwrap_or_default().trim();
        if domain.chars().count() > 255 {
            return Err(field_error("domain", "domain must be at most 255 characters"));
        }
        let redirect_uri = text(object, "redirect_uri")?.unwrap_or_default().trim();
        if redirect_uri.chars().count() > 2000 {
            return Err(field_error("redirect_uri", "redirect_uri must be at most 2000 characters"));
        }
        let scopes = words(object, "scopes")?.unwrap_or_else(|| DEFAULT_SCOPES.split(' ').map(str::to_owned).collect());
        if scopes.is_empty() || scopes.len() > 20 || !scopes.iter().all(|s| is_scope_token(s)) {
            return Err(field_error("scopes", "scopes must be 1 to 20 space-separated scope names"));
        }
        let grant_types = words(object, "grant_types")?.unwrap_or_else(|| vec![CLIENT_CREDENTIALS.to_owned()]);
        if grant_types.is_empty() || grant_types.iter().any(|g| g != CLIENT_CREDENTIALS) {
            return Err(field_error("grant_types", "grant_types may only contain client_credentials"));
        }
        Ok(NewClient {
            name: name.to_owned(),
            domain: domain.to_owned(),
            scopes: dedup(scopes).join(" "),
            grant_types: dedup(grant_types).join(" "),
            redirect_uri: redirect_uri.to_owned(),
        })
    }
}

fn field_error(field: &'static str, message: &str) -> ApiError {
    ApiError::InvalidField { field, message: message.to_owned() }
}

/// An optional string field; `null` counts as absent.
fn text<'a>(object: &'a Map<String, Value>, field: &'static str) -> Result<Option<&'a str>, ApiError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::WrongType { field, message: format!("{field} must be a string") }),
    }
}

/// An optional list of words: a space-separated string or an array of strings.
fn words(object: &Map<String, Value>, field: &'static str) -> Result<Option<Vec<String>>, ApiError> {
    let wrong = || ApiError::WrongType { field, message: format!("{field} must be a string or an array of strings") };
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.split_whitespace().map(str::to_owned).collect())),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(|s| s.trim().to_owned()).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| Some(v.into_iter().filter(|s| !s.is_empty()).collect())),
        Some(_) => Err(wrong()),
    }
}

fn dedup(items: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

/// A scope name as RFC 6749 §3.3 allows: printable ASCII except space, `"` and `\`.
fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 64
        && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

// --- Queries ---------------------------------------------------------------

const SELECT_FOR_TOKEN: &str = "SELECT c.secret_hash, c.scopes, c.grant_types, c.user_id, u.role \
     FROM oauth_clients c JOIN users u ON u.id = c.user_id \
     WHERE c.id = $1 AND c.deleted_at IS NULL";
const SELECT_FOR_TOKEN_PG: PgStatement = PgStatement { sql: SELECT_FOR_TOKEN, types: &[Type::TEXT] };

const INSERT: &str = "INSERT INTO oauth_clients \
     (id, secret_hash, name, domain, scopes, grant_types, redirect_uri, user_id, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) ON CONFLICT (id) DO NOTHING";

const SELECT_FOR_USER: &str = "SELECT id, name, domain, scopes, grant_types, redirect_uri, user_id, \
     created_at, updated_at FROM oauth_clients WHERE user_id = $1 AND deleted_at IS NULL ORDER BY created_at, id";

const SOFT_DELETE: &str = "UPDATE oauth_clients SET deleted_at = $1, updated_at = $1 \
     WHERE id = $2 AND user_id = $3 AND deleted_at IS NULL";

const SELECT_HASH: &str = "SELECT secret_hash FROM oauth_clients WHERE id = $1 AND deleted_at IS NULL";
const UPDATE_HASH: &str = "UPDATE oauth_clients SET secret_hash = $1, updated_at = $2 WHERE id = $3";

/// Whether `id` could name a stored client at all: text with NUL cannot be
/// stored (nor even sent to PostgreSQL), so no client has such an ID.
fn storable(id: &str) -> bool {
    !id.contains('\0')
}

/// The active client `id` with its owner's role, for the token endpoint.
pub fn find_for_token(db: &Db, id: &str) -> Result<Option<TokenClient>, DbError> {
    if !storable(id) {
        return Ok(None);
    }
    let found = match db {
        Db::Sqlite(sqlite) => {
            let conn = sqlite.pool.get()?;
            let mut stmt = conn.prepare_cached(SELECT_FOR_TOKEN)?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(row) => Some((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get::<_, String>(4)?)),
                None => None,
            }
        }
        Db::Postgres(pool) => match pg_read(pool, &SELECT_FOR_TOKEN_PG, &[&id])?.first() {
            Some(row) => Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?)),
            None => None,
        },
    };
    Ok(found.and_then(|(secret_hash, scopes, grant_types, user_id, role)| {
        Some(TokenClient { secret_hash, scopes, grant_types, user_id, role: Role::parse(&role)? })
    }))
}

/// Stores a client unless one with `id` exists; returns whether it was stored.
pub fn insert(db: &Db, id: &str, hash: &str, client: &NewClient, user_id: i64) -> Result<bool, DbError> {
    let now = clock::now();
    let inserted = match db {
        Db::Sqlite(sqlite) => sqlite.write(|conn| {
            Ok(conn.prepare_cached(INSERT)?.execute((
                id,
                hash,
                &client.name,
                &client.domain,
                &client.scopes,
                &client.grant_types,
                &client.redirect_uri,
                user_id,
                clock::format(now),
            ))?)
        })? as u64,
        Db::Postgres(pool) => pool.get()?.execute(
            INSERT,
            &[
                &id,
                &hash,
                &client.name,
                &client.domain,
                &client.scopes,
                &client.grant_types,
                &client.redirect_uri,
                &user_id,
                &now,
            ],
        )?,
    };
    Ok(inserted == 1)
}

/// The active clients of `user_id`, oldest first.
pub fn list_for_user(db: &Db, user_id: i64) -> Result<Vec<ClientView>, DbError> {
    match db {
        Db::Sqlite(sqlite) => {
            let conn = sqlite.pool.get()?;
            let mut stmt = conn.prepare_cached(SELECT_FOR_USER)?;
            let rows = stmt.query_map([user_id], |row| {
                Ok(ClientView {
                    client_id: row.get(0)?,
                    name: row.get(1)?,
                    domain: row.get(2)?,
                    scopes: row.get(3)?,
                    grant_types: row.get(4)?,
                    redirect_uri: row.get(5)?,
                    user_id: row.get(6)?,
                    created_at: row.get(7)?,
                    updated_at: row.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        }
        Db::Postgres(pool) => Ok(pool
            .get()?
            .query(SELECT_FOR_USER, &[&user_id])?
            .into_iter()
            .map(|row| ClientView {
                client_id: row.get(0),
                name: row.get(1),
                domain: row.get(2),
                scopes: row.get(3),
                grant_types: row.get(4),
                redirect_uri: row.get(5),
                user_id: row.get(6),
                created_at: clock::format(row.get(7)),
                updated_at: clock::format(row.get(8)),
            })
            .collect()),
    }
}

/// Marks the caller's client `id` deleted; false when there was none to delete.
pub fn soft_delete(db: &Db, id: &str, user_id: i64) -> Result<bool, DbError> {
    if !storable(id) {
        return Ok(false);
    }
    let now = clock::now();
    let changed = match db {
        Db::Sqlite(sqlite) => sqlite
            .write(|conn| Ok(conn.prepare_cached(SOFT_DELETE)?.execute((clock::format(now), id, user_id))?))?
            as u64,
        Db::Postgres(pool) => pool.get()?.execute(SOFT_DELETE, &[&now, &id, &user_id])?,
    };
    Ok(changed == 1)
}

/// The bcrypt hash of the active client `id`.
pub fn secret_hash(db: &Db, id: &str) -> Result<Option<String>, DbError> {
    Ok(match db {
        Db::Sqlite(sqlite) => {
            let conn = sqlite.pool.get()?;
            let mut stmt = conn.prepare_cached(SELECT_HASH)?;
            let mut rows = stmt.query([id])?;
            rows.next()?.map(|row| row.get(0)).transpose()?
        }
        Db::Postgres(pool) => pool.get()?.query_opt(SELECT_HASH, &[&id])?.map(|row| row.get(0)),
    })
}

/// Replaces the hash of client `id` (rotating the bootstrap secret).
pub fn set_secret_hash(db: &Db, id: &str, hash: &str) -> Result<(), DbError> {
    let now = clock::now();
    match db {
        Db::Sqlite(sqlite) => {
            sqlite.write(|conn| Ok(conn.execute(UPDATE_HASH, (hash, clock::format(now), id))?))?;
        }
        Db::Postgres(pool) => {
            pool.get()?.execute(UPDATE_HASH, &[&hash, &now, &id])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_client_without_optional_fields_gets_the_defaults() {
        let client = NewClient::parse(&json!({"name": "ci"})).unwrap();
        assert_eq!(client.scopes, "read write");
        assert_eq!(client.grant_types, "client_credentials");
        assert_eq!((client.domain.as_str(), client.redirect_uri.as_str()), ("", ""));
    }

    #[test]
    fn a_client_needs_a_name() {
        for body in [json!({}), json!({"name": "  "}), json!({"name": "x".repeat(101)})] {
            assert!(matches!(NewClient::parse(&body), Err(ApiError::InvalidField { field: "name", .. })), "{body}");
        }
    }

    #[test]
    fn scopes_may_be_a_string_or_an_array() {
        assert_eq!(NewClient::parse(&json!({"name": "a", "scopes": "read"})).unwrap().scopes, "read");
        assert_eq!(NewClient::parse(&json!({"name": "a", "scopes": ["read", "write"]})).unwrap().scopes, "read write");
    }

    #[test]
    fn a_scope_with_a_quote_is_refused() {
        let result = NewClient::parse(&json!({"name": "a", "scopes": "read \"x\""}));
        assert!(matches!(result, Err(ApiError::InvalidField { field: "scopes", .. })));
    }

    #[test]
    fn only_client_credentials_may_be_granted() {
        let result = NewClient::parse(&json!({"name": "a", "grant_types": ["authorization_code"]}));
        assert!(matches!(result, Err(ApiError::InvalidField { field: "grant_types", .. })));
    }

    #[test]
    fn a_name_of_the_wrong_type_is_a_body_error() {
        let result = NewClient::parse(&json!({"name": 5}));
        assert!(matches!(result, Err(ApiError::WrongType { field: "name", .. })));
    }
}

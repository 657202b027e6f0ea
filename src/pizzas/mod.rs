//! Pizzas: the public reads and the owner-or-admin writes of
//! `/api/v1/public/pizzas` and `/api/v1/pizzas`.

pub mod input;
pub mod store;

use serde_json::json;

use crate::auth::{self, Auth, Caller, Role};
use crate::clock;
use crate::db::{Db, Exec};
use crate::idempotency::{self, IdempotencyKey, Outcome, Recorded, Scope};
use crate::rest::conditional::Condition;
use crate::rest::{ApiError, Request, Response};
use input::{ListQuery, PizzaInput};
use store::{Pizza, Versions};

/// The operation idempotency keys of creates are scoped to.
const CREATE_ROUTE: &str = "POST /api/v1/pizzas";

/// `{id}` as a pizza ID: a positive integer, else 400.
pub fn parse_id(text: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::BadRequest("Invalid pizza ID format".into())),
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("Pizza not found")
}

/// `GET /api/v1/public/pizzas`: one page, by ID, from the `after` cursor.
/// A page that may have a successor (a full one, or a short one from a
/// bounded scan that stopped before the end) carries `Link: <...>;
/// rel="next"` to it: the same filters and limit, `after` the last ID
/// examined, no offset.
pub fn list(db: &impl Exec, rq: &Request) -> Result<Response, ApiError> {
    let query = ListQuery::parse(rq.query())?;
    let page = store::list(db, &query)?;
    let response = Response::json(200, &page.pizzas);
    let Some(after) = page.next_after else {
        return Ok(response);
    };
    let mut next = form_urlencoded::Serializer::new(String::new());
    if let Some(name) = &query.name {
        next.append_pair("name", name);
    }
    if let Some(owner) = query.created_by {
        next.append_pair("created_by", &owner.to_string());
    }
    next.append_pair("limit", &query.limit.to_string());
    next.append_pair("after", &after.to_string());
    Ok(response.with_header("Link", format!("</api/v1/public/pizzas?{}>; rel=\"next\"", next.finish())))
}

/// `GET /api/v1/public/pizzas/{id}`, with its `ETag`; `304` without a body
/// when `If-None-Match` names the current one (or is `*`).
pub fn get(db: &impl Exec, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let pizza = store::find(db, id)?.ok_or_else(not_found)?;
    let etag = pizza.etag();
    if let Some(condition) = rq.header("If-None-Match").map(Condition::parse) {
        if condition.matches_weakly(opaque(&etag)) {
            return Ok(Response::not_modified(etag));
        }
    }
    Ok(Response::json(200, &pizza).with_header("ETag", etag))
}

/// `POST /api/v1/pizzas`: the caller owns the new pizza. With an
/// `Idempotency-Key`, a repeat of the same request gets the first answer
/// again instead of a second pizza (see [`idempotency`]).
pub fn create(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate_writer(auth, db, rq)?;
    let key = IdempotencyKey::from_request(rq)?;
    let body = rq.json_body()?;
    let input = PizzaInput::parse(&body)?;
    let Some(key) = key else {
        // Without a key: one statement, as before keys existed.
        return Ok(created(&store::insert(db, &input, caller.user_id, clock::now())?));
    };
    let scope = Scope::of(&caller, CREATE_ROUTE);
    let outcome = idempotency::once(db, &scope, &key, &idempotency::fingerprint(&body), |tx| {
        let pizza = store::insert(tx, &input, caller.user_id, clock::now())?;
        let response = created(&pizza);
        let recorded = Recorded {
            status: response.status,
            resource_id: pizza.id.to_string(),
            body: Some(String::from_utf8_lossy(&response.body).into_owned()),
            location: response.header("Location").map(str::to_owned),
            etag: response.header("ETag").map(str::to_owned),
        };
        Ok((response, recorded))
    })?;
    Ok(match outcome {
        Outcome::Created(response) => response,
        Outcome::Replay(recorded) => replay(recorded),
    })
}

/// The `201` for a new pizza.
fn created(pizza: &Pizza) -> Response {
    let location = format!("/api/v1/public/pizzas/{}", pizza.id);
    Response::json(201, pizza).with_header("Location", location).with_header("ETag", pizza.etag())
}

/// The answer recorded for an earlier request with the same key, marked as
/// a replay.
fn replay(recorded: Recorded) -> Response {
    let body = recorded.body.unwrap_or_default().into_bytes();
    let mut response = Response::json_bytes(recorded.status, body);
    for (name, value) in [("Location", recorded.location), ("ETag", recorded.etag)] {
        if let Some(value) = value {
            response = response.with_header(name, value);
        }
    }
    response.with_header("Idempotency-Replayed", "true")
}

/// An entity tag without its quotes.
fn opaque(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// The versions of pizza `id` an `If-Match` header accepts: `None` without
/// the header or with `*` (any version); otherwise those of the strong tags
/// naming this pizza, which may be none at all (then nothing matches).
fn accepted_versions(rq: &Request, id: i64) -> Option<Versions> {
    let Condition::Tags(tags) = rq.header("If-Match").map(Condition::parse)? else { return None };
    let prefix = format!("{id}-");
    let versions = tags
        .iter()
        .filter(|tag| !tag.weak)
        .filter_map(|tag| tag.opaque.strip_prefix(&prefix)?.parse::<i64>().ok())
        .filter(|version| *version > 0);
    Some(Versions::of(versions))
}

fn precondition_failed() -> ApiError {
    ApiError::PreconditionFailed("the pizza has changed since the version If-Match names; read it again")
}

/// `PUT /api/v1/pizzas/{id}`: replaces the whole pizza. Errors come in the
/// contract's order: ID format, existence, permission, body, then `If-Match`
/// (412). A valid body is stored by one statement that also checks
/// existence, permission and the version `If-Match` names; only when it
/// changes nothing (or the body is invalid) does a second query find out
/// which error applies.
pub fn update(db: &Db, auth: &Auth, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate_writer(auth, db, rq)?;
    let id = parse_id(id)?;
    let input = rq.json_body().and_then(|body| PizzaInput::parse(&body));
    let input = match input {
        Ok(input) => input,
        Err(invalid_body) => {
            check_may_change(db, &caller, id, "update")?;
            return Err(invalid_body);
        }
    };
    let versions = accepted_versions(rq, id);
    match store::update(db, id, &input, owner_filter(&caller), versions.as_ref())? {
        Some(pizza) => {
            let etag = pizza.etag();
            Ok(Response::json(200, &pizza).with_header("ETag", etag))
        }
        None => Err(why_unchanged(db, &caller, id, "update", versions.is_some())),
    }
}

/// `DELETE /api/v1/pizzas/{id}`: soft delete; a second delete is a 404.
/// With `If-Match`, only the version it names is deleted (else 412).
pub fn delete(db: &Db, auth: &Auth, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate_writer(auth, db, rq)?;
    let id = parse_id(id)?;
    let versions = accepted_versions(rq, id);
    if store::soft_delete(db, id, owner_filter(&caller), versions.as_ref())? {
        return Ok(Response::no_content());
    }
    Err(why_unchanged(db, &caller, id, "delete", versions.is_some()))
}

/// Why a change that had to find the pizza live, the caller allowed and
/// (`versioned`) the version right changed nothing: 404, 403, then 412. The
/// change itself decided atomically; this only picks the answer.
fn why_unchanged(db: &Db, caller: &Caller, id: i64, verb: &str, versioned: bool) -> ApiError {
    match check_may_change(db, caller, id, verb) {
        Err(err) => err,
        Ok(()) if versioned => precondition_failed(),
        // Deleted in between.
        Ok(()) => not_found(),
    }
}

/// Whose pizzas the caller may change: an admin anyone's (`None`), a user
/// only their own.
fn owner_filter(caller: &Caller) -> Option<i64> {
    if caller.role == Role::Admin { None } else { Some(caller.user_id) }
}

/// 404 when the pizza is missing or deleted, 403 when the caller is neither
/// its owner nor an admin.
fn check_may_change(db: &Db, caller: &Caller, id: i64, verb: &str) -> Result<(), ApiError> {
    let (owner, _version) = store::owner(db, id)?.ok_or_else(not_found)?;
    if owner == caller.user_id || caller.role == Role::Admin {
        return Ok(());
    }
    Err(ApiError::Forbidden(json!({
        "error": format!("You can only {verb} your own pizzas"),
        "pizza_owner": owner,
        "your_id": caller.user_id,
    })))
}

#[cfg(test)]
mod tests {
    use super::parse_id;

    #[test]
    fn an_id_must_be_a_positive_integer() {
        assert_eq!(parse_id("42").unwrap(), 42);
        for bad in ["0", "-1", "abc", "1.5", "+7", " 7", "99999999999999999999"] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
    }
}

//! Pizzas: the public reads and the owner-or-admin writes of
//! `/api/v1/public/pizzas` and `/api/v1/pizzas`.

pub mod input;
pub mod store;

use serde_json::json;

use crate::auth::{self, Auth, Caller, Role};
use crate::clock;
use crate::db::Db;
use crate::rest::{ApiError, Request, Response};
use input::{ListQuery, PizzaInput};

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

/// `GET /api/v1/public/pizzas`: one page, by ID. A full page carries a
/// `Link: <...>; rel="next"` to the following one.
pub fn list(db: &Db, rq: &Request) -> Result<Response, ApiError> {
    let query = ListQuery::parse(rq.query())?;
    let pizzas = store::list(db, &query)?;
    let full_page = pizzas.len() as i64 == query.limit;
    let response = Response::json(200, &pizzas);
    if !full_page {
        return Ok(response);
    }
    let mut next = form_urlencoded::Serializer::new(String::new());
    if let Some(name) = &query.name {
        next.append_pair("name", name);
    }
    if let Some(owner) = query.created_by {
        next.append_pair("created_by", &owner.to_string());
    }
    next.append_pair("limit", &query.limit.to_string());
    next.append_pair("offset", &(query.offset.saturating_add(query.limit)).to_string());
    Ok(response.with_header("Link", format!("</api/v1/public/pizzas?{}>; rel=\"next\"", next.finish())))
}

/// `GET /api/v1/public/pizzas/{id}`.
pub fn get(db: &Db, id: &str) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let pizza = store::find(db, id)?.ok_or_else(not_found)?;
    Ok(Response::json(200, &pizza))
}

/// `POST /api/v1/pizzas`: the caller owns the new pizza.
pub fn create(db: &Db, auth: &Auth, rq: &Request) -> Result<Response, ApiError> {
    let caller = auth::authenticate_writer(auth, db, rq)?;
    let input = PizzaInput::parse(&rq.json_body()?)?;
    let pizza = store::insert(db, &input, caller.user_id, clock::now())?;
    let location = format!("/api/v1/public/pizzas/{}", pizza.id);
    Ok(Response::json(201, &pizza).with_header("Location", location))
}

/// `PUT /api/v1/pizzas/{id}`: replaces the whole pizza. Errors come in the
/// contract's order: ID format, existence, permission, body. A valid body is
/// stored by one statement that also checks existence and permission; only
/// when it changes nothing (or the body is invalid) does a second query find
/// out which error applies.
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
    match store::update(db, id, &input, owner_filter(&caller))? {
        Some(pizza) => Ok(Response::json(200, &pizza)),
        None => {
            check_may_change(db, &caller, id, "update")?;
            Err(not_found())
        }
    }
}

/// `DELETE /api/v1/pizzas/{id}`: soft delete; a second delete is a 404.
pub fn delete(db: &Db, auth: &Auth, rq: &Request, id: &str) -> Result<Response, ApiError> {
    let caller = auth::authenticate_writer(auth, db, rq)?;
    let id = parse_id(id)?;
    if store::soft_delete(db, id, owner_filter(&caller))? {
        return Ok(Response::no_content());
    }
    check_may_change(db, &caller, id, "delete")?;
    Err(not_found())
}

/// Whose pizzas the caller may change: an admin anyone's (`None`), a user
/// only their own.
fn owner_filter(caller: &Caller) -> Option<i64> {
    if caller.role == Role::Admin { None } else { Some(caller.user_id) }
}

/// 404 when the pizza is missing or deleted, 403 when the caller is neither
/// its owner nor an admin.
fn check_may_change(db: &Db, caller: &Caller, id: i64, verb: &str) -> Result<(), ApiError> {
    let owner = store::owner(db, id)?.ok_or_else(not_found)?;
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

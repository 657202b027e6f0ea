//! What clients send about pizzas, validated: a pizza body
//! ([`PizzaInput::parse`]) and the list's query ([`ListQuery::parse`]).

use serde_json::{Map, Value};

use crate::rest::ApiError;
use crate::rest::request::form_pairs;

/// Longest name, in characters, after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;
/// Most ingredients a pizza may list.
pub const MAX_INGREDIENTS: usize = 50;
/// Longest ingredient, in characters.
pub const MAX_INGREDIENT_CHARS: usize = 100;
/// Highest price.
pub const MAX_PRICE: f64 = 1_000_000.0;
/// Page size when the query gives no `limit`.
pub const DEFAULT_PAGE_SIZE: i64 = 100;
/// Largest `limit` accepted.
pub const MAX_PAGE_SIZE: i64 = 1000;
/// Largest `offset` accepted. Skipped rows are still read, so a deep offset
/// costs what its depth costs; past this, pages are reached by the cursor
/// (`after`), which costs the same at any depth.
pub const MAX_OFFSET: i64 = 10_000;
/// Shortest run of ASCII letters and digits a name filter needs for the
/// trigram index (see [`ListQuery::name_is_indexed`]).
pub const INDEXED_RUN: usize = 3;

/// A pizza as a create or an update describes it. An update replaces every
/// field: an omitted `description` becomes empty, omitted `ingredients` none.
#[derive(Debug, Clone, PartialEq)]
pub struct PizzaInput {
    pub name: String,
    pub description: String,
    pub ingredients: Vec<String>,
    pub price: f64,
}

impl PizzaInput {
    /// Validates a body. Unknown fields, `id` and `created_by` are ignored.
    pub fn parse(body: &Value) -> Result<PizzaInput, ApiError> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::InvalidBody("the body must be a JSON object".into()));
        };
        Ok(PizzaInput {
            name: parse_name(object)?,
            description: parse_description(object)?,
            ingredients: parse_ingredients(object)?,
            price: parse_price(object)?,
        })
    }
}

fn wrong_type(field: &'static str, expected: &str) -> ApiError {
    ApiError::WrongType { field, message: format!("{field} must be {expected}") }
}

fn invalid(field: &'static str, message: String) -> ApiError {
    ApiError::InvalidField { field, message }
}

fn parse_name(object: &Map<String, Value>) -> Result<String, ApiError> {
    let name = match object.get("name") {
        None | Some(Value::Null) => return Err(invalid("name", "name is required".into())),
        Some(Value::String(name)) => name.trim(),
        Some(_) => return Err(wrong_type("name", "a string")),
    };
    let length = name.chars().count();
    if length == 0 || length > MAX_NAME_CHARS {
        return Err(invalid("name", format!("name must be 1 to {MAX_NAME_CHARS} characters (after trimming)")));
    }
    Ok(name.to_owned())
}

fn parse_description(object: &Map<String, Value>) -> Result<String, ApiError> {
    match object.get("description") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) if text.chars().count() <= MAX_DESCRIPTION_CHARS => Ok(text.clone()),
        Some(Value::String(_)) => {
            Err(invalid("description", format!("description must be at most {MAX_DESCRIPTION_CHARS} characters")))
        }
        Some(_) => Err(wrong_type("description", "a string")),
    }
}

fn parse_ingredients(object: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let items = match object.get("ingredients") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(wrong_type("ingredients", "an array of strings")),
    };
    if items.len() > MAX_INGREDIENTS {
        return Err(invalid("ingredients", format!("ingredients may list at most {MAX_INGREDIENTS} items")));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let Value::String(text) = item else { return Err(wrong_type("ingredients", "an array of strings")) };
            let text = text.trim();
            let length = text.chars().count();
            if length == 0 || length > MAX_INGREDIENT_CHARS {
                return Err(invalid(
                    "ingredients",
                    format!("ingredients[{i}] must be 1 to {MAX_INGREDIENT_CHARS} characters (after trimming)"),
                ));
            }
            Ok(text.to_owned())
        })
        .collect()
}

fn parse_price(object: &Map<String, Value>) -> Result<f64, ApiError> {
    let price = match object.get("price") {
        None | Some(Value::Null) => return Err(invalid("price", "price is required".into())),
        Some(Value::Number(n)) => n.as_f64().ok_or_else(|| wrong_type("price", "a number"))?,
        Some(_) => return Err(wrong_type("price", "a number")),
    };
    if !price.is_finite() || !(0.0..=MAX_PRICE).contains(&price) {
        return Err(invalid("price", format!("price must be a number from 0 to {MAX_PRICE}")));
    }
    // -0 is 0: both databases and every client would disagree about its sign.
    Ok(price + 0.0)
}

/// The list's query: optional filters and a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// Case-folded substring of the name (see [`fold`]).
    pub name: Option<String>,
    pub created_by: Option<i64>,
    pub limit: i64,
    /// The cursor: the page starts after the pizza with this ID (0: at the
    /// start).
    pub after: i64,
    /// Matching pizzas to skip after the cursor, at most [`MAX_OFFSET`].
    pub offset: i64,
}

impl ListQuery {
    /// Parses `name`, `created_by`, `limit`, `after` and `offset`; other
    /// parameters are ignored, a bad value is a 400 naming the parameter.
    pub fn parse(query: &str) -> Result<ListQuery, ApiError> {
        let mut parsed = ListQuery { name: None, created_by: None, limit: DEFAULT_PAGE_SIZE, after: 0, offset: 0 };
        for (key, value) in form_pairs(query.as_bytes()) {
            match key.as_str() {
                "name" if value.contains('\0') => {
                    return Err(invalid("name", "name must not contain a NUL character".into()));
                }
                "name" => parsed.name = Some(fold(&value)),
                "created_by" => parsed.created_by = Some(integer("created_by", &value, 1, i64::MAX)?),
                "limit" => parsed.limit = integer("limit", &value, 1, MAX_PAGE_SIZE)?,
                "after" => parsed.after = integer("after", &value, 0, i64::MAX)?,
                "offset" => parsed.offset = parse_offset(&value)?,
                _ => {}
            }
        }
        if parsed.offset > 0 && parsed.name.is_some() && !parsed.name_is_indexed() {
            return Err(invalid(
                "offset",
                format!(
                    "offset cannot be combined with a name filter without {INDEXED_RUN} letters or digits in a row: \
                     follow the Link header (after=<id>) instead"
                ),
            ));
        }
        Ok(parsed)
    }

    /// Whether the name filter can use the trigram index: it holds at least
    /// [`INDEXED_RUN`] ASCII letters or digits in a row. PostgreSQL's
    /// pg_trgm builds trigrams from letters and digits only (and, in a
    /// database without a locale, from ASCII ones only); the same rule on
    /// both databases keeps their pages alike. Other filters (`ab`, `%`,
    /// `äöü`) are a bounded scan. Either way the results are the same.
    pub fn name_is_indexed(&self) -> bool {
        let Some(name) = &self.name else { return false };
        let mut run = 0;
        for c in name.chars() {
            run = if c.is_ascii_alphanumeric() { run + 1 } else { 0 };
            if run >= INDEXED_RUN {
                return true;
            }
        }
        false
    }
}

fn parse_offset(value: &str) -> Result<i64, ApiError> {
    match value.parse::<i64>() {
        Ok(n) if n > MAX_OFFSET => Err(invalid(
            "offset",
            format!(
                "offset must be at most {MAX_OFFSET}: for later pages follow the Link header, \
                 whose after=<id> cursor costs the same at any depth"
            ),
        )),
        _ => integer("offset", value, 0, MAX_OFFSET),
    }
}

fn integer(field: &'static str, value: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(invalid(field, format!("{field} must be a whole number from {min} to {max}"))),
    }
}

/// A name as the name filter compares it: lower-cased by Unicode's rules,
/// the same way on both databases because the service does it, not SQL.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: Value) -> Result<PizzaInput, ApiError> {
        PizzaInput::parse(&body)
    }

    fn rejected_field(body: Value) -> &'static str {
        match parse(body) {
            Err(ApiError::InvalidField { field, .. } | ApiError::WrongType { field, .. }) => field,
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn a_full_pizza_is_accepted() {
        let pizza = parse(json!({"name":" Margherita ","description":"Classic","ingredients":["Basil"],"price":10.99}));
        assert_eq!(
            pizza.unwrap(),
            PizzaInput {
                name: "Margherita".into(),
                description: "Classic".into(),
                ingredients: vec!["Basil".into()],
                price: 10.99
            }
        );
    }

    #[test]
    fn omitted_optional_fields_become_empty() {
        let pizza = parse(json!({"name":"Plain","price":1})).unwrap();
        assert_eq!((pizza.description.as_str(), pizza.ingredients.len()), ("", 0));
    }

    #[test]
    fn an_empty_name_is_rejected() {
        assert_eq!(rejected_field(json!({"name":"   ","price":1})), "name");
        assert_eq!(rejected_field(json!({"price":1})), "name");
    }

    #[test]
    fn a_name_of_101_characters_is_rejected_and_100_accepted() {
        assert_eq!(rejected_field(json!({"name":"é".repeat(101),"price":1})), "name");
        assert!(parse(json!({"name":"é".repeat(100),"price":1})).is_ok());
    }

    #[test]
    fn a_negative_price_is_rejected() {
        assert_eq!(rejected_field(json!({"name":"a","price":-0.01})), "price");
    }

    #[test]
    fn a_price_above_the_maximum_is_rejected() {
        assert_eq!(rejected_field(json!({"name":"a","price":1000000.01})), "price");
        assert!(parse(json!({"name":"a","price":1000000})).is_ok());
    }

    #[test]
    fn a_price_that_is_not_a_number_is_a_type_error() {
        for price in [json!("cheap"), json!("NaN"), json!("Infinity"), json!(true), json!([1])] {
            assert!(
                matches!(parse(json!({"name":"a","price":price})), Err(ApiError::WrongType { field: "price", .. })),
                "{price}"
            );
        }
    }

    #[test]
    fn negative_zero_is_stored_as_zero() {
        assert!(parse(json!({"name":"a","price":-0.0})).unwrap().price.is_sign_positive());
    }

    #[test]
    fn fifty_one_ingredients_are_rejected() {
        let many: Vec<String> = (0..51).map(|i| format!("i{i}")).collect();
        assert_eq!(rejected_field(json!({"name":"a","price":1,"ingredients":many})), "ingredients");
    }

    #[test]
    fn a_non_string_or_empty_ingredient_is_rejected() {
        assert_eq!(rejected_field(json!({"name":"a","price":1,"ingredients":["ok", 5]})), "ingredients");
        assert_eq!(rejected_field(json!({"name":"a","price":1,"ingredients":["ok", " "]})), "ingredients");
        assert_eq!(rejected_field(json!({"name":"a","price":1,"ingredients":"Basil"})), "ingredients");
    }

    #[test]
    fn a_description_over_2000_characters_is_rejected() {
        assert_eq!(rejected_field(json!({"name":"a","price":1,"description":"x".repeat(2001)})), "description");
    }

    #[test]
    fn a_body_that_is_not_an_object_is_rejected() {
        assert!(matches!(parse(json!([1, 2])), Err(ApiError::InvalidBody(_))));
    }

    #[test]
    fn the_list_query_has_defaults() {
        let query = ListQuery::parse("").unwrap();
        assert_eq!(query, ListQuery { name: None, created_by: None, limit: DEFAULT_PAGE_SIZE, after: 0, offset: 0 });
    }

    #[test]
    fn the_name_filter_is_folded_and_decoded() {
        assert_eq!(ListQuery::parse("name=PEP%25").unwrap().name.as_deref(), Some("pep%"));
    }

    #[test]
    fn out_of_range_paging_is_rejected() {
        for query in ["name=a%00b", "limit=0", "limit=1001", "limit=abc", "offset=-1", "created_by=0", "created_by=x"] {
            assert!(ListQuery::parse(query).is_err(), "{query}");
        }
        for query in ["after=-1", "after=x", "after=9223372036854775808"] {
            assert!(ListQuery::parse(query).is_err(), "{query}");
        }
    }

    #[test]
    fn an_offset_above_the_maximum_is_rejected_and_points_to_the_cursor() {
        assert_eq!(ListQuery::parse("offset=10000").unwrap().offset, MAX_OFFSET);
        match ListQuery::parse("offset=10001") {
            Err(ApiError::InvalidField { field: "offset", message }) => {
                assert!(message.contains("after="), "{message}")
            }
            other => panic!("expected an offset error, got {other:?}"),
        }
    }

    #[test]
    fn the_cursor_is_parsed() {
        assert_eq!(ListQuery::parse("after=42").unwrap().after, 42);
    }

    #[test]
    fn a_name_filter_needs_three_ascii_letters_or_digits_in_a_row_for_the_index() {
        let indexed = |q: &str| ListQuery::parse(q).unwrap().name_is_indexed();
        for query in ["name=pep", "name=100%25", "name=%C3%A4pfel", "name=a+b12c"] {
            assert!(indexed(query), "{query}");
        }
        for query in ["", "name=pe", "name=%25", "name=_", "name=a_b_c", "name=%C3%A4%C3%B6%C3%BC"] {
            assert!(!indexed(query), "{query}");
        }
    }

    #[test]
    fn an_offset_with_a_filter_the_index_cannot_serve_is_rejected() {
        assert!(ListQuery::parse("name=pe&offset=1").is_err());
        assert!(ListQuery::parse("name=pe&offset=0").is_ok());
        assert!(ListQuery::parse("name=pep&offset=1").is_ok());
    }
}

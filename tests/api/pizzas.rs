//! The pizza resource, line by line from the contract's Pizzas section.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

const PIZZA_FIELDS: [&str; 8] =
    ["id", "name", "description", "ingredients", "price", "created_by", "created_at", "updated_at"];

fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let response = app.authed("POST", "/api/v1/pizzas", token, Some(&body));
    assert_eq!(response.status, 201, "{}", response.body);
    response.json()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect()
}

fn assert_field_error(response: &TestResponse, field: &str) {
    assert_eq!(response.status, 400, "{field}: {}", response.body);
    let body = response.json();
    assert!(body["error"].is_string(), "{}", response.body);
    assert_eq!(body["field"], field, "{}", response.body);
    let text = format!("{} {}", body["error"], body["details"]);
    assert!(text.contains(field), "the message names {field}: {}", response.body);
}

both_backends!(
    fn the_public_list_needs_no_token_and_is_ordered_by_id(backend) {
        let app = spawn_app(backend);

        let response = app.get("/api/v1/public/pizzas");

        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-type"), Some("application/json; charset=utf-8"));
        let list = response.json();
        let ids: Vec<i64> = list.as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let keys: Vec<&str> = list[0].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, PIZZA_FIELDS, "fields in the contract's order");
        assert!(response.body.starts_with(r#"[{"id":1,"name":"Margherita","description":"","ingredients":["#));
    }
);

both_backends!(
    fn a_pizza_is_read_by_id(backend) {
        let app = spawn_app(backend);

        let response = app.get("/api/v1/public/pizzas/2");

        assert_eq!(response.status, 200);
        let pizza = response.json();
        assert_eq!(pizza["name"], "Pepperoni");
        assert_eq!(pizza["price"], 12.99);
        assert_eq!(pizza["created_by"], 1);
        for field in ["created_at", "updated_at"] {
            let text = pizza[field].as_str().unwrap();
            assert!(text.ends_with('Z'), "{text}");
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        }
    }
);

both_backends!(
    fn a_missing_pizza_is_a_404_and_a_bad_id_a_400(backend) {
        let app = spawn_app(backend);

        let missing = app.get("/api/v1/public/pizzas/999");

        assert_eq!(missing.status, 404);
        assert_eq!(missing.json(), json!({"error": "Pizza not found"}));
        for bad in ["abc", "0", "-1", "1.5", "1e3", "%201", "99999999999999999999"] {
            let response = app.get(&format!("/api/v1/public/pizzas/{bad}"));
            assert_eq!(response.status, 400, "{bad}");
            assert_eq!(response.json(), json!({"error": "Invalid pizza ID format"}), "{bad}");
        }
    }
);

both_backends!(
    fn a_created_pizza_belongs_to_the_caller_and_ignores_id_and_created_by(backend) {
        let app = spawn_app(backend);
        let token = app.user_token();

        let response = app.authed(
            "POST",
            "/api/v1/pizzas",
            &token,
            Some(&json!({
                "id": 1, "created_by": 1, "name": "Funghi", "description": "Mushrooms",
                "ingredients": ["Tomato Sauce", "Mushrooms"], "price": 13.5, "unknown": "ignored"
            })),
        );

        assert_eq!(response.status, 201, "{}", response.body);
        let pizza = response.json();
        assert_eq!(pizza["id"], 4);
        assert_eq!(pizza["created_by"], 2);
        assert_eq!(pizza["name"], "Funghi");
        assert_eq!(pizza["description"], "Mushrooms");
        assert_eq!(pizza["ingredients"], json!(["Tomato Sauce", "Mushrooms"]));
        assert_eq!(pizza["created_at"], pizza["updated_at"]);
        assert!(pizza.get("unknown").is_none());
        assert_eq!(response.header("location"), Some("/api/v1/public/pizzas/4"));
        assert_eq!(app.get("/api/v1/public/pizzas/4").json(), pizza);
        assert_eq!(app.get("/api/v1/public/pizzas/1").json()["name"], "Margherita", "pizza 1 untouched");
    }
);

both_backends!(
    fn prices_round_trip_exactly(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        for (text, value) in [("19.99", 19.99), ("0", 0.0), ("0.1", 0.1), ("1000000", 1_000_000.0), ("33.33", 33.33)] {
            let body = format!(r#"{{"name":"Price {text}","price":{text}}}"#);
            let created = app.request(
                "POST",
                "/api/v1/pizzas",
                &[("Authorization", &bearer(&token)), ("Content-Type", "application/json")],
                Some(body.as_bytes()),
            );
            assert_eq!(created.status, 201, "{}", created.body);
            let id = created.json()["id"].as_i64().unwrap();
            let read = app.get(&format!("/api/v1/public/pizzas/{id}"));
            assert_eq!(read.json()["price"].as_f64(), Some(value), "{text}");
            assert_eq!(created.json()["price"], read.json()["price"]);
        }
        let created = create(&app, &token, json!({"name": "Exact", "price": 19.99}));
        assert!(app.get(&format!("/api/v1/public/pizzas/{}", created["id"])).body.contains(r#""price":19.99,"#));

        let id = created["id"].as_i64().unwrap();
        let updated = app.authed("PUT", &format!("/api/v1/pizzas/{id}"), &token, Some(&json!({"name": "Exact", "price": 24.99})));
        assert!(updated.body.contains(r#""price":24.99,"#), "{}", updated.body);
        assert!(app.get(&format!("/api/v1/public/pizzas/{id}")).body.contains(r#""price":24.99,"#));
    }
);

both_backends!(
    fn put_replaces_the_whole_pizza_and_keeps_its_creator_and_creation_time(backend) {
        let app = spawn_app(backend);
        let token = app.user_token();
        let before = create(
            &app,
            &token,
            json!({"name": "Quattro", "description": "Four cheeses", "ingredients": ["Gorgonzola"], "price": 14}),
        );
        let id = before["id"].as_i64().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));

        let response = app.authed("PUT", &format!("/api/v1/pizzas/{id}"), &token, Some(&json!({"name": "Quattro Formaggi", "price": 15.5})));

        assert_eq!(response.status, 200, "{}", response.body);
        let after = response.json();
        assert_eq!(after["id"], id);
        assert_eq!(after["name"], "Quattro Formaggi");
        assert_eq!(after["description"], "", "an omitted description is cleared");
        assert_eq!(after["ingredients"], json!([]), "omitted ingredients are cleared");
        assert_eq!(after["price"], 15.5);
        assert_eq!(after["created_by"], before["created_by"]);
        assert_eq!(after["created_at"], before["created_at"]);
        assert!(after["updated_at"].as_str() > before["updated_at"].as_str(), "{after} vs {before}");
        assert_eq!(app.get(&format!("/api/v1/public/pizzas/{id}")).json(), after);
    }
);

both_backends!(
    fn updated_at_moves_forward_on_every_update(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let mut last = app.get("/api/v1/public/pizzas/1").json()["updated_at"].as_str().unwrap().to_owned();

        for i in 0..5 {
            let response = app.authed("PUT", "/api/v1/pizzas/1", &token, Some(&json!({"name": format!("M{i}"), "price": 1})));
            let now = response.json()["updated_at"].as_str().unwrap().to_owned();
            assert!(now > last, "{now} after {last}");
            last = now;
        }
        assert_eq!(app.get("/api/v1/public/pizzas/1").json()["created_at"], app.get("/api/v1/public/pizzas/2").json()["created_at"]);
    }
);

both_backends!(
    fn put_checks_id_then_existence_then_permission_then_body(backend) {
        let app = spawn_app(backend);
        let user = app.user_token();
        let own = create(&app, &user, json!({"name": "Mine", "price": 1}))["id"].as_i64().unwrap();
        let bad_body = json!({"name": "", "price": -1});

        let bad_id = app.authed("PUT", "/api/v1/pizzas/abc", &user, Some(&bad_body));
        let missing = app.authed("PUT", "/api/v1/pizzas/999", &user, Some(&bad_body));
        let forbidden = app.authed("PUT", "/api/v1/pizzas/1", &user, Some(&bad_body));
        let invalid = app.authed("PUT", &format!("/api/v1/pizzas/{own}"), &user, Some(&bad_body));

        assert_eq!((bad_id.status, bad_id.json()["error"].as_str()), (400, Some("Invalid pizza ID format")));
        assert_eq!(missing.status, 404);
        assert_eq!(forbidden.status, 403);
        assert_eq!(invalid.status, 400);
        assert!(invalid.json()["field"].is_string());
    }
);

both_backends!(
    fn a_user_changes_only_their_own_pizzas_and_an_admin_any(backend) {
        let app = spawn_app(backend);
        let user = app.user_token();
        let admin = app.admin_token();
        let own = create(&app, &user, json!({"name": "User pizza", "price": 9}))["id"].as_i64().unwrap();

        let update_own = app.authed("PUT", &format!("/api/v1/pizzas/{own}"), &user, Some(&json!({"name": "Renamed", "price": 9})));
        let update_admins = app.authed("PUT", "/api/v1/pizzas/1", &user, Some(&json!({"name": "Hijack", "price": 1})));
        let delete_admins = app.authed("DELETE", "/api/v1/pizzas/1", &user, None);
        let admin_updates = app.authed("PUT", &format!("/api/v1/pizzas/{own}"), &admin, Some(&json!({"name": "By admin", "price": 8})));

        assert_eq!(update_own.status, 200);
        assert_eq!(update_admins.status, 403);
        assert_eq!(
            update_admins.json(),
            json!({"error": "You can only update your own pizzas", "pizza_owner": 1, "your_id": 2})
        );
        assert_eq!(delete_admins.status, 403);
        assert_eq!(
            delete_admins.json(),
            json!({"error": "You can only delete your own pizzas", "pizza_owner": 1, "your_id": 2})
        );
        assert_eq!(app.get("/api/v1/public/pizzas/1").json()["name"], "Margherita");
        assert_eq!(admin_updates.status, 200);
        assert_eq!(admin_updates.json()["created_by"], 2, "the creator never changes");
        let admin_deletes = app.authed("DELETE", &format!("/api/v1/pizzas/{own}"), &admin, None);
        assert_eq!(admin_deletes.status, 204);
    }
);

both_backends!(
    fn a_delete_is_soft_final_and_safe_to_repeat(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        let first = app.authed("DELETE", "/api/v1/pizzas/2", &token, None);
        let second = app.authed("DELETE", "/api/v1/pizzas/2", &token, None);
        let read = app.get("/api/v1/public/pizzas/2");
        let update = app.authed("PUT", "/api/v1/pizzas/2", &token, Some(&json!({"name": "Back", "price": 1})));
        let list = app.get("/api/v1/public/pizzas").json();
        let next = create(&app, &token, json!({"name": "After delete", "price": 2}));

        assert_eq!(first.status, 204);
        assert_eq!(first.body, "");
        assert_eq!(second.status, 404);
        assert_eq!(second.json(), json!({"error": "Pizza not found"}));
        assert_eq!(read.status, 404);
        assert_eq!(update.status, 404);
        assert_eq!(names(&list), vec!["Margherita", "Vegetarian"]);
        assert_eq!(next["id"], 4, "IDs are never reused");
        let kept = app.db.query_column("SELECT deleted_at FROM pizzas WHERE id = 2");
        assert!(kept[0].is_some(), "the row is kept with deleted_at set");
    }
);

both_backends!(
    fn every_validation_rule_names_its_field(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let many: Vec<String> = (0..51).map(|i| format!("I{i}")).collect();
        let cases = [
            (json!({"name": "", "price": 1}), "name"),
            (json!({"name": "   ", "price": 1}), "name"),
            (json!({"price": 1}), "name"),
            (json!({"name": "x".repeat(101), "price": 1}), "name"),
            (json!({"name": 42, "price": 1}), "name"),
            (json!({"name": "a", "price": -1}), "price"),
            (json!({"name": "a", "price": 1000000.5}), "price"),
            (json!({"name": "a", "price": "cheap"}), "price"),
            (json!({"name": "a", "price": "NaN"}), "price"),
            (json!({"name": "a", "price": "Infinity"}), "price"),
            (json!({"name": "a"}), "price"),
            (json!({"name": "a", "price": 1, "ingredients": many}), "ingredients"),
            (json!({"name": "a", "price": 1, "ingredients": ["ok", 7]}), "ingredients"),
            (json!({"name": "a", "price": 1, "ingredients": [""]}), "ingredients"),
            (json!({"name": "a", "price": 1, "ingredients": ["x".repeat(101)]}), "ingredients"),
            (json!({"name": "a", "price": 1, "ingredients": "Basil"}), "ingredients"),
            (json!({"name": "a", "price": 1, "description": "x".repeat(2001)}), "description"),
            (json!({"name": "a", "price": 1, "description": 5}), "description"),
        ];
        for (body, field) in cases {
            let created = app.authed("POST", "/api/v1/pizzas", &token, Some(&body));
            let updated = app.authed("PUT", "/api/v1/pizzas/1", &token, Some(&body));

            assert_field_error(&created, field);
            assert_field_error(&updated, field);
        }
        assert_eq!(app.get("/api/v1/public/pizzas").json().as_array().unwrap().len(), 3, "nothing was stored");
    }
);

both_backends!(
    fn a_body_that_is_not_json_or_missing_is_an_invalid_request_body(backend) {
        let app = spawn_app(backend);
        let auth = bearer(&app.admin_token());
        let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];

        for body in [Some(&b"{not json"[..]), Some(&b""[..]), None, Some(&b"[1,2]"[..]), Some(&b"{\"price\": NaN}"[..])] {
            let created = app.request("POST", "/api/v1/pizzas", &headers, body);
            let updated = app.request("PUT", "/api/v1/pizzas/1", &headers, body);

            for response in [created, updated] {
                assert_eq!(response.status, 400, "{body:?}: {}", response.body);
                assert_eq!(response.json()["error"], "Invalid request body", "{body:?}");
            }
        }
    }
);

both_backends!(
    fn paging_by_limit_and_offset_with_bounds(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        for i in 0..7 {
            create(&app, &token, json!({"name": format!("Extra {i}"), "price": i}));
        }

        let first = app.get("/api/v1/public/pizzas?limit=4");
        let second = app.get("/api/v1/public/pizzas?limit=4&offset=4");
        let beyond = app.get("/api/v1/public/pizzas?offset=100");
        let max = app.get("/api/v1/public/pizzas?limit=1000");

        let ids = |r: &TestResponse| r.json().as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect::<Vec<_>>();
        assert_eq!(ids(&first), vec![1, 2, 3, 4]);
        assert_eq!(first.header("link"), Some(r#"</api/v1/public/pizzas?limit=4&after=4>; rel="next""#));
        assert_eq!(ids(&second), vec![5, 6, 7, 8]);
        assert_eq!(beyond.json(), json!([]));
        assert_eq!(ids(&max).len(), 10);
        assert_eq!(max.header("link"), None, "no next page after the last");
        for bad in ["limit=0", "limit=1001", "limit=-5", "limit=abc", "offset=-1", "offset=x", "created_by=0", "created_by=abc"] {
            let response = app.get(&format!("/api/v1/public/pizzas?{bad}"));
            assert_eq!(response.status, 400, "{bad}");
            assert!(response.json()["error"].is_string());
        }
    }
);

/// The path of a `Link: <path>; rel="next"` header.
fn next_path(response: &TestResponse) -> Option<String> {
    let link = response.header("link")?;
    let path = link.strip_prefix('<')?.strip_suffix(">; rel=\"next\"")?;
    Some(path.to_owned())
}

fn ids(response: &TestResponse) -> Vec<i64> {
    response.json().as_array().unwrap().iter().map(|p| p["id"].as_i64().unwrap()).collect()
}

/// Adds `count` pizzas straight into the database (much faster than the
/// API): names `Bulk <i>`, owned by the admin; returns nothing, their IDs
/// follow the seed's.
fn bulk_insert(app: &TestApp, count: i64) {
    let sql = match app.db.backend() {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             INSERT INTO pizzas (name, name_folded, price, created_by, created_at, updated_at) \
             SELECT 'Bulk ' || i, 'bulk ' || i, 1, 1, '2025-11-10T12:34:56.123456Z', '2025-11-10T12:34:56.123456Z' FROM n"
        ),
        Backend::Postgres => format!(
            "INSERT INTO pizzas (name, name_folded, price, created_by, created_at, updated_at) \
             SELECT 'Bulk ' || i, 'bulk ' || i, 1, 1, now(), now() FROM generate_series(1, {count}) AS i"
        ),
    };
    app.db.execute(&sql);
}

both_backends!(
    fn the_next_link_carries_a_cursor_and_keeps_the_filters(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        for i in 0..7 {
            create(&app, &token, json!({"name": format!("Extra {i}"), "price": i}));
        }
        app.authed("DELETE", "/api/v1/pizzas/6", &token, None);

        let first = app.get("/api/v1/public/pizzas?limit=4");
        let second = app.get(&next_path(&first).unwrap());
        let third = app.get(&next_path(&second).unwrap());
        let named = app.get("/api/v1/public/pizzas?name=EXTRA&created_by=1&limit=2");
        let named_next = app.get(&next_path(&named).unwrap());
        let from_offset = app.get("/api/v1/public/pizzas?limit=2&offset=3");

        assert_eq!(ids(&first), vec![1, 2, 3, 4]);
        assert_eq!(next_path(&first).as_deref(), Some("/api/v1/public/pizzas?limit=4&after=4"));
        assert_eq!(ids(&second), vec![5, 7, 8, 9], "the deleted pizza 6 is skipped");
        assert_eq!(ids(&third), vec![10]);
        assert_eq!(next_path(&third), None);
        assert_eq!(ids(&named), vec![4, 5]);
        assert_eq!(next_path(&named).as_deref(), Some("/api/v1/public/pizzas?name=extra&created_by=1&limit=2&after=5"));
        assert_eq!(ids(&named_next), vec![7, 8]);
        assert_eq!(ids(&from_offset), vec![4, 5]);
        assert_eq!(next_path(&from_offset).as_deref(), Some("/api/v1/public/pizzas?limit=2&after=5"), "offset becomes a cursor");
        assert_eq!(ids(&app.get("/api/v1/public/pizzas?after=8&offset=1")), vec![10]);
        assert_eq!(app.get("/api/v1/public/pizzas?after=9223372036854775807").json(), json!([]));
    }
);

both_backends!(
    fn an_offset_skips_matching_pizzas_under_every_filter(backend) {
        let app = spawn_app(backend);
        let (admin, user) = (app.admin_token(), app.user_token());
        for i in 0..12 {
            let token = if i % 3 == 0 { &user } else { &admin };
            create(&app, token, json!({"name": format!("Offset {i}"), "price": i}));
        }
        app.authed("DELETE", "/api/v1/pizzas/7", &admin, None);

        for filter in ["", "&name=offset", "&created_by=2", "&name=offset&created_by=1", "&after=5", "&name=fset&after=6"] {
            let all = ids(&app.get(&format!("/api/v1/public/pizzas?limit=1000{filter}")));
            for offset in [1, 2, 5, all.len(), all.len() + 3] {
                let page = app.get(&format!("/api/v1/public/pizzas?limit=3&offset={offset}{filter}"));
                let expected: Vec<i64> = all.iter().skip(offset).take(3).copied().collect();
                assert_eq!(ids(&page), expected, "offset={offset}{filter}");
            }
        }
    }
);

both_backends!(
    fn an_offset_beyond_the_maximum_is_refused_with_a_pointer_to_the_cursor(backend) {
        let app = spawn_app(backend);

        let at_max = app.get("/api/v1/public/pizzas?offset=10000");
        let beyond = app.get("/api/v1/public/pizzas?offset=10001");
        let short_with_offset = app.get("/api/v1/public/pizzas?name=pe&offset=1");

        assert_eq!(at_max.status, 200);
        assert_eq!(at_max.json(), json!([]));
        assert_field_error(&beyond, "offset");
        assert!(beyond.json()["error"].as_str().unwrap().contains("after=<id>"), "{}", beyond.body);
        assert_field_error(&short_with_offset, "offset");
        for bad in ["after=-1", "after=x", "after=1.5"] {
            assert_field_error(&app.get(&format!("/api/v1/public/pizzas?{bad}")), "after");
        }
    }
);

both_backends!(
    fn a_filter_the_index_cannot_serve_pages_through_a_bounded_window(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        bulk_insert(&app, 5_500);
        let far = create(&app, &token, json!({"name": "50% off", "price": 1}))["id"].as_i64().unwrap();

        // "%" holds no letter or digit: each request examines at most 5,000
        // live pizzas after its cursor.
        let first = app.get("/api/v1/public/pizzas?name=%25&limit=5");
        let second = app.get(&next_path(&first).unwrap());
        let indexed = app.get("/api/v1/public/pizzas?name=0%25+OFF");

        assert_eq!(first.status, 200);
        assert_eq!(first.json(), json!([]), "no match among the first 5,000");
        assert_eq!(next_path(&first).as_deref(), Some("/api/v1/public/pizzas?name=%25&limit=5&after=5000"));
        assert_eq!(ids(&second), vec![far]);
        assert_eq!(next_path(&second), None, "the window reached the end");
        assert_eq!(ids(&indexed), vec![far]);
        assert_eq!(ids(&app.get("/api/v1/public/pizzas?name=k+1&limit=3")), vec![4, 13, 14]);
    }
);

both_backends!(
    fn the_default_page_holds_100_pizzas(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        for i in 0..100 {
            create(&app, &token, json!({"name": format!("P{i}"), "price": 1}));
        }

        let page = app.get("/api/v1/public/pizzas");

        assert_eq!(page.json().as_array().unwrap().len(), 100);
        assert!(page.header("link").unwrap().contains("after=100"));
    }
);

both_backends!(
    fn the_name_filter_is_a_case_insensitive_literal_substring(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        for name in ["100% Veggie", "Veggie Supreme", "Diavola_Hot", "Diavola Hot", "ÄPFEL Tarte", "Crème Brûlée"] {
            create(&app, &token, json!({"name": name, "price": 1}));
        }
        let find = |query: &str| names(&app.get(&format!("/api/v1/public/pizzas?name={query}")).json());

        assert_eq!(find("pEpPeR"), vec!["Pepperoni"]);
        assert_eq!(find("%25"), vec!["100% Veggie"]);
        assert_eq!(find("100%25"), vec!["100% Veggie"]);
        assert_eq!(find("_"), vec!["Diavola_Hot"]);
        assert_eq!(find("veggie"), vec!["100% Veggie", "Veggie Supreme"]);
        assert_eq!(find("%C3%A4pfel"), vec!["ÄPFEL Tarte"], "non-ASCII letters fold too");
        assert_eq!(find("CR%C3%88ME"), vec!["Crème Brûlée"]);
        assert_eq!(find("nothing-like-this"), Vec::<String>::new());
    }
);

both_backends!(
    fn the_name_filter_finds_a_written_name_at_once_and_a_replaced_one_no_more(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let find = |query: &str| names(&app.get(&format!("/api/v1/public/pizzas?name={query}")).json());
        let quattro = |range: std::ops::Range<i32>| range.map(|i| format!("Quattro {i:02}")).collect::<Vec<_>>();

        // Each looked for the moment its create is acknowledged (on SQLite
        // its name is then on the backlog, not yet in the trigram index).
        let mut ids = Vec::new();
        for i in 0..20 {
            ids.push(create(&app, &token, json!({"name": format!("Quattro {i:02}"), "price": 1}))["id"].as_i64().unwrap());
            assert_eq!(find(&format!("quattro%20{i:02}")), quattro(i..i + 1));
        }
        let renamed = app.authed("PUT", &format!("/api/v1/pizzas/{}", ids[7]), &token, Some(&json!({"name": "Tonno", "price": 1})));
        assert_eq!(renamed.status, 200, "{}", renamed.body);
        let deleted = app.authed("DELETE", &format!("/api/v1/pizzas/{}", ids[8]), &token, None);
        assert_eq!(deleted.status, 204, "{}", deleted.body);

        let expected: Vec<String> = quattro(0..20).into_iter().filter(|n| n != "Quattro 07" && n != "Quattro 08").collect();
        let answers = |when: &str| {
            assert_eq!(find("quattro"), expected, "{when}");
            assert_eq!(find("quattro%2007"), Vec::<String>::new(), "{when}: the old name is gone");
            assert_eq!(find("tonno"), vec!["Tonno"], "{when}");
            assert_eq!(find("quattro&offset=10"), expected[10..], "{when}");
            let page = app.get("/api/v1/public/pizzas?name=quattro&limit=5");
            let next = next_path(&page).unwrap();
            assert_eq!(names(&app.get(&next).json()), expected[5..10], "{when}: the cursor's page");
        };
        answers("just written");
        if backend == Backend::Sqlite {
            // Moved into the index by the service within its interval.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while app.db.query_i64("SELECT count(*) FROM pizza_name_backlog") > 0 {
                assert!(std::time::Instant::now() < deadline, "the name backlog was never moved into the index");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            answers("once indexed");
        }
    }
);

both_backends!(
    fn the_created_by_filter_and_name_combine(backend) {
        let app = spawn_app(backend);
        let user = app.user_token();
        create(&app, &user, json!({"name": "Margherita of the user", "price": 3}));

        let by_user = names(&app.get("/api/v1/public/pizzas?created_by=2").json());
        let by_admin_named = names(&app.get("/api/v1/public/pizzas?created_by=1&name=marg").json());
        let by_nobody = app.get("/api/v1/public/pizzas?created_by=99").json();

        assert_eq!(by_user, vec!["Margherita of the user"]);
        assert_eq!(by_admin_named, vec!["Margherita"]);
        assert_eq!(by_nobody, json!([]));
    }
);

both_backends!(
    fn writes_need_a_token(backend) {
        let app = spawn_app(backend);

        let create = app.send_json("POST", "/api/v1/pizzas", &json!({"name": "x", "price": 1}), &[]);
        let update = app.send_json("PUT", "/api/v1/pizzas/1", &json!({"name": "x", "price": 1}), &[]);
        let delete = app.request("DELETE", "/api/v1/pizzas/1", &[], None);

        for response in [create, update, delete] {
            assert_eq!(response.status, 401);
            assert_eq!(response.json()["error"], "authorization_required");
        }
    }
);

both_backends!(
    fn pizza_routes_answer_405_with_allow_for_other_methods(backend) {
        let app = spawn_app(backend);

        let cases = [
            ("DELETE", "/api/v1/public/pizzas", "GET, HEAD"),
            ("POST", "/api/v1/public/pizzas/1", "GET, HEAD"),
            ("GET", "/api/v1/pizzas", "POST"),
            ("GET", "/api/v1/pizzas/1", "PUT, DELETE"),
            ("PATCH", "/api/v1/pizzas/1", "PUT, DELETE"),
        ];
        for (method, path, allow) in cases {
            let response = app.request(method, path, &[], None);
            assert_eq!(response.status, 405, "{method} {path}");
            assert_eq!(response.header("allow"), Some(allow), "{method} {path}");
        }
    }
);

both_backends!(
    fn concurrent_creates_all_land_with_distinct_ids(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        let ids: Vec<i64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let (app, token) = (&app, &token);
                    scope.spawn(move || {
                        (0..10)
                            .map(|i| create(app, token, json!({"name": format!("T{t}-{i}"), "price": 1}))["id"].as_i64().unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });

        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 80);
        assert_eq!(app.db.query_i64("SELECT count(*) FROM pizzas WHERE deleted_at IS NULL"), 83);
    }
);

/// The same requests on both databases give the same JSON, timestamps aside.
#[test]
fn sqlite_and_postgres_answer_identically() {
    if !postgres_available() {
        return;
    }
    let run = |backend: Backend| -> Vec<Value> {
        let app = spawn_app(backend);
        let admin = app.admin_token();
        let user = app.user_token();
        let mut answers = Vec::new();
        let mut record = |r: TestResponse| {
            let mut body = if r.body.is_empty() { Value::Null } else { r.json() };
            strip_timestamps(&mut body);
            answers.push(json!({"status": r.status, "body": body}));
        };
        record(app.get("/api/v1/public/pizzas"));
        record(app.authed(
            "POST",
            "/api/v1/pizzas",
            &admin,
            Some(&json!({"name": "Calzone", "price": 19.99, "ingredients": ["Ham", "Ricotta"]})),
        ));
        record(app.authed(
            "POST",
            "/api/v1/pizzas",
            &user,
            Some(&json!({"name": "ÜBER käse 50%", "description": "d", "price": 0.1})),
        ));
        record(app.authed("PUT", "/api/v1/pizzas/4", &admin, Some(&json!({"name": "Calzone", "price": 24.99}))));
        record(app.authed("PUT", "/api/v1/pizzas/1", &user, Some(&json!({"name": "x", "price": 1}))));
        record(app.authed("DELETE", "/api/v1/pizzas/2", &admin, None));
        record(app.authed("DELETE", "/api/v1/pizzas/2", &admin, None));
        record(app.authed("POST", "/api/v1/pizzas", &user, Some(&json!({"name": "", "price": 1}))));
        record(app.get("/api/v1/public/pizzas?name=%C3%BCber"));
        record(app.get("/api/v1/public/pizzas?name=%25"));
        record(app.get("/api/v1/public/pizzas?created_by=1&limit=2&offset=1"));
        record(app.get("/api/v1/public/pizzas/2"));
        record(app.get("/api/v1/public/pizzas/abc"));
        record(app.get("/api/v1/public/pizzas"));
        answers
    };

    let sqlite = run(Backend::Sqlite);
    let postgres = run(Backend::Postgres);

    assert_eq!(sqlite, postgres);
}

fn strip_timestamps(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for key in ["created_at", "updated_at"] {
                if let Some(v) = map.get_mut(key) {
                    assert!(v.as_str().is_some_and(|s| s.ends_with('Z')), "{key}: {v}");
                    *v = Value::Null;
                }
            }
            map.values_mut().for_each(strip_timestamps);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_timestamps),
        _ => {}
    }
}

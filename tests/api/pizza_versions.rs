//! Versioned pizzas: `ETag` on every pizza response, `If-None-Match` on the
//! public read, `If-Match` on update and delete.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

fn put_if_match(app: &TestApp, token: &str, id: i64, etag: &str, body: &serde_json::Value) -> TestResponse {
    let auth = bearer(token);
    app.send_json("PUT", &format!("/api/v1/pizzas/{id}"), body, &[("Authorization", &auth), ("If-Match", etag)])
}

fn delete_if_match(app: &TestApp, token: &str, id: i64, etag: &str) -> TestResponse {
    let auth = bearer(token);
    app.request("DELETE", &format!("/api/v1/pizzas/{id}"), &[("Authorization", &auth), ("If-Match", etag)], None)
}

both_backends!(
    fn every_pizza_response_carries_an_etag_that_changes_on_every_update(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        let read = app.get("/api/v1/public/pizzas/1");
        let created = app.authed("POST", "/api/v1/pizzas", &token, Some(&json!({"name": "Funghi", "price": 13.5})));
        let body = json!({"name": "Margherita", "price": 11});
        let updated = app.authed("PUT", "/api/v1/pizzas/1", &token, Some(&body));
        // The same data again is still a new version.
        let again = app.authed("PUT", "/api/v1/pizzas/1", &token, Some(&body));

        // The same values on both databases: "<id>-<version>".
        assert_eq!(read.header("etag"), Some(r#""1-1""#));
        assert_eq!(created.header("etag"), Some(r#""4-1""#));
        assert_eq!(updated.header("etag"), Some(r#""1-2""#));
        assert_eq!(again.header("etag"), Some(r#""1-3""#));
        assert_eq!(app.get("/api/v1/public/pizzas/1").header("etag"), Some(r#""1-3""#));
        assert!(app.get("/api/v1/public/pizzas/1").json().get("version").is_none(), "not a field of the JSON");
    }
);

both_backends!(
    fn if_none_match_is_a_304_without_a_body(backend) {
        let app = spawn_app(backend);
        let etag = app.get("/api/v1/public/pizzas/2").header("etag").unwrap().to_owned();

        for matching in [etag.as_str(), "*", r#"W/"2-1""#, r#""0-0", "2-1""#] {
            let response = app.get_with("/api/v1/public/pizzas/2", &[("If-None-Match", matching)]);
            assert_eq!(response.status, 304, "{matching}");
            assert_eq!(response.body, "", "{matching}");
            assert_eq!(response.header("etag"), Some(etag.as_str()), "{matching}");
        }
        let stale = app.get_with("/api/v1/public/pizzas/2", &[("If-None-Match", r#""2-0""#)]);
        assert_eq!(stale.status, 200);
        assert_eq!(stale.json()["name"], "Pepperoni");
        let missing = app.get_with("/api/v1/public/pizzas/999", &[("If-None-Match", "*")]);
        assert_eq!(missing.status, 404);
        let raw = app.raw(
            b"GET /api/v1/public/pizzas/2 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"2-1\"\r\nConnection: close\r\n\r\n",
        );
        assert!(raw.starts_with("HTTP/1.1 304"), "{raw}");
        assert!(!raw.to_ascii_lowercase().contains("content-length"), "no length for a 304: {raw}");
        assert!(raw.ends_with("\r\n\r\n"), "no body: {raw}");
    }
);

both_backends!(
    fn the_first_put_with_if_match_wins_and_the_second_gets_412(backend) {
        let app = spawn_app(backend);
        // The owner (user-client) and an admin (dev-client) both read the pizza.
        let (owner, admin) = (app.user_token(), app.admin_token());
        let created = app.authed("POST", "/api/v1/pizzas", &owner, Some(&json!({"name": "Shared", "price": 5})));
        assert_eq!(created.status, 201, "{}", created.body);
        let etag = app.get("/api/v1/public/pizzas/4").header("etag").unwrap().to_owned();
        assert_eq!(app.get("/api/v1/public/pizzas/4").header("etag"), Some(etag.as_str()));

        let first = put_if_match(&app, &owner, 4, &etag, &json!({"name": "Alice's", "price": 10}));
        let second = put_if_match(&app, &admin, 4, &etag, &json!({"name": "Bob's", "price": 20}));

        assert_eq!(first.status, 200, "{}", first.body);
        assert_ne!(first.header("etag"), Some(etag.as_str()));
        assert_eq!(second.status, 412, "{}", second.body);
        assert_eq!(second.json()["error"], "Precondition failed");
        let now = app.get("/api/v1/public/pizzas/4").json();
        assert_eq!((now["name"].as_str(), now["price"].as_f64()), (Some("Alice's"), Some(10.0)));
        let current = first.header("etag").unwrap();
        let third = put_if_match(&app, &admin, 4, current, &json!({"name": "Bob's", "price": 20}));
        assert_eq!(third.status, 200, "the current ETag matches: {}", third.body);
    }
);

both_backends!(
    fn a_delete_with_a_stale_etag_is_a_412_and_with_the_current_one_a_204(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let stale = app.get("/api/v1/public/pizzas/2").header("etag").unwrap().to_owned();
        let updated = app.authed("PUT", "/api/v1/pizzas/2", &token, Some(&json!({"name": "Pepperoni", "price": 13})));

        let refused = delete_if_match(&app, &token, 2, &stale);
        let weak = delete_if_match(&app, &token, 2, &format!("W/{}", updated.header("etag").unwrap()));
        let deleted = delete_if_match(&app, &token, 2, updated.header("etag").unwrap());

        assert_eq!(refused.status, 412, "{}", refused.body);
        assert_eq!(refused.json()["error"], "Precondition failed");
        assert_eq!(weak.status, 412, "a weak tag never matches If-Match: {}", weak.body);
        assert_eq!(deleted.status, 204, "{}", deleted.body);
        assert_eq!(app.get("/api/v1/public/pizzas/2").status, 404);
    }
);

both_backends!(
    fn if_match_star_matches_any_existing_pizza(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        let updated = put_if_match(&app, &token, 1, "*", &json!({"name": "Any", "price": 1}));
        let missing = put_if_match(&app, &token, 999, "*", &json!({"name": "Any", "price": 1}));
        let deleted = delete_if_match(&app, &token, 1, "*");
        let again = delete_if_match(&app, &token, 1, "*");

        assert_eq!(updated.status, 200, "{}", updated.body);
        assert_eq!(missing.status, 404, "{}", missing.body);
        assert_eq!(deleted.status, 204);
        assert_eq!(again.status, 404);
    }
);

both_backends!(
    fn a_missing_pizza_is_a_404_someone_elses_a_403_and_a_bad_body_a_400_before_any_412(backend) {
        let app = spawn_app(backend);
        let (admin, user) = (app.admin_token(), app.user_token());
        let stale = r#""1-0""#;
        let body = json!({"name": "X", "price": 1});

        let missing = put_if_match(&app, &admin, 999, stale, &body);
        let not_mine = put_if_match(&app, &user, 1, stale, &body);
        let not_mine_delete = delete_if_match(&app, &user, 1, stale);
        let bad_body = put_if_match(&app, &admin, 1, stale, &json!({"name": "", "price": 1}));
        let stale_put = put_if_match(&app, &admin, 1, stale, &body);
        let garbage = put_if_match(&app, &admin, 1, "not-an-etag", &body);

        assert_eq!(missing.status, 404, "{}", missing.body);
        assert_eq!(not_mine.status, 403, "{}", not_mine.body);
        assert_eq!(not_mine_delete.status, 403, "{}", not_mine_delete.body);
        assert_eq!(bad_body.status, 400, "{}", bad_body.body);
        assert_eq!(stale_put.status, 412, "{}", stale_put.body);
        assert_eq!(garbage.status, 412, "{}", garbage.body);
        assert_eq!(app.get("/api/v1/public/pizzas/1").json()["name"], "Margherita", "untouched");
    }
);

//! Safe retries: `Idempotency-Key` on `POST /api/v1/pizzas` and
//! `POST /api/v1/clients`.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

fn funghi() -> Value {
    json!({"name": "Funghi", "description": "Mushrooms", "ingredients": ["Tomato Sauce", "Mushrooms"], "price": 13.5})
}

/// `POST /api/v1/pizzas` with `body` as sent (bytes) and an `Idempotency-Key`.
fn post_with_key(app: &TestApp, token: &str, key: &str, body: &str) -> TestResponse {
    let auth = bearer(token);
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json"), ("Idempotency-Key", key)];
    app.request("POST", "/api/v1/pizzas", &headers, Some(body.as_bytes()))
}

fn pizza_count(app: &TestApp) -> i64 {
    app.db.query_i64("SELECT count(*) FROM pizzas")
}

both_backends!(
    fn the_same_key_twice_creates_one_pizza_and_replays_the_first_answer(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let before = pizza_count(&app);

        let first = post_with_key(&app, &token, "retry-1", &funghi().to_string());
        // The same request again, spelled differently: key order, spacing, 13.50.
        let again = r#"{ "price": 13.50, "ingredients": ["Tomato Sauce", "Mushrooms"],
                         "description": "Mushrooms", "name": "Funghi" }"#;
        let second = post_with_key(&app, &token, "retry-1", again);

        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(first.header("idempotency-replayed"), None);
        assert_eq!(second.status, 201, "{}", second.body);
        assert_eq!(second.body, first.body, "byte for byte the first answer");
        assert_eq!(second.header("idempotency-replayed"), Some("true"));
        assert_eq!(second.header("location"), first.header("location"));
        assert_eq!(second.header("etag"), first.header("etag"));
        assert_eq!(pizza_count(&app), before + 1, "one pizza");
    }
);

both_backends!(
    fn the_same_key_with_another_body_is_a_422(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let first = post_with_key(&app, &token, "retry-2", &funghi().to_string());
        assert_eq!(first.status, 201, "{}", first.body);

        let other = post_with_key(&app, &token, "retry-2", r#"{"name":"Funghi","price":14}"#);

        assert_eq!(other.status, 422, "{}", other.body);
        let body = other.json();
        assert_eq!(body["error"], "Idempotency-Key reused with a different request body");
        assert!(body["details"].as_str().unwrap().contains("new key"), "{}", other.body);
        assert_eq!(pizza_count(&app), 4);
    }
);

both_backends!(
    fn the_same_key_from_another_caller_or_client_is_independent(backend) {
        let mut app = spawn_app(backend);
        let (admin, user) = (app.admin_token(), app.user_token());
        // A second OAuth client of the same admin user.
        let created = app.authed("POST", "/api/v1/clients", &admin, Some(&json!({"name": "second"})));
        assert_eq!(created.status, 201, "{}", created.body);
        let (id, secret) = (created.json()["client_id"].as_str().unwrap().to_owned(), created.json()["client_secret"].as_str().unwrap().to_owned());
        app.remember_secret(&secret);
        let admin_again = app.token_for((&id, &secret));
        let body = funghi().to_string();

        let answers: Vec<TestResponse> =
            [&admin, &user, &admin_again].iter().map(|token| post_with_key(&app, token, "shared-key", &body)).collect();

        for answer in &answers {
            assert_eq!(answer.status, 201, "{}", answer.body);
            assert_eq!(answer.header("idempotency-replayed"), None, "{}", answer.body);
        }
        let ids: Vec<i64> = answers.iter().map(|a| a.json()["id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![4, 5, 6]);
        assert_eq!(answers[1].json()["created_by"], 2);
    }
);

both_backends!(
    fn twenty_concurrent_requests_with_one_key_create_exactly_one_pizza(backend) {
        let app = spawn_app_with(backend, &[("WORKERS", "8")]);
        let token = app.admin_token();
        let body = funghi().to_string();

        let answers: Vec<TestResponse> = std::thread::scope(|scope| {
            let threads: Vec<_> =
                (0..20).map(|_| scope.spawn(|| post_with_key(&app, &token, "burst", &body))).collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });

        assert_eq!(pizza_count(&app), 4, "exactly one pizza");
        let created: Vec<&TestResponse> =
            answers.iter().filter(|a| a.status == 201 && a.header("idempotency-replayed").is_none()).collect();
        assert_eq!(created.len(), 1, "one first answer: {answers:?}");
        for answer in &answers {
            match answer.status {
                201 => assert_eq!(answer.body, created[0].body),
                409 => assert_eq!(answer.header("retry-after"), Some("1"), "{}", answer.body),
                other => panic!("{other}: {}", answer.body),
            }
        }
    }
);

both_backends!(
    fn a_retry_sent_to_another_replica_is_replayed(backend) {
        let db = TestDb::new(backend);
        let first_replica = spawn_on(db.clone(), &[]);
        let second_replica = spawn_on(db.clone(), &[]);
        let token = first_replica.admin_token();
        let body = funghi().to_string();

        let first = post_with_key(&first_replica, &token, "across", &body);
        let retry = post_with_key(&second_replica, &token, "across", &body);

        assert_eq!(first.status, 201, "{}", first.body);
        assert_eq!(retry.status, 201, "{}", retry.body);
        assert_eq!(retry.header("idempotency-replayed"), Some("true"));
        assert_eq!(retry.body, first.body);
        assert_eq!(pizza_count(&first_replica), 4);
    }
);

both_backends!(
    fn a_key_that_is_empty_too_long_or_not_printable_ascii_is_a_400_naming_the_header(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let body = funghi().to_string();

        for bad in [String::new(), "k".repeat(256)] {
            let response = post_with_key(&app, &token, &bad, &body);
            assert_eq!(response.status, 400, "{}", response.body);
            assert!(response.json()["error"].as_str().unwrap().contains("Idempotency-Key"), "{}", response.body);
        }
        let raw = format!(
            "POST /api/v1/pizzas HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: caf\u{e9}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        assert!(app.raw(raw.as_bytes()).starts_with("HTTP/1.1 400"));
        assert_eq!(post_with_key(&app, &token, &"k".repeat(255), &body).status, 201, "255 is the limit");
        assert_eq!(pizza_count(&app), 4);
    }
);

both_backends!(
    fn an_expired_key_is_a_new_request_and_old_keys_are_purged(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let body = funghi().to_string();
        assert_eq!(post_with_key(&app, &token, "old", &body).status, 201);
        assert_eq!(post_with_key(&app, &token, "older", &body).status, 201);
        app.db.execute("UPDATE idempotency_keys SET created_at = '2000-01-01T00:00:00.000000Z'");

        let after_a_day = post_with_key(&app, &token, "old", &body);

        assert_eq!(after_a_day.status, 201, "{}", after_a_day.body);
        assert_eq!(after_a_day.header("idempotency-replayed"), None);
        assert_eq!(after_a_day.json()["id"], 6, "a new pizza");
        let keys = app.db.query_column("SELECT idem_key FROM idempotency_keys ORDER BY idem_key");
        assert_eq!(keys, vec![Some("old".to_owned())], "the other expired key was purged");
    }
);

/// The fingerprint of [`funghi`]: SHA-256 of its canonical JSON (keys
/// sorted, no spaces), as the service computes it.
fn funghi_fingerprint() -> String {
    use sha2::Digest;
    let canonical =
        r#"{"description":"Mushrooms","ingredients":["Tomato Sauce","Mushrooms"],"name":"Funghi","price":13.5}"#;
    sha2::Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

both_backends!(
    fn a_key_in_flight_is_a_409_and_an_abandoned_one_is_taken_over(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();
        let now = time::OffsetDateTime::now_utc();
        let rows = [
            ("busy", funghi_fingerprint(), now),
            ("busy-other-body", "0".repeat(64), now),
            ("abandoned", funghi_fingerprint(), now - time::Duration::minutes(2)),
        ];
        for (key, hash, started) in rows {
            let started = started.format(&time::format_description::well_known::Rfc3339).unwrap();
            app.db.execute(&format!(
                "INSERT INTO idempotency_keys (user_id, client_id, route, idem_key, request_hash, created_at) \
                 VALUES (1, 'dev-client', 'POST /api/v1/pizzas', '{key}', '{hash}', '{started}')"
            ));
        }
        let body = funghi().to_string();

        let busy = post_with_key(&app, &token, "busy", &body);
        let other_body = post_with_key(&app, &token, "busy-other-body", &body);
        let abandoned = post_with_key(&app, &token, "abandoned", &body);

        assert_eq!(busy.status, 409, "{}", busy.body);
        assert_eq!(busy.header("retry-after"), Some("1"));
        assert!(busy.json()["details"].as_str().unwrap().contains("in progress"), "{}", busy.body);
        assert_eq!(other_body.status, 422, "{}", other_body.body);
        assert_eq!(abandoned.status, 201, "{}", abandoned.body);
        assert_eq!(abandoned.header("idempotency-replayed"), None);
        assert_eq!(pizza_count(&app), 4);
    }
);

both_backends!(
    fn a_repeated_client_create_is_a_409_naming_the_client_never_its_secret(backend) {
        let mut app = spawn_app(backend);
        let token = app.admin_token();
        let auth = bearer(&token);
        let headers = [("Authorization", auth.as_str()), ("Idempotency-Key", "client-1")];
        let body = json!({"name": "terraform", "scopes": "read write"});

        let first = app.send_json("POST", "/api/v1/clients", &body, &headers);
        let second = app.send_json("POST", "/api/v1/clients", &body, &headers);
        let other = app.send_json("POST", "/api/v1/clients", &json!({"name": "other"}), &headers);

        assert_eq!(first.status, 201, "{}", first.body);
        let secret = first.json()["client_secret"].as_str().unwrap().to_owned();
        app.remember_secret(&secret);
        assert_eq!(second.status, 409, "{}", second.body);
        assert_eq!(second.json()["client_id"], first.json()["client_id"]);
        assert!(second.json().get("client_secret").is_none(), "{}", second.body);
        assert!(!second.body.contains(&secret));
        assert_eq!(other.status, 422, "{}", other.body);
        assert_eq!(app.db.query_i64("SELECT count(*) FROM oauth_clients WHERE name = 'terraform'"), 1);
        let stored = app.db.query_column("SELECT coalesce(body, '') FROM idempotency_keys");
        assert_eq!(stored, vec![Some(String::new())], "no answer body (and so no secret) is kept");
    }
);

//! The credential lifecycle: revocation that holds on every replica within
//! 2 s (client deleted, secret rotated, one token revoked), secret rotation
//! with and without a grace period, the brute-force limit of client
//! authentication, and the audit log.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

/// How soon every replica must refuse a revoked token.
const REVOCATION_BOUND: Duration = Duration::from_secs(2);

/// Whether `token` is accepted: `GET /api/v1/clients` answers 200 (admin) or
/// 403 (user) to a valid token, 401 to a refused one.
fn accepted(app: &TestApp, token: &str) -> bool {
    let response = app.authed("GET", "/api/v1/clients", token, None);
    assert!(matches!(response.status, 200 | 401 | 403), "{} {}", response.status, response.body);
    response.status != 401
}

/// How long until `app` refuses `token` (polling every 20 ms); fails past 5 s.
fn time_until_refused(app: &TestApp, token: &str, since: Instant) -> Duration {
    loop {
        let response = app.authed("GET", "/api/v1/clients", token, None);
        if response.status == 401 {
            assert_eq!(response.json()["error"], "invalid_token", "{}", response.body);
            return since.elapsed();
        }
        assert!(since.elapsed() < Duration::from_secs(5), "still accepted after 5 s: {}", response.body);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates a client as the seeded admin; returns its ID and secret.
fn create_client(app: &mut TestApp, admin: &str, name: &str) -> (String, String) {
    let created = app.authed("POST", "/api/v1/clients", admin, Some(&json!({ "name": name })));
    assert_eq!(created.status, 201, "{}", created.body);
    let body = created.json();
    let (id, secret) = (body["client_id"].as_str().unwrap().to_owned(), body["client_secret"].as_str().unwrap());
    app.remember_secret(secret);
    (id, secret.to_owned())
}

/// A token for `client`, remembered as a secret of `app`'s log.
fn token(app: &mut TestApp, client: (&str, &str)) -> String {
    let token = app.token_for(client);
    app.remember_secret(&token);
    token
}

fn token_response(app: &TestApp, (id, secret): (&str, &str)) -> TestResponse {
    let form =
        format!("grant_type=client_credentials&client_id={}&client_secret={}", form_encode(id), form_encode(secret));
    app.token_request(&form, &[])
}

fn rotate(app: &TestApp, admin: &str, id: &str, body: Option<&Value>) -> TestResponse {
    app.authed("POST", &format!("/api/v1/clients/{id}/secret"), admin, body)
}

fn revoke(app: &TestApp, (id, secret): (&str, &str), token: &str) -> TestResponse {
    let form = format!("token={}", form_encode(token));
    app.request(
        "POST",
        "/api/v1/oauth/revoke",
        &[("Content-Type", "application/x-www-form-urlencoded"), ("Authorization", &basic_auth(id, secret))],
        Some(form.as_bytes()),
    )
}

/// The audit lines `app` has written so far, parsed.
fn audit_lines(app: &TestApp) -> Vec<Value> {
    app.log()
        .lines()
        .filter_map(|line| line.split_once(" audit ").map(|(_, json)| json))
        .map(|json| serde_json::from_str(json).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {json}")))
        .collect()
}

/// The first audit line of `event` for which `matches` holds; fails after 5 s.
fn audit_event(app: &TestApp, event: &str, matches: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(line) = audit_lines(app).into_iter().find(|l| l["event"] == event && matches(l)) {
            return line;
        }
        assert!(Instant::now() < deadline, "no {event} audit line; log:\n{}", app.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

both_backends!(
    fn deleting_a_client_revokes_its_tokens_on_every_replica_within_2_s(backend) {
        let db = TestDb::new(backend);
        let mut a = spawn_on(db.clone(), &[]);
        let mut b = spawn_on(db.clone(), &[]);
        let admin = token(&mut a, DEV_CLIENT);
        let (id, secret) = create_client(&mut a, &admin, "leaked");
        b.remember_secret(&secret);
        let from_a = token(&mut a, (&id, &secret));
        let from_b = token(&mut b, (&id, &secret));
        assert!(accepted(&a, &from_b) && accepted(&b, &from_a));

        let deleted = a.authed("DELETE", &format!("/api/v1/clients/{id}"), &admin, None);
        let at = Instant::now();
        assert_eq!(deleted.status, 204, "{}", deleted.body);

        // The replica that deleted it refuses at once.
        let refused = a.authed("GET", "/api/v1/clients", &from_b, None);
        assert_eq!(refused.status, 401);
        assert_eq!(
            refused.json(),
            json!({"error": "invalid_token", "error_description": "the token was revoked: its client has been deleted"})
        );
        for token in [&from_a, &from_b] {
            let took = time_until_refused(&b, token, at);
            assert!(took <= REVOCATION_BOUND, "replica B accepted a deleted client's token for {took:?}");
        }
        assert!(accepted(&b, &admin), "other clients' tokens still work");
        // A restarted replica knows it from its first request.
        drop(b);
        let mut c = spawn_on(db.clone(), &[]);
        c.remember_secret(&secret);
        c.remember_secret(&from_a);
        assert!(!accepted(&c, &from_a));
    }
);

both_backends!(
    fn rotating_a_secret_revokes_the_old_secret_and_earlier_tokens_everywhere(backend) {
        let db = TestDb::new(backend);
        let mut a = spawn_on(db.clone(), &[]);
        let mut b = spawn_on(db.clone(), &[]);
        let admin = token(&mut a, DEV_CLIENT);
        let (id, old_secret) = create_client(&mut a, &admin, "ci pipeline");
        b.remember_secret(&old_secret);
        let before = token(&mut a, (&id, &old_secret));

        let rotated = rotate(&a, &admin, &id, None);
        let at = Instant::now();
        assert_eq!(rotated.status, 200, "{}", rotated.body);
        assert_eq!(rotated.header("Cache-Control"), Some("no-store"));
        let body = rotated.json();
        let new_secret = body["client_secret"].as_str().unwrap().to_owned();
        a.remember_secret(&new_secret);
        b.remember_secret(&new_secret);
        assert_eq!(body["client_id"], id.as_str());
        assert_eq!(body["previous_secret_expires_at"], Value::Null);
        assert_ne!(new_secret, old_secret);

        let old = token_response(&a, (&id, &old_secret));
        assert_eq!((old.status, old.json()["error"].clone()), (401, json!("invalid_client")));
        let old_on_b = token_response(&b, (&id, &old_secret));
        assert_eq!(old_on_b.status, 401, "the old secret is refused on every replica at once");
        assert!(!accepted(&a, &before));
        let took = time_until_refused(&b, &before, at);
        assert!(took <= REVOCATION_BOUND, "replica B accepted a pre-rotation token for {took:?}");

        let after = token(&mut b, (&id, &new_secret));
        assert!(accepted(&a, &after) && accepted(&b, &after));
        assert_eq!(claims_of(&after)["gen"], 1);
        assert_eq!(claims_of(&after)["client_id"], id.as_str());
    }
);

both_backends!(
    fn a_grace_period_keeps_the_old_secret_working_until_it_ends(backend) {
        let mut app = spawn_app(backend);
        let admin = token(&mut app, DEV_CLIENT);
        let (id, old_secret) = create_client(&mut app, &admin, "slow consumer");
        let before = token(&mut app, (&id, &old_secret));

        let rotated = rotate(&app, &admin, &id, Some(&json!({"grace_seconds": 2})));
        assert_eq!(rotated.status, 200, "{}", rotated.body);
        let body = rotated.json();
        let new_secret = body["client_secret"].as_str().unwrap().to_owned();
        app.remember_secret(&new_secret);
        assert!(body["previous_secret_expires_at"].is_string(), "{body}");
        // Tokens from before the rotation are revoked even with a grace period.
        assert!(!accepted(&app, &before));

        let during = token_response(&app, (&id, &old_secret));
        assert_eq!(during.status, 200, "the old secret works during the grace period: {}", during.body);
        let grace_token = during.json()["access_token"].as_str().unwrap().to_owned();
        app.remember_secret(&grace_token);
        assert!(during.json()["expires_in"].as_u64().unwrap() <= 2, "its tokens end with the grace period");
        assert!(accepted(&app, &grace_token));
        token(&mut app, (&id, &new_secret));

        std::thread::sleep(Duration::from_millis(2500));
        let after = token_response(&app, (&id, &old_secret));
        assert_eq!(after.status, 401, "the old secret is refused once the grace period ends: {}", after.body);
        assert!(!accepted(&app, &grace_token));
        token(&mut app, (&id, &new_secret));

        let too_long = rotate(&app, &admin, &id, Some(&json!({"grace_seconds": 86401})));
        assert_eq!(too_long.status, 400);
        assert_eq!(too_long.json()["field"], "grace_seconds");
    }
);

both_backends!(
    fn a_secret_is_rotated_by_its_owner_or_an_admin_only(backend) {
        let mut app = spawn_app(backend);
        let admin = token(&mut app, DEV_CLIENT);
        let user = token(&mut app, USER_CLIENT);

        // Someone else's client is not found for a regular user.
        let foreign = rotate(&app, &user, "dev-client", None);
        assert_eq!((foreign.status, foreign.json()), (404, json!({"error": "Client not found"})));
        assert_eq!(rotate(&app, &admin, "no-such-client", None).status, 404);
        let read_only = app.token_request(
            "grant_type=client_credentials&client_id=user-client&client_secret=user-secret-123&scope=read",
            &[],
        );
        let read_only = read_only.json()["access_token"].as_str().unwrap().to_owned();
        app.remember_secret(&read_only);
        assert_eq!(rotate(&app, &read_only, "user-client", None).status, 403);

        // The owner rotates their own client: their token was issued under
        // the old secret, so it stops working.
        let own = rotate(&app, &user, "user-client", None);
        assert_eq!(own.status, 200, "{}", own.body);
        let secret = own.json()["client_secret"].as_str().unwrap().to_owned();
        app.remember_secret(&secret);
        assert!(!accepted(&app, &user));
        token(&mut app, ("user-client", &secret));

        // An admin rotates a client that is not theirs.
        let by_admin = rotate(&app, &admin, "user-client", None);
        assert_eq!(by_admin.status, 200, "{}", by_admin.body);
        app.remember_secret(by_admin.json()["client_secret"].as_str().unwrap());
        assert_eq!(token_response(&app, ("user-client", &secret)).status, 401);
    }
);

both_backends!(
    fn one_revoked_token_is_refused_everywhere_and_the_clients_others_still_work(backend) {
        let db = TestDb::new(backend);
        let mut a = spawn_on(db.clone(), &[]);
        let mut b = spawn_on(db.clone(), &[]);
        let revoked = token(&mut a, DEV_CLIENT);
        let kept = token(&mut a, DEV_CLIENT);
        b.remember_secret(&revoked);
        b.remember_secret(&kept);
        assert!(accepted(&b, &revoked));

        let response = revoke(&a, DEV_CLIENT, &revoked);
        let at = Instant::now();
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.header("Cache-Control"), Some("no-store"));
        let refused = a.authed("GET", "/api/v1/clients", &revoked, None);
        assert_eq!(refused.json(), json!({"error": "invalid_token", "error_description": "the token was revoked"}));
        let took = time_until_refused(&b, &revoked, at);
        assert!(took <= REVOCATION_BOUND, "replica B accepted a revoked token for {took:?}");
        assert!(accepted(&a, &kept) && accepted(&b, &kept));

        // Another client cannot revoke it; nonsense and repeats change nothing (RFC 7009 §2.2).
        assert_eq!(revoke(&a, USER_CLIENT, &kept).status, 200);
        assert_eq!(revoke(&a, DEV_CLIENT, "not-a-token").status, 200);
        assert_eq!(revoke(&a, DEV_CLIENT, &revoked).status, 200);
        std::thread::sleep(Duration::from_millis(1200));
        assert!(accepted(&a, &kept) && accepted(&b, &kept));

        // The client must authenticate, and name a token.
        let wrong = revoke(&a, ("dev-client", "wrong-secret"), &kept);
        assert_eq!((wrong.status, wrong.json()["error"].clone()), (401, json!("invalid_client")));
        let missing = a.request(
            "POST",
            "/api/v1/oauth/revoke",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(b"client_id=dev-client&client_secret=dev-secret-123"),
        );
        assert_eq!((missing.status, missing.json()["error"].clone()), (400, json!("invalid_request")));
        let anonymous = a.request(
            "POST",
            "/api/v1/oauth/revoke",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            Some(format!("token={kept}").as_bytes()),
        );
        assert_eq!((anonymous.status, anonymous.json()["error"].clone()), (401, json!("invalid_client")));
        assert_eq!(a.get("/api/v1/oauth/revoke").status, 405);
    }
);

both_backends!(
    fn wrong_secrets_lock_one_client_id_without_running_bcrypt(backend) {
        let app = spawn_app_with(backend, &[("BCRYPT_COST", "8"), ("TOKEN_FAILURE_LIMIT", "10")]);
        let misses = |app: &TestApp| app.metric("pizza_api_credential_cache_misses_total").unwrap();

        for i in 0..10 {
            let response = token_response(&app, ("dev-client", &format!("guess-{i}")));
            assert_eq!(response.status, 401, "guess {i}: {}", response.body);
        }
        let misses_before = misses(&app);
        let mut refused = Vec::new();
        for i in 10..15 {
            let started = Instant::now();
            let response = token_response(&app, ("dev-client", &format!("guess-{i}")));
            refused.push(started.elapsed());
            assert_eq!(response.status, 429, "guess {i}: {}", response.body);
            assert_eq!(response.json()["error"], "temporarily_unavailable");
            let retry: u64 = response.header("Retry-After").unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
        // Even the right secret waits out the window (it is not known good here).
        assert_eq!(token_response(&app, DEV_CLIENT).status, 429);
        assert_eq!(misses(&app), misses_before, "a locked client ID costs no bcrypt check");
        assert_eq!(app.metric("pizza_api_client_auth_lockouts_total"), Some(6.0));
        assert_eq!(app.metric("pizza_api_client_auth_failures_total"), Some(10.0));
        // Each refusal is held back REFUSAL_DELAY (1 s) by the listener: a
        // flood on one connection gets one answer a second.
        for took in &refused {
            assert!(*took >= Duration::from_millis(950), "a 429 came after {took:?}, not 1 s");
            assert!(*took < Duration::from_secs(5), "a 429 came after {took:?}");
        }

        // Other clients are unaffected.
        assert_eq!(token_response(&app, USER_CLIENT).status, 200);
        audit_event(&app, "client.locked", |l| l["client_id"] == "dev-client");
        let deadline = Instant::now() + Duration::from_secs(5);
        while app.metric("pizza_api_client_auth_locked_clients") != Some(1.0) {
            assert!(Instant::now() < deadline, "the locked-clients gauge never showed 1");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
);

both_backends!(
    fn held_back_refusals_hold_no_worker(backend) {
        let app = spawn_app_with(backend, &[("TOKEN_FAILURE_LIMIT", "1"), ("WORKERS", "2")]);
        assert_eq!(token_response(&app, ("dev-client", "guess")).status, 401);

        // Three times as many locked requests at once as there are workers,
        // each on its own connection: all answered about 1 s later together,
        // and a read meanwhile is answered at once.
        let started = Instant::now();
        let app = &app;
        let (statuses, read) = std::thread::scope(|scope| {
            let refusals: Vec<_> = (0..6)
                .map(|i| scope.spawn(move || token_response(app, ("dev-client", &format!("guess-{i}"))).status))
                .collect();
            std::thread::sleep(Duration::from_millis(200));
            let read_started = Instant::now();
            assert_eq!(app.get("/api/v1/public/pizzas/1").status, 200);
            let read = read_started.elapsed();
            (refusals.into_iter().map(|t| t.join().unwrap()).collect::<Vec<u16>>(), read)
        });
        let all = started.elapsed();

        assert_eq!(statuses, vec![429; 6]);
        assert!(read < Duration::from_millis(500), "a read waited {read:?} behind held-back refusals");
        assert!(all >= Duration::from_millis(950) && all < Duration::from_secs(3), "6 refusals took {all:?} together");
        assert_eq!(app.metric("pizza_api_worker_restarts_total"), Some(0.0));
    }
);

both_backends!(
    fn guesses_cannot_lock_out_a_client_presenting_its_known_good_secret(backend) {
        let app = spawn_app_with(backend, &[("TOKEN_FAILURE_LIMIT", "3")]);
        assert_eq!(token_response(&app, DEV_CLIENT).status, 200);
        for i in 0..5 {
            token_response(&app, ("dev-client", &format!("guess-{i}")));
        }
        assert_eq!(token_response(&app, ("dev-client", "guess-9")).status, 429);
        let right = token_response(&app, DEV_CLIENT);
        assert_eq!(right.status, 200, "{}", right.body);
        // The failure window ends: guesses are checked again.
        let app = spawn_app_with(backend, &[("TOKEN_FAILURE_LIMIT", "2"), ("TOKEN_FAILURE_WINDOW_SECONDS", "1")]);
        for _ in 0..2 {
            assert_eq!(token_response(&app, ("dev-client", "wrong")).status, 401);
        }
        assert_eq!(token_response(&app, ("dev-client", "wrong")).status, 429);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(token_response(&app, DEV_CLIENT).status, 200);
    }
);

both_backends!(
    fn the_audit_log_records_each_credential_event_without_secrets(backend) {
        let mut app = spawn_app_with(backend, &[("LOG_LEVEL", "warn")]);
        let issued = app.token_request(
            "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123",
            &[("X-Request-Id", "req-issue-1")],
        );
        let admin = issued.json()["access_token"].as_str().unwrap().to_owned();
        app.remember_secret(&admin);
        token_response(&app, ("dev-client", "not-the-secret")).json();
        token_response(&app, ("nobody", "x")).json();
        let (id, secret) = create_client(&mut app, &admin, "audited");
        let client_token = token(&mut app, (&id, &secret));
        assert_eq!(revoke(&app, (&id, &secret), &client_token).status, 200);
        assert!(!accepted(&app, &client_token));
        let rotated = rotate(&app, &admin, &id, Some(&json!({"grace_seconds": 60})));
        app.remember_secret(rotated.json()["client_secret"].as_str().unwrap());
        assert_eq!(app.authed("DELETE", &format!("/api/v1/clients/{id}"), &admin, None).status, 204);

        let line = audit_event(&app, "token.issued", |l| l["request_id"] == "req-issue-1");
        assert_eq!(line["client_id"], "dev-client");
        assert_eq!(line["user_id"], 1);
        assert_eq!(line["remote"], "127.0.0.1");
        assert_eq!(line["jti"], claims_of(&admin)["jti"]);
        let refused = audit_event(&app, "token.refused", |l| l["client_id"] == "dev-client");
        assert_eq!(refused["error"], "invalid_client");
        audit_event(&app, "token.refused", |l| l["client_id"] == "nobody");
        let created = audit_event(&app, "client.created", |l| l["client_id"] == id.as_str());
        assert_eq!((created["caller_user_id"].clone(), created["caller_client_id"].clone()), (json!(1), json!("dev-client")));
        let revoked = audit_event(&app, "token.revoked", |l| l["client_id"] == id.as_str());
        assert_eq!((revoked["outcome"].clone(), revoked["jti"].clone()), (json!("revoked"), claims_of(&client_token)["jti"].clone()));
        audit_event(&app, "token.rejected", |l| l["client_id"] == id.as_str());
        let rotation = audit_event(&app, "client.secret_rotated", |l| l["client_id"] == id.as_str());
        assert_eq!(rotation["generation"], 1);
        assert!(rotation["previous_secret_expires_at"].is_string());
        audit_event(&app, "client.deleted", |l| l["client_id"] == id.as_str());
        for line in audit_lines(&app) {
            assert!(line["request_id"].is_string() && line["remote"].is_string(), "{line}");
        }
        // Dropping the app checks that no secret and no token was logged.
    }
);

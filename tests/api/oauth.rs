//! `POST /api/v1/oauth/token`: the client-credentials grant, both ways of
//! authenticating the client, every error row of the contract.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

fn assert_oauth_error(response: &TestResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{}", response.body);
    let body = response.json();
    assert_eq!(body["error"], code, "{}", response.body);
    assert!(body["error_description"].is_string(), "{}", response.body);
}

both_backends!(
    fn a_token_is_issued_for_form_credentials_with_the_contracts_claims(backend) {
        let app = spawn_app(backend);

        let response =
            app.token_request("grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123", &[]);

        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.header("cache-control"), Some("no-store"));
        assert_eq!(response.header("pragma"), Some("no-cache"));
        let body = response.json();
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["scope"], "read write");
        let token = body["access_token"].as_str().unwrap();
        let header = claims_of(&format!("x.{}", token.split('.').next().unwrap()));
        assert_eq!(header["alg"], "HS512");
        let claims = claims_of(token);
        assert_eq!(claims["uid"], "1");
        assert_eq!(claims["role"], "admin");
        assert_eq!(claims["aud"], "dev-client");
        assert_eq!(claims["scope"], "read write");
        let (iat, exp) = (claims["iat"].as_u64().unwrap(), claims["exp"].as_u64().unwrap());
        assert!(iat.abs_diff(now_seconds()) <= 5, "iat {iat}");
        assert_eq!(exp - iat, 3600);
        let verified = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(TEST_JWT_SECRET.as_bytes()),
            &{
                let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS512);
                v.validate_aud = false;
                v
            },
        );
        assert!(verified.is_ok(), "the token is signed with JWT_SECRET: {verified:?}");
    }
);

both_backends!(
    fn a_token_is_issued_for_http_basic_credentials(backend) {
        let app = spawn_app(backend);

        let response = app.token_request(
            "grant_type=client_credentials",
            &[("Authorization", &basic_auth("user-client", "user-secret-123"))],
        );

        assert_eq!(response.status, 200, "{}", response.body);
        let claims = claims_of(response.json()["access_token"].as_str().unwrap());
        assert_eq!(claims["uid"], "2");
        assert_eq!(claims["role"], "user");
        assert_eq!(claims["aud"], "user-client");
    }
);

both_backends!(
    fn a_secret_with_reserved_and_non_ascii_characters_works_over_basic(backend) {
        let secret = "p:a%s+s wörd/ü€";
        let mut app = spawn_app_with(backend, &[("BOOTSTRAP_CLIENT_SECRET", secret)]);
        app.remember_secret(secret);

        let response =
            app.token_request("grant_type=client_credentials", &[("Authorization", &basic_auth("admin-client", secret))]);
        let form = app.token_request(
            &format!("grant_type=client_credentials&client_id=admin-client&client_secret={}", form_encode(secret)),
            &[],
        );

        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(form.status, 200, "{}", form.body);
        assert_eq!(claims_of(response.json()["access_token"].as_str().unwrap())["role"], "admin");
    }
);

both_backends!(
    fn a_scope_parameter_narrows_the_token(backend) {
        let app = spawn_app(backend);

        let response = app.token_request(
            "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123&scope=read",
            &[],
        );

        assert_eq!(response.status, 200);
        assert_eq!(response.json()["scope"], "read");
        assert_eq!(claims_of(response.json()["access_token"].as_str().unwrap())["scope"], "read");
    }
);

both_backends!(
    fn every_error_row_of_the_contract_gets_its_status_and_code(backend) {
        let app = spawn_app(backend);
        let creds = "client_id=dev-client&client_secret=dev-secret-123";

        assert_oauth_error(&app.token_request(creds, &[]), 400, "invalid_request");
        assert_oauth_error(&app.token_request(&format!("grant_type=password&{creds}"), &[]), 400, "unsupported_grant_type");
        assert_oauth_error(&app.token_request("grant_type=client_credentials", &[]), 400, "invalid_request");
        assert_oauth_error(
            &app.token_request("grant_type=client_credentials&client_id=dev-client", &[]),
            400,
            "invalid_request",
        );
        assert_oauth_error(
            &app.token_request(
                &format!("grant_type=client_credentials&{creds}"),
                &[("Authorization", &basic_auth("dev-client", "dev-secret-123"))],
            ),
            400,
            "invalid_request",
        );
        assert_oauth_error(
            &app.token_request("grant_type=client_credentials&client_id=nobody&client_secret=dev-secret-123", &[]),
            401,
            "invalid_client",
        );
        assert_oauth_error(
            &app.token_request("grant_type=client_credentials&client_id=dev-client&client_secret=wrong", &[]),
            401,
            "invalid_client",
        );
        assert_oauth_error(
            &app.token_request(&format!("grant_type=client_credentials&{creds}&scope=read%20admin"), &[]),
            400,
            "invalid_scope",
        );
    }
);

both_backends!(
    fn a_failed_basic_authentication_carries_a_basic_challenge(backend) {
        let app = spawn_app(backend);

        let basic = app.token_request(
            "grant_type=client_credentials",
            &[("Authorization", &basic_auth("dev-client", "wrong-secret"))],
        );
        let form = app.token_request("grant_type=client_credentials&client_id=dev-client&client_secret=wrong", &[]);
        let malformed = app.token_request("grant_type=client_credentials", &[("Authorization", "Basic !!!not-base64")]);

        assert_oauth_error(&basic, 401, "invalid_client");
        assert_eq!(basic.header("www-authenticate"), Some(r#"Basic realm="pizza-api""#));
        assert_oauth_error(&form, 401, "invalid_client");
        assert_eq!(form.header("www-authenticate"), None);
        assert_oauth_error(&malformed, 401, "invalid_client");
    }
);

both_backends!(
    fn a_deleted_client_gets_no_token(backend) {
        let app = spawn_app(backend);
        app.db.execute("UPDATE oauth_clients SET deleted_at = created_at WHERE id = 'user-client'");

        let response = app.token_request(
            "grant_type=client_credentials&client_id=user-client&client_secret=user-secret-123",
            &[],
        );

        assert_oauth_error(&response, 401, "invalid_client");
    }
);

both_backends!(
    fn the_role_in_a_token_is_read_from_the_database_at_issue_time(backend) {
        let app = spawn_app(backend);
        app.db.execute("UPDATE users SET role = 'admin' WHERE email = 'user@pizza.com'");

        let token = app.user_token();

        assert_eq!(claims_of(&token)["role"], "admin");
    }
);

both_backends!(
    fn a_repeated_parameter_is_an_invalid_request(backend) {
        let app = spawn_app(backend);

        let response = app.token_request(
            "grant_type=client_credentials&client_id=dev-client&client_id=dev-client&client_secret=dev-secret-123",
            &[],
        );

        assert_oauth_error(&response, 400, "invalid_request");
    }
);

both_backends!(
    fn the_token_endpoint_takes_only_post(backend) {
        let app = spawn_app(backend);

        let response = app.get("/api/v1/oauth/token");

        assert_eq!(response.status, 405);
        assert_eq!(response.header("allow"), Some("POST"));
    }
);

both_backends!(
    fn a_real_oauth2_client_library_obtains_a_token(backend) {
        use oauth2::basic::BasicClient;
        use oauth2::{ClientId, ClientSecret, Scope, TokenResponse, TokenUrl};
        let app = spawn_app(backend);
        let client = BasicClient::new(ClientId::new("dev-client".into()))
            .set_client_secret(ClientSecret::new("dev-secret-123".into()))
            .set_token_uri(TokenUrl::new(app.url("/api/v1/oauth/token")).unwrap());
        let http = oauth2::ureq::builder().redirects(0).build();

        let token = client
            .exchange_client_credentials()
            .add_scope(Scope::new("read".into()))
            .request(&http)
            .unwrap_or_else(|e| panic!("the oauth2 crate could not get a token: {e:?}"));

        let claims = claims_of(token.access_token().secret());
        assert_eq!(claims["aud"], "dev-client");
        assert_eq!(claims["scope"], "read");
        assert_eq!(token.scopes().map(|s| s.len()), Some(1));
        let listed = app.authed("GET", "/api/v1/clients", token.access_token().secret(), None);
        assert_eq!(listed.status, 200, "the library's token is accepted: {}", listed.body);
    }
);

both_backends!(
    fn an_unknown_client_costs_about_as_much_as_a_wrong_secret(backend) {
        // Cost 8 makes each bcrypt check long enough to measure (~15-25 ms)
        // while keeping the test short.
        let app = spawn_app_with(backend, &[("BCRYPT_COST", "8")]);
        let unknown_form = "grant_type=client_credentials&client_id=no-such-client&client_secret=x";
        let wrong_form = "grant_type=client_credentials&client_id=dev-client&client_secret=x";
        let time = |form: &str| {
            let started = std::time::Instant::now();
            assert_eq!(app.token_request(form, &[]).status, 401);
            started.elapsed().as_micros() as f64
        };
        // Interleaved, so that a busy moment of the machine slows both alike.
        let (mut unknown, mut wrong): (Vec<f64>, Vec<f64>) = (0..9).map(|_| (time(unknown_form), time(wrong_form))).unzip();
        let median = |samples: &mut Vec<f64>| {
            samples.sort_by(f64::total_cmp);
            samples[samples.len() / 2]
        };
        let (unknown, wrong) = (median(&mut unknown), median(&mut wrong));

        // Without the dummy hash an unknown client would answer in well under
        // a tenth of the time: a wide band still catches that.
        let ratio = unknown / wrong;
        assert!((0.33..3.0).contains(&ratio), "unknown {unknown} µs vs wrong secret {wrong} µs");
    }
);

both_backends!(
    fn the_token_endpoint_accepts_a_json_body_too(backend) {
        let app = spawn_app(backend);

        let response = app.send_json(
            "POST",
            "/api/v1/oauth/token",
            &json!({"grant_type":"client_credentials","client_id":"dev-client","client_secret":"dev-secret-123"}),
            &[],
        );

        assert_eq!(response.status, 200, "{}", response.body);
    }
);

fn counter(app: &TestApp, name: &str) -> u64 {
    let text = app.get("/metrics").body;
    let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name} missing"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

both_backends!(
    fn a_repeated_correct_secret_skips_bcrypt_and_any_other_pays_it(backend) {
        let app = spawn_app(backend);
        let hits = || counter(&app, "pizza_api_credential_cache_hits_total");
        let misses = || counter(&app, "pizza_api_credential_cache_misses_total");
        let wrong = "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-124";

        app.admin_token();
        let (h0, m0) = (hits(), misses());
        app.admin_token();
        let (h1, m1) = (hits(), misses());
        let refused = app.token_request(wrong, &[]);
        let (h2, m2) = (hits(), misses());
        app.admin_token();
        let (h3, m3) = (hits(), misses());

        assert_eq!((h1 - h0, m1 - m0), (1, 0), "the second token came from the cache");
        assert_eq!(refused.status, 401);
        assert_eq!((h2 - h1, m2 - m1), (0, 1), "a wrong secret paid bcrypt");
        assert_eq!((h3 - h2, m3 - m2), (1, 0), "the right one is still cached");
    }
);

both_backends!(
    fn a_cached_secret_stops_working_when_the_stored_hash_changes(backend) {
        let app = spawn_app(backend);
        app.admin_token();
        // As if another replica rotated the secret: a hash of something else.
        app.db.execute(
            "UPDATE oauth_clients SET secret_hash = (SELECT secret_hash FROM oauth_clients WHERE id = 'user-client') \
             WHERE id = 'dev-client'",
        );

        let response = app.token_request(
            "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123",
            &[],
        );

        assert_eq!(response.status, 401);
    }
);

both_backends!(
    fn a_flood_of_token_requests_cannot_take_every_worker(backend) {
        // Seed quickly at cost 4, then restart at cost 10: each check of an
        // unknown client's secret now takes long enough to overlap.
        let db = TestDb::new(backend);
        drop(spawn_on(db.clone(), &[]));
        let app = spawn_on(db, &[("WORKERS", "4"), ("BCRYPT_COST", "10")]);
        let url = app.url("/api/v1/oauth/token");

        let flood: Vec<_> = (0..6)
            .map(|i| {
                let url = url.clone();
                std::thread::spawn(move || {
                    post_form(&url, &format!("grant_type=client_credentials&client_id=nobody-{i}&client_secret=x"))
                })
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let started = std::time::Instant::now();
        let livez = app.get("/livez");
        let livez_took = started.elapsed();
        let answers: Vec<TestResponse> = flood.into_iter().map(|t| t.join().unwrap()).collect();

        assert_eq!(livez.status, 200);
        assert!(livez_took < std::time::Duration::from_millis(500), "other requests are still served: {livez_took:?}");
        let refused: Vec<&TestResponse> = answers.iter().filter(|r| r.status == 503).collect();
        assert!(!refused.is_empty(), "{:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
        assert!(answers.iter().all(|r| r.status == 401 || r.status == 503));
        assert_eq!(refused[0].json()["error"], "temporarily_unavailable");
        assert_eq!(refused[0].header("retry-after"), Some("1"));
    }
);

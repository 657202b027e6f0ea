//! Bearer tokens on protected routes: what is accepted and every way a token
//! is refused, with the contract's 401 bodies and challenge.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::*;

fn claims(overrides: Value) -> Value {
    let now = now_seconds();
    let mut claims =
        json!({"uid":"1","role":"admin","aud":"dev-client","scope":"read write","iat":now,"exp":now + 600});
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn create_with(app: &TestApp, authorization: Option<&str>) -> TestResponse {
    let body = json!({"name": "Token test", "price": 1.5});
    match authorization {
        Some(value) => app.send_json("POST", "/api/v1/pizzas", &body, &[("Authorization", value)]),
        None => app.send_json("POST", "/api/v1/pizzas", &body, &[]),
    }
}

fn assert_refused(response: &TestResponse, code: &str) {
    assert_eq!(response.status, 401, "{}", response.body);
    assert_eq!(response.json()["error"], code, "{}", response.body);
    assert!(response.json()["error_description"].is_string());
    assert_eq!(response.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#));
}

both_backends!(
    fn a_valid_token_is_accepted_and_names_the_caller(backend) {
        let app = spawn_app(backend);

        let response = create_with(&app, Some(&bearer(&mint(&claims(json!({"uid":"2","role":"user"}))))));

        assert_eq!(response.status, 201, "{}", response.body);
        assert_eq!(response.json()["created_by"], 2);
    }
);

both_backends!(
    fn a_request_without_a_token_needs_authorization(backend) {
        let app = spawn_app(backend);

        assert_refused(&create_with(&app, None), "authorization_required");
    }
);

both_backends!(
    fn a_token_in_another_scheme_is_an_invalid_request(backend) {
        let app = spawn_app(backend);

        assert_refused(&create_with(&app, Some(&basic_auth("dev-client", "dev-secret-123"))), "invalid_request");
    }
);

both_backends!(
    fn malformed_and_forged_tokens_are_invalid(backend) {
        let app = spawn_app(backend);
        let none_token = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims(json!({})).to_string())
        );
        let cases = [
            ("garbage", "Bearer not-a-jwt".to_owned()),
            ("empty", "Bearer ".to_owned()),
            ("bad signature", bearer(&mint_with(&claims(json!({})), Algorithm::HS512, b"some-other-key"))),
            ("alg none", bearer(&none_token)),
            ("HS256, same key", bearer(&mint_with(&claims(json!({})), Algorithm::HS256, TEST_JWT_SECRET.as_bytes()))),
            ("iat in the future", bearer(&mint(&claims(json!({"iat": now_seconds() + 3600}))))),
            ("nbf in the future", bearer(&mint(&claims(json!({"nbf": now_seconds() + 3600}))))),
            ("missing uid", bearer(&mint(&claims(json!({"uid": null}))))),
            ("uid zero", bearer(&mint(&claims(json!({"uid": "0"}))))),
            ("role superuser", bearer(&mint(&claims(json!({"role": "superuser"}))))),
            ("missing exp", bearer(&mint(&claims(json!({"exp": null}))))),
        ];
        for (case, authorization) in cases {
            let response = create_with(&app, Some(&authorization));

            assert_eq!(response.status, 401, "{case}: {}", response.body);
            assert_refused(&response, "invalid_token");
        }
    }
);

both_backends!(
    fn an_expired_token_is_expired(backend) {
        let app = spawn_app(backend);
        let token = mint(&claims(json!({"iat": now_seconds() - 7200, "exp": now_seconds() - 3600})));

        assert_refused(&create_with(&app, Some(&bearer(&token))), "expired_token");
    }
);

both_backends!(
    fn a_token_without_the_write_scope_cannot_change_anything(backend) {
        let app = spawn_app(backend);
        let read_only = app.token_request(
            "grant_type=client_credentials&client_id=dev-client&client_secret=dev-secret-123&scope=read",
            &[],
        );
        let token = read_only.json()["access_token"].as_str().unwrap().to_owned();

        let response = create_with(&app, Some(&bearer(&token)));

        assert_eq!(response.status, 403, "{}", response.body);
        assert_eq!(response.json()["error"], "insufficient_scope");
        assert!(response.header("www-authenticate").unwrap().contains("insufficient_scope"));
    }
);

both_backends!(
    fn the_scheme_name_is_case_insensitive(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        let response = create_with(&app, Some(&format!("bearer {token}")));

        assert_eq!(response.status, 201, "{}", response.body);
    }
);

both_backends!(
    fn a_token_for_a_user_that_does_not_exist_is_refused_on_every_protected_route(backend) {
        let app = spawn_app(backend);
        let ghost = mint(&claims(json!({"uid": "987654"})));
        let auth = format!("Bearer {ghost}");
        let body = json!({"name": "Ghost", "price": 1.0});

        let answers = [
            app.send_json("POST", "/api/v1/pizzas", &body, &[("Authorization", &auth)]),
            app.send_json("PUT", "/api/v1/pizzas/1", &body, &[("Authorization", &auth)]),
            app.request("DELETE", "/api/v1/pizzas/1", &[("Authorization", &auth)], None),
            app.request("GET", "/api/v1/clients", &[("Authorization", &auth)], None),
            app.send_json("POST", "/api/v1/clients", &json!({"name": "x"}), &[("Authorization", &auth)]),
            app.request("DELETE", "/api/v1/clients/dev-client", &[("Authorization", &auth)], None),
        ];

        for answer in &answers {
            assert_refused(answer, "invalid_token");
        }
        assert_eq!(app.get("/api/v1/public/pizzas/1").status, 200, "the pizza was not touched");
    }
);

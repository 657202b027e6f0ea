//! `/api/v1/clients`: admins manage their OAuth clients; users are refused.

use serde_json::json;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    fn a_user_token_is_refused_on_every_client_route(backend) {
        let app = spawn_app(backend);
        let token = app.user_token();

        let responses = [
            app.authed("GET", "/api/v1/clients", &token, None),
            app.authed("POST", "/api/v1/clients", &token, Some(&json!({"name": "x"}))),
            app.authed("DELETE", "/api/v1/clients/dev-client", &token, None),
        ];

        for response in responses {
            assert_eq!(response.status, 403, "{}", response.body);
            assert_eq!(
                response.json(),
                json!({"error":"Insufficient permissions","required_role":"admin","user_role":"user","user_id":2})
            );
        }
    }
);

both_backends!(
    fn client_routes_need_a_token(backend) {
        let app = spawn_app(backend);

        assert_eq!(app.get("/api/v1/clients").status, 401);
        assert_eq!(app.send_json("POST", "/api/v1/clients", &json!({"name": "x"}), &[]).status, 401);
        assert_eq!(app.request("DELETE", "/api/v1/clients/dev-client", &[], None).status, 401);
    }
);

both_backends!(
    fn an_admin_creates_uses_lists_and_deletes_a_client(backend) {
        let mut app = spawn_app(backend);
        let admin = app.admin_token();

        let created = app.authed(
            "POST",
            "/api/v1/clients",
            &admin,
            Some(&json!({"name": "Terraform", "domain": "ci.example", "scopes": "read", "redirect_uri": "https://x"})),
        );
        assert_eq!(created.status, 201, "{}", created.body);
        let body = created.json();
        let id = body["client_id"].as_str().unwrap().to_owned();
        let secret = body["client_secret"].as_str().unwrap().to_owned();
        app.remember_secret(&secret);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id} is a UUID");
        assert!(secret.len() >= 22, "at least 128 bits: {secret}");
        assert_eq!(body["name"], "Terraform");
        assert_eq!(body["scopes"], "read");
        assert_eq!(body["grant_types"], "client_credentials");
        assert_eq!(body["redirect_uri"], "https://x");

        let token = app.token_for((&id, &secret));
        let claims = claims_of(&token);
        assert_eq!((claims["aud"].as_str(), claims["uid"].as_str()), (Some(id.as_str()), Some("1")));
        assert_eq!(claims["scope"], "read");

        let listed = app.authed("GET", "/api/v1/clients", &admin, None);
        assert_eq!(listed.status, 200);
        assert!(!listed.body.contains(&secret), "the secret is shown only once");
        assert!(!listed.body.contains("$2"), "no bcrypt hash is ever listed");
        let entry = listed.json().as_array().unwrap().iter().find(|c| c["client_id"] == id.as_str()).cloned().unwrap();
        assert_eq!(entry["domain"], "ci.example");
        assert_eq!(entry["user_id"], 1);
        for field in ["name", "scopes", "grant_types", "redirect_uri", "created_at", "updated_at"] {
            assert!(entry[field].is_string(), "{field}");
        }
        assert!(entry.get("client_secret").is_none() && entry.get("secret_hash").is_none());

        let deleted = app.authed("DELETE", &format!("/api/v1/clients/{id}"), &admin, None);
        assert_eq!(deleted.status, 204);
        assert_eq!(deleted.body, "");
        let again = app.authed("DELETE", &format!("/api/v1/clients/{id}"), &admin, None);
        assert_eq!(again.status, 404);
        assert_eq!(again.json(), json!({"error": "Client not found"}));

        let refused = app.token_request(
            &format!("grant_type=client_credentials&client_id={id}&client_secret={}", form_encode(&secret)),
            &[],
        );
        assert_eq!(refused.status, 401);
        assert_eq!(refused.json()["error"], "invalid_client");
        let relisted = app.authed("GET", "/api/v1/clients", &admin, None).json();
        assert!(relisted.as_array().unwrap().iter().all(|c| c["client_id"] != id.as_str()));
    }
);

both_backends!(
    fn an_admin_sees_and_deletes_only_their_own_clients(backend) {
        let app = spawn_app(backend);
        // Make the regular user an admin: they own user-client only.
        app.db.execute("UPDATE users SET role = 'admin' WHERE email = 'user@pizza.com'");
        let second_admin = app.user_token();

        let listed = app.authed("GET", "/api/v1/clients", &second_admin, None).json();
        let deleted = app.authed("DELETE", "/api/v1/clients/dev-client", &second_admin, None);

        let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec!["user-client"]);
        assert_eq!(deleted.status, 404);
    }
);

both_backends!(
    fn a_client_body_is_validated(backend) {
        let app = spawn_app(backend);
        let admin = app.admin_token();

        let no_name = app.authed("POST", "/api/v1/clients", &admin, Some(&json!({"domain": "x"})));
        let bad_grant = app.authed("POST", "/api/v1/clients", &admin, Some(&json!({"name": "x", "grant_types": "password"})));
        let not_json = app.request(
            "POST",
            "/api/v1/clients",
            &[("Authorization", &bearer(&admin)), ("Content-Type", "application/json")],
            Some(b"{nope"),
        );

        assert_eq!(no_name.status, 400);
        assert_eq!(no_name.json()["field"], "name");
        assert_eq!(bad_grant.status, 400);
        assert_eq!(bad_grant.json()["field"], "grant_types");
        assert_eq!(not_json.status, 400);
        assert_eq!(not_json.json()["error"], "Invalid request body");
    }
);

both_backends!(
    fn a_new_client_secret_is_hashed_at_the_configured_cost(backend) {
        let app = spawn_app_with(backend, &[("BCRYPT_COST", "10")]);
        let admin = app.admin_token();

        let created = app.authed("POST", "/api/v1/clients", &admin, Some(&json!({"name": "cost"}))).json();
        let id = created["client_id"].as_str().unwrap();

        let hash = app.db.query_column(&format!("SELECT secret_hash FROM oauth_clients WHERE id = '{id}'"));
        let hash = hash[0].as_deref().unwrap();
        assert!(hash.starts_with("$2b$10$"), "{hash}");
        assert!(!hash.contains(created["client_secret"].as_str().unwrap()));
    }
);

both_backends!(
    fn null_scopes_or_grant_types_are_a_400_naming_the_field_and_null_text_is_absent(backend) {
        let app = spawn_app(backend);
        let token = app.admin_token();

        for field in ["scopes", "grant_types"] {
            let response = app.authed("POST", "/api/v1/clients", &token, Some(&json!({"name": "n", field: null})));

            assert_eq!(response.status, 400, "{field}: {}", response.body);
            assert_eq!(response.json()["field"], field, "{}", response.body);
        }
        let response = app.authed(
            "POST",
            "/api/v1/clients",
            &token,
            Some(&json!({"name": "n", "domain": null, "redirect_uri": null})),
        );
        assert_eq!(response.status, 201, "{}", response.body);
        assert_eq!((response.json()["grant_types"].as_str(), response.json()["redirect_uri"].as_str()), (Some("client_credentials"), Some("")));
    }
);

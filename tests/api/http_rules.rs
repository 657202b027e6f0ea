//! The contract's general HTTP rules: JSON errors, 404, 405 with `Allow`,
//! 413 over 1 MiB, `Content-Length` on every body.

use crate::both_backends;

both_backends!(
    fn an_unknown_path_is_a_json_404(backend) {
        let app = spawn_app(backend);

        for path in ["/nope", "/api/v1", "/health/", "//health", "/api/v1/unknown/thing"] {
            let response = app.get(path);

            assert_eq!(response.status, 404, "{path}");
            assert_eq!(response.header("content-type"), Some("application/json; charset=utf-8"));
            assert_eq!(response.json(), serde_json::json!({ "error": "Not found" }), "{path}");
        }
    }
);

both_backends!(
    fn a_wrong_method_is_a_405_with_allow(backend) {
        let app = spawn_app(backend);

        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let response = app.request(method, "/health", &[], Some(b"{}"));

            assert_eq!(response.status, 405, "{method}");
            assert_eq!(response.header("allow"), Some("GET, HEAD"));
            assert!(response.json()["error"].is_string());
        }
    }
);

both_backends!(
    fn head_answers_like_get_without_a_body(backend) {
        let app = spawn_app(backend);

        let response = app.request("HEAD", "/livez", &[], None);

        assert_eq!(response.status, 200);
        assert_eq!(response.body, "");
    }
);

both_backends!(
    fn a_body_over_one_mebibyte_is_a_413(backend) {
        let app = spawn_app(backend);
        let big = vec![b'x'; 2 * 1024 * 1024];

        let response = app.request("POST", "/api/v1/pizzas", &[("Content-Type", "application/json")], Some(&big));

        assert_eq!(response.status, 413);
        assert!(response.json()["error"].is_string());
        assert_eq!(app.get("/livez").status, 200, "the server keeps serving");
    }
);

both_backends!(
    fn every_response_carries_content_length_and_is_never_chunked(backend) {
        let app = spawn_app(backend);

        for (method, path) in [("GET", "/health"), ("GET", "/livez"), ("GET", "/nope"), ("DELETE", "/health")] {
            let raw = app.raw(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
            let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
            let head = head.to_ascii_lowercase();

            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap_or_else(|| panic!("{method} {path}: no Content-Length in\n{head}"));
            assert_eq!(length.trim().parse::<usize>().unwrap(), body.len(), "{method} {path}");
            assert!(!head.contains("transfer-encoding"), "{method} {path}: {head}");
        }
    }
);

both_backends!(
    fn a_query_string_does_not_change_the_route(backend) {
        let app = spawn_app(backend);

        assert_eq!(app.get("/livez?x=1").status, 200);
    }
);

both_backends!(
    fn an_unread_chunked_body_does_not_spoil_the_next_request_on_the_connection(backend) {
        let app = spawn_app(backend);

        let raw = app.raw(
            b"POST /api/v1/public/pizzas/1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\nGET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );

        assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
        assert!(raw.contains(r#"{"status":"alive"}"#), "the second request is answered: {raw}");
    }
);

both_backends!(
    fn text_with_a_nul_character_is_refused_the_same_way_on_both_databases(backend) {
        let app = spawn_app(backend);
        let admin = crate::helpers::bearer(&app.admin_token());
        let json = |method: &str, path: &str, body: &str| {
            app.request(method, path, &[("Authorization", &admin), ("Content-Type", "application/json")], Some(body.as_bytes()))
        };

        let bodies = [
            json("POST", "/api/v1/pizzas", r#"{"name":"a\u0000b","price":1}"#),
            json("POST", "/api/v1/pizzas", r#"{"name":"a","description":"x\u0000","price":1}"#),
            json("POST", "/api/v1/pizzas", r#"{"name":"a","ingredients":["x\u0000"],"price":1}"#),
            json("PUT", "/api/v1/pizzas/1", r#"{"name":"a\u0000b","price":1}"#),
            json("POST", "/api/v1/clients", r#"{"name":"a\u0000b"}"#),
        ];
        let filter = app.get("/api/v1/public/pizzas?name=a%00b");
        let delete = app.request("DELETE", "/api/v1/clients/a%00b", &[("Authorization", &admin)], None);
        let form = app.token_request("grant_type=client_credentials&client_id=a%00b&client_secret=x", &[]);
        let basic = app.token_request(
            "grant_type=client_credentials",
            &[("Authorization", &crate::helpers::basic_auth("a\u{0}b", "x"))],
        );

        for response in &bodies {
            assert_eq!(response.status, 400, "{}", response.body);
            assert_eq!(response.json()["error"], "Invalid request body");
            assert!(response.json()["details"].as_str().unwrap().contains("NUL"));
        }
        assert_eq!((filter.status, filter.json()["field"].as_str()), (400, Some("name")));
        assert_eq!(delete.status, 404);
        assert_eq!((form.status, form.json()["error"].as_str()), (400, Some("invalid_request")));
        assert_eq!((basic.status, basic.json()["error"].as_str()), (401, Some("invalid_client")));
        assert!(!app.log().contains("ERROR"), "no internal error: {}", app.log());
    }
);

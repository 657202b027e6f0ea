//! `GET /docs`: the browsable API page, its files, its policy, and the old
//! address. (`scripts/browser-check.sh` drives the page in a real browser.)

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    fn the_api_page_and_its_files_are_served_with_a_content_security_policy(backend) {
        let app = spawn_app(backend);

        for (path, media_type, needle) in [
            ("/docs", "text/html", "swagger-ui-bundle.js"),
            ("/docs/init.js", "text/javascript", "/openapi.json"),
            ("/docs/swagger-ui-bundle.js", "text/javascript", "SwaggerUIBundle"),
            ("/docs/swagger-ui.css", "text/css", ".swagger-ui"),
        ] {
            let response = app.get(path);

            assert_eq!(response.status, 200, "{path}");
            assert!(response.header("Content-Type").unwrap_or_default().starts_with(media_type), "{path}");
            let csp = response.header("Content-Security-Policy").unwrap_or_default();
            assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-eval"), "{path}: {csp}");
            assert!(response.body.contains(needle), "{path}");
        }
        assert!(!app.get("/docs").body.contains("<script>"), "no inline script");
    }
);

both_backends!(
    fn the_original_page_address_redirects_and_unknown_files_are_404(backend) {
        let app = spawn_app(backend);

        // On the wire: the test client would follow the redirect.
        let raw = app.raw(b"GET /swagger/index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(raw.starts_with("HTTP/1.1 301"), "{raw}");
        assert!(raw.lines().any(|l| l.eq_ignore_ascii_case("location: /docs")), "{raw}");
        assert_eq!(app.get("/docs/nothing.js").status, 404);
        assert_eq!(app.request("POST", "/docs", &[], Some(b"")).header("Allow"), Some("GET, HEAD"));
    }
);

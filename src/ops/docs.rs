//! `GET /docs`: a browsable page of the API (Swagger UI on `/openapi.json`),
//! served from files embedded in the binary (`src/ops/swagger/`, the pinned
//! `swagger-ui-dist` release), so it needs no CDN; `/swagger/index.html`,
//! the original Go implementation's address of the page, redirects here.

use crate::rest::{ApiError, Response};

/// What the page may load and run: its own scripts and styles only (Swagger
/// UI sets inline styles, never inline scripts), requests to this service,
/// no frames, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The page's files: name under `/docs/`, media type, bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    ("", "text/html; charset=utf-8", include_bytes!("swagger/index.html")),
    ("init.js", "text/javascript; charset=utf-8", include_bytes!("swagger/init.js")),
    ("swagger-ui-bundle.js", "text/javascript; charset=utf-8", include_bytes!("swagger/swagger-ui-bundle.js")),
    ("swagger-ui.css", "text/css; charset=utf-8", include_bytes!("swagger/swagger-ui.css")),
];

/// `GET /docs` (`file` empty) and `GET /docs/{file}`; an unknown file is a 404.
pub fn page(file: &str) -> Result<Response, ApiError> {
    let (_, media_type, bytes) =
        FILES.iter().find(|(name, _, _)| *name == file).ok_or(ApiError::NotFound("Not found"))?;
    Ok(Response::text(200, media_type, *bytes)
        .with_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        .with_header("X-Content-Type-Options", "nosniff")
        .with_header("Cache-Control", "no-cache"))
}

/// `GET /swagger/index.html`: permanently moved to `/docs`.
pub fn redirect() -> Response {
    Response::json(301, &serde_json::json!({ "error": "Moved Permanently", "location": "/docs" }))
        .with_header("Location", "/docs")
}

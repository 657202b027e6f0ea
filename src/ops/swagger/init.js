// Starts Swagger UI on the service's own document. A file of its own, not an
// inline script, so the page's Content-Security-Policy can forbid inline code.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No request to validator.swagger.io: the page talks to this service only.
    validatorUrl: null,
  });
  // The Authorize dialog's client-credentials flow (the document's only
  // OAuth2 flow) with both scopes ticked: a visitor enters a client's id and
  // secret, and the page gets its token from /api/v1/oauth/token.
  window.ui.initOAuth({ scopes: ["read", "write"] });
});

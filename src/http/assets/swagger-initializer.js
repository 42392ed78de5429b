// Starts Swagger UI on this service's own OpenAPI document. The URL is
// relative to the page, so it also resolves under an API Gateway stage
// prefix; the online validator is off so nothing leaves this host.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    validatorUrl: null,
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
};

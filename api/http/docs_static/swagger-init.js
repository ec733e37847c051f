// Starts Swagger UI on /docs from the app's own files: no CDN, no inline script (the page's
// Content-Security-Policy allows only scripts from this origin).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: document.body.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});

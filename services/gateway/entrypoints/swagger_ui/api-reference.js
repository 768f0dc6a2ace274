// Starts Swagger UI on the gateway's OpenAPI document. The gateway's own file (not part
// of swagger-ui-dist): the page may run no inline script (Content-Security-Policy
// script-src 'self'), so what Litestar's page does inline happens here.
(function () {
  "use strict";
  var script = document.currentScript;
  window.ui = SwaggerUIBundle({
    url: script.getAttribute("data-openapi-url"),
    dom_id: "#swagger-container",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // The default would send the document's URL to validator.swagger.io.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();

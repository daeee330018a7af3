//! The OpenAPI document, generated from the handlers' annotations and the
//! types they take and answer, so it cannot drift from what is served.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::admin::{commands, investigate};
use crate::{authzen, check, probes};

/// The service's API.
#[derive(OpenApi)]
#[openapi(
    info(title = "tokenledger", description = "tokenledger's decisions, commands and investigations over HTTP, and the OpenID AuthZEN Authorization API 1.0. Every endpoint but /healthz and /readyz needs `Authorization: Bearer` with the check key (questions) or the admin key (everything). Errors are Front's envelope."),
    paths(
        probes::healthz, probes::readyz, probes::metrics,
        check::check,
        authzen::configuration, authzen::evaluation, authzen::evaluations,
        commands::create_company, commands::add_teammate, commands::change_role,
        commands::deactivate_teammate, commands::set_private_access,
        commands::set_private_access_for_all, commands::create_workspace,
        commands::create_token, commands::reveal_token, commands::delete_token,
        investigate::token_list, investigate::token_show, investigate::history,
        investigate::timeline, investigate::timeline_html, investigate::who_can,
        investigate::verify, investigate::export,
        document,
    ),
    modifiers(&ServiceKey),
)]
pub struct ApiDoc;

struct ServiceKey;

impl Modify for ServiceKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "service_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document (3.1).
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "probes",
    security(("service_key" = [])),
    responses((status = 200, description = "The OpenAPI document", body = Object),
        (status = 401, body = crate::error::ErrorEnvelope)))]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

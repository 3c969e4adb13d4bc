//! Who may see the dashboard: an admin token from the header, the query
//! (once; then the cookie), or the dashboard's own `herald_admin` cookie,
//! found by the same rule as the API's tokens (`herald_core::find_token`).
//!
//! The cookie is scoped to `/admin` and is not the public API's
//! `herald_token`: the public API never accepts it, so an admin token kept
//! by an operator's browser cannot be spent on the API by another page.

use axum::{
    Form,
    extract::{FromRequestParts, OriginalUri, State},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{Html, IntoResponse, Redirect, Response},
};
use herald_core::{FoundToken, Grants, MalformedAuthorization, TokenSource, now_ms};
use serde::Deserialize;

use crate::{Admin, pages};

/// The cookie that keeps the token, sent to `/admin` only.
pub(crate) const COOKIE: &str = "herald_admin";

/// The longest a sign-in is kept, when the token lives longer.
const COOKIE_MAX_AGE_SECS: u64 = 86_400;

/// An operator with the admin grant.
pub(crate) struct Operator(pub(crate) Grants);

/// Why the dashboard was refused: a login page (401), a "not an admin"
/// page (403), or a redirect that moves a query token into the cookie.
pub(crate) enum Refused {
    Login(String),
    NotAdmin,
    Redirect(Response),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Self::Login(why) => (StatusCode::UNAUTHORIZED, Html(pages::login_page(&why))).into_response(),
            Self::NotAdmin => (
                StatusCode::FORBIDDEN,
                Html(pages::login_page(
                    "this token has no admin grant; mint one with `herald token --sub you --admin`",
                )),
            )
                .into_response(),
            Self::Redirect(response) => response,
        }
    }
}

/// The token by herald-core's one rule (the API's), with the dashboard's
/// cookie.
fn find_token(parts: &Parts) -> Result<Option<FoundToken>, MalformedAuthorization> {
    // A proxy in front of the dashboard may sign operators in with the same
    // header (Basic): only a Bearer header is the dashboard's; with another
    // scheme the query and the cookie still count.
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default())
        .filter(|v| v.get(..7).is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer ")));
    let cookies = parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    herald_core::find_token(authorization, parts.uri.query(), cookies, COOKIE)
}

/// `Set-Cookie` keeping `token` for the dashboard, until the token expires.
pub(crate) fn set_cookie(token: &str, grants: &Grants) -> HeaderValue {
    let left = grants.expires_at.map_or(COOKIE_MAX_AGE_SECS, |exp| exp.saturating_sub(now_ms() / 1000));
    let max_age = left.min(COOKIE_MAX_AGE_SECS);
    let value = format!("{COOKIE}={token}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(CLEARED))
}

/// `Set-Cookie` forgetting the sign-in.
const CLEARED: &str = "herald_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0";

impl FromRequestParts<Admin> for Operator {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, admin: &Admin) -> Result<Self, Self::Rejection> {
        let found = find_token(parts).map_err(|malformed| Refused::Login(malformed.to_string()))?;
        let Some(FoundToken { token, source }) = found else {
            return Err(Refused::Login("paste an admin token to sign in".into()));
        };
        let grants = admin.source.authorize(&token).map_err(Refused::Login)?;
        if !grants.admin {
            return Err(Refused::NotAdmin);
        }
        if source == TokenSource::Query && parts.method == axum::http::Method::GET {
            // Keep the token in the cookie and drop it from the address bar.
            let path = parts
                .extensions
                .get::<OriginalUri>()
                .map_or_else(|| parts.uri.path().to_owned(), |u| u.path().to_owned());
            let mut redirect = Redirect::to(&path).into_response();
            redirect.headers_mut().insert(header::SET_COOKIE, set_cookie(&token, &grants));
            return Err(Refused::Redirect(redirect));
        }
        Ok(Self(grants))
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

/// `POST /admin/login`: checks the pasted token and keeps it in the cookie.
pub(crate) async fn login(State(admin): State<Admin>, Form(form): Form<LoginForm>) -> Response {
    let token = form.token.trim();
    match admin.source.authorize(token) {
        Ok(grants) if grants.admin => {
            tracing::info!(subject = grants.subject.as_deref().unwrap_or("-"), "dashboard sign-in");
            let mut redirect = Redirect::to("/admin").into_response();
            redirect.headers_mut().insert(header::SET_COOKIE, set_cookie(token, &grants));
            redirect
        }
        Ok(_) => Refused::NotAdmin.into_response(),
        Err(why) => Refused::Login(why).into_response(),
    }
}

/// `GET /admin/logout`: forgets the cookie.
pub(crate) async fn logout() -> Response {
    let mut redirect = Redirect::to("/admin").into_response();
    redirect.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static(CLEARED));
    // Earlier versions kept the dashboard's token in the API's cookie, for
    // the whole site: forget it too.
    redirect.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static("herald_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    redirect
}

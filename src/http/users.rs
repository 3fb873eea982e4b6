//! `/users/*`: the caller's own profile.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    error::{AppError, AppResult, Problem},
    http::{auth::UserResponse, extract::AuthUser},
    repo,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_profile))
}

/// The caller's profile.
#[utoipa::path(get, path = "/users/profile", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 401, body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_profile(
    State(state): State<AppState>,
    user: AuthUser,
) -> AppResult<Json<UserResponse>> {
    let row = repo::users::find_by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| AppError::unauthorized("unauthorized", "The account no longer exists."))?;
    Ok(Json(row.into()))
}

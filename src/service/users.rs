//! The caller's own account: reading and renaming the profile, and deletion.

use uuid::Uuid;

use crate::{
    error::{AppError, AppResult},
    repo,
    state::AppState,
};

pub async fn profile(state: &AppState, user_id: Uuid) -> AppResult<repo::users::UserRow> {
    repo::users::find_by_id(&state.db, user_id)
        .await?
        .ok_or_else(AppError::account_gone)
}

/// Changes the names given (trimmed), returns the profile.
pub async fn rename(
    state: &AppState,
    user_id: Uuid,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> AppResult<repo::users::UserRow> {
    repo::users::update_names(
        &state.db,
        user_id,
        first_name.map(str::trim),
        last_name.map(str::trim),
    )
    .await?;
    profile(state, user_id).await
}

/// Deletes the account after checking the password. Refused while the user organizes an
/// event that is neither over nor cancelled (its buyers need an organizer). Personal data is
/// erased; orders and tickets stay for accounting; every token stops working.
pub async fn delete_account(
    state: &AppState,
    user_id: Uuid,
    password_attempt: String,
) -> AppResult<()> {
    let user = repo::users::find_by_id(&state.db, user_id)
        .await?
        .ok_or_else(AppError::account_gone)?;
    crate::service::auth::check_user_password(state, &user, password_attempt).await?;
    let mut tx = state.db.begin().await?;
    if let Some(organizer_id) = repo::organizers::id_for_user(&mut *tx, user_id).await?
        && repo::events::organizer_has_active_events(&mut *tx, organizer_id, state.clock.now())
            .await?
    {
        return Err(AppError::conflict(
            "organizer_has_active_events",
            "Cancel your upcoming events (or let them end) before deleting the account.",
        ));
    }
    crate::service::auth::forget_user(state, user_id).await;
    // The record of mail sent to them goes too (mail still waiting to go is kept).
    repo::mail::erase_for(&mut *tx, &user.email).await?;
    repo::users::erase(&mut tx, user_id).await?;
    tx.commit().await?;
    crate::service::auth::forget_user_everywhere(state, user_id).await;
    tracing::info!(%user_id, "account deleted");
    Ok(())
}

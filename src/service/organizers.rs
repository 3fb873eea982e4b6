//! Organizer profiles: the bank account is resolved with Paystack (the account name is
//! Paystack's, never the client's) and a transfer recipient is created for payouts. A changed
//! bank or account is resolved again and gets a new recipient.

use uuid::Uuid;

use crate::{
    clients::paystack::{GatewayError, NewRecipient},
    error::{AppError, AppResult, FieldError, OnConstraint},
    repo::{self, organizers::OrganizerRow},
    service::{auth, banks, notifications, rate_limit},
    state::AppState,
};

pub struct OrganizerInput {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub bank_code: Option<String>,
    pub account_number: Option<String>,
    pub description: Option<Option<String>>,
    pub website: Option<Option<String>>,
    /// Needed (with `code` when 2FA is on) to change the bank account.
    pub password: Option<String>,
    pub code: Option<String>,
}

fn gateway_error(e: GatewayError, field: &str) -> AppError {
    match e {
        GatewayError::Rejected { .. } => AppError::Validation(vec![FieldError::new(
            field,
            "could not be resolved with the bank; check the bank and account number",
        )]),
        GatewayError::Unavailable(cause) => AppError::Upstream {
            provider: "Paystack",
            cause,
        },
        GatewayError::Limited { retry_after } => {
            AppError::UnavailableFor("paystack rate limit".into(), retry_after)
        }
    }
}

/// Resolves the account and creates its recipient: `(bank_name, account_name, recipient_code)`.
async fn verify_bank_account(
    state: &AppState,
    user_id: Uuid,
    name: &str,
    bank_code: &str,
    account_number: &str,
) -> AppResult<(String, String, String)> {
    // Each resolution answers the holder's name for any account number: without a limit the
    // organizer routes would be a lookup service for bank account names.
    rate_limit::hit(
        &state.redis,
        &format!("bank-lookup:{user_id}"),
        state.config.limits.bank_lookups_per_user_per_day,
        std::time::Duration::from_secs(86_400),
    )
    .await?;
    let bank = banks::find(state, bank_code).await?.ok_or_else(|| {
        AppError::validation(
            "bank_code",
            "is not a bank Paystack knows; see GET /payments/banks",
        )
    })?;
    let resolved = state
        .gateway
        .resolve_account(account_number, bank_code)
        .await
        .map_err(|e| gateway_error(e, "account_number"))?;
    let recipient = state
        .gateway
        .create_recipient(NewRecipient {
            name: &resolved.account_name,
            account_number,
            bank_code,
        })
        .await
        .map_err(|e| gateway_error(e, "account_number"))?;
    tracing::info!(organizer = name, bank = %bank.name, "bank account resolved");
    Ok((bank.name, resolved.account_name, recipient))
}

/// The caller's organizer profile (404 when there is none).
pub async fn of_user(state: &AppState, user_id: Uuid) -> AppResult<OrganizerRow> {
    repo::organizers::find_by_user(&state.db, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("Organizer profile"))
}

/// The caller's organizer id, if the caller is an organizer.
pub async fn id_of_user(state: &AppState, user_id: Uuid) -> AppResult<Option<Uuid>> {
    Ok(repo::organizers::id_for_user(&state.db, user_id).await?)
}

pub async fn create(
    state: &AppState,
    user_id: Uuid,
    input: OrganizerInput,
) -> AppResult<OrganizerRow> {
    if repo::organizers::id_for_user(&state.db, user_id)
        .await?
        .is_some()
    {
        return Err(AppError::organizer_exists());
    }
    let required = |v: Option<String>, field: &str| {
        v.ok_or_else(|| AppError::validation(field, "is required"))
    };
    let name = required(input.name, "name")?;
    let bank_code = required(input.bank_code, "bank_code")?;
    let account_number = required(input.account_number, "account_number")?;
    let email = required(input.email, "email")?;
    let phone = required(input.phone, "phone")?;
    let (bank_name, account_name, recipient_code) =
        verify_bank_account(state, user_id, &name, &bank_code, &account_number).await?;
    let mut row = OrganizerRow {
        id: Uuid::now_v7(),
        user_id,
        name,
        email,
        phone,
        bank_code,
        bank_name,
        account_number,
        account_name,
        recipient_code,
        description: input.description.flatten(),
        website: input.website.flatten(),
        created_at: time::OffsetDateTime::now_utc(),
    };
    row.created_at = repo::organizers::insert(&state.db, &row)
        .await
        .on_constraint("organizers_user_id_key", AppError::organizer_exists)?;
    Ok(row)
}

pub async fn update(
    state: &AppState,
    user_id: Uuid,
    input: OrganizerInput,
) -> AppResult<OrganizerRow> {
    let mut row = repo::organizers::find_by_user(&state.db, user_id)
        .await?
        .ok_or_else(|| AppError::not_found("Organizer profile"))?;
    let bank_changed = input
        .bank_code
        .as_ref()
        .is_some_and(|c| *c != row.bank_code)
        || input
            .account_number
            .as_ref()
            .is_some_and(|a| *a != row.account_number);
    // Checked before anything else happens: a stolen token cannot redirect payouts.
    let login = if bank_changed {
        Some(
            auth::confirm_identity(
                state,
                user_id,
                input.password.clone(),
                input.code.as_deref(),
            )
            .await?,
        )
    } else {
        None
    };
    let email_before = row.email.clone();
    if let Some(v) = input.name {
        row.name = v;
    }
    if let Some(v) = input.email {
        row.email = v;
    }
    if let Some(v) = input.phone {
        row.phone = v;
    }
    if let Some(v) = input.description {
        row.description = v;
    }
    if let Some(v) = input.website {
        row.website = v;
    }
    if bank_changed {
        let bank_code = input.bank_code.unwrap_or_else(|| row.bank_code.clone());
        let account_number = input
            .account_number
            .unwrap_or_else(|| row.account_number.clone());
        let (bank_name, account_name, recipient_code) =
            verify_bank_account(state, user_id, &row.name, &bank_code, &account_number).await?;
        row.bank_code = bank_code;
        row.account_number = account_number;
        row.bank_name = bank_name;
        row.account_name = account_name;
        row.recipient_code = recipient_code;
    }
    repo::organizers::update(&state.db, &row, bank_changed.then(|| state.clock.now())).await?;
    if let Some(login) = login {
        notify_account_change(state, &row, &login.email, &email_before).await;
        tracing::warn!(organizer_id = %row.id, "payout bank account changed; payouts wait for the cooldown");
    }
    Ok(row)
}

/// Mails the change to the login email and to the organizer email as it was before (the same
/// PATCH may change that one too).
async fn notify_account_change(
    state: &AppState,
    row: &OrganizerRow,
    login_email: &str,
    email_before: &str,
) {
    let changed_at = time::OffsetDateTime::now_utc().unix_timestamp();
    let last4 = &row.account_number[row.account_number.len().saturating_sub(4)..];
    let mut to = vec![login_email.to_owned()];
    if !email_before.eq_ignore_ascii_case(login_email) {
        to.push(email_before.to_owned());
    }
    for address in to {
        let mail = notifications::payout_account_changed(
            row.id,
            changed_at,
            &address,
            &row.name,
            &row.bank_name,
            last4,
            state.config.payout_account_cooldown.as_secs() / 3600,
        );
        if let Err(e) = crate::service::mail::enqueue(state, &mail).await {
            tracing::error!(error = %e, "account change notice not queued");
        }
    }
}

//! Organizer profiles.

use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

/// `Debug` is written by hand below: the account number and the recipient code never
/// reach a log.
#[derive(Clone)]
pub struct OrganizerRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub phone: String,
    pub bank_code: String,
    pub bank_name: String,
    pub account_number: String,
    pub account_name: String,
    pub recipient_code: String,
    pub description: Option<String>,
    pub website: Option<String>,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for OrganizerRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let last4 = &self.account_number[self.account_number.len().saturating_sub(4)..];
        f.debug_struct("OrganizerRow")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("bank_name", &self.bank_name)
            .field("account_number_last4", &last4)
            .finish_non_exhaustive()
    }
}

pub async fn find_by_user(
    db: impl PgExecutor<'_>,
    user_id: Uuid,
) -> sqlx::Result<Option<OrganizerRow>> {
    sqlx::query_as!(
        OrganizerRow,
        r#"SELECT id, user_id, name, email, phone, bank_code, bank_name, account_number,
                  account_name, recipient_code, description, website, created_at
           FROM organizers WHERE user_id = $1"#,
        user_id
    )
    .fetch_optional(db)
    .await
}

/// The organizer id of a user, if any: what organizer-only routes check.
pub async fn id_for_user(db: impl PgExecutor<'_>, user_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT id FROM organizers WHERE user_id = $1", user_id)
        .fetch_optional(db)
        .await
}

pub async fn insert(db: impl PgExecutor<'_>, o: &OrganizerRow) -> sqlx::Result<OffsetDateTime> {
    sqlx::query_scalar!(
        r#"INSERT INTO organizers (id, user_id, name, email, phone, bank_code, bank_name,
                                   account_number, account_name, recipient_code, description, website)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           RETURNING created_at"#,
        o.id,
        o.user_id,
        o.name,
        o.email,
        o.phone,
        o.bank_code,
        o.bank_name,
        o.account_number,
        o.account_name,
        o.recipient_code,
        o.description,
        o.website
    )
    .fetch_one(db)
    .await
}

/// Saves the profile; `bank_changed_at` (the clock's now) starts the payout cooldown of a
/// new account.
pub async fn update(
    db: impl PgExecutor<'_>,
    o: &OrganizerRow,
    bank_changed_at: Option<OffsetDateTime>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE organizers SET name = $2, email = $3, phone = $4, bank_code = $5, bank_name = $6,
               account_number = $7, account_name = $8, recipient_code = $9, description = $10,
               website = $11, updated_at = now(),
               bank_changed_at = COALESCE($12, bank_changed_at)
           WHERE id = $1"#,
        o.id,
        o.name,
        o.email,
        o.phone,
        o.bank_code,
        o.bank_name,
        o.account_number,
        o.account_name,
        o.recipient_code,
        o.description,
        o.website,
        bank_changed_at
    )
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_leaves_out_the_account_and_recipient() {
        let row = OrganizerRow {
            id: Uuid::nil(),
            user_id: Uuid::nil(),
            name: "Org".into(),
            email: "o@example.com".into(),
            phone: "0800".into(),
            bank_code: "058".into(),
            bank_name: "GTBank".into(),
            account_number: "0123456789".into(),
            account_name: "ORG LTD".into(),
            recipient_code: "RCP_secret".into(),
            description: None,
            website: None,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        let shown = format!("{row:?}");
        assert!(
            !shown.contains("0123456789") && !shown.contains("RCP_secret"),
            "{shown}"
        );
        assert!(shown.contains("6789"));
    }
}

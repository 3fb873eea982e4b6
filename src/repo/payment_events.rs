//! Webhook deliveries, recorded once each by their identity (external-apis.md §1.4), and
//! marked processed once what they asked for is done — so the sweeper can re-drive a
//! `charge.success` whose job was lost.

use sqlx::PgExecutor;
use uuid::Uuid;

/// Records a webhook delivery once; false when its identity was seen before (a duplicate).
pub async fn record_payment_event(
    db: impl PgExecutor<'_>,
    identity: &str,
    event_type: &str,
    reference: Option<&str>,
    payload: &serde_json::Value,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query_scalar!(
        r#"INSERT INTO payment_events (id, identity, event_type, reference, payload)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (identity) DO NOTHING
           RETURNING id"#,
        Uuid::now_v7(),
        identity,
        event_type,
        reference,
        payload
    )
    .fetch_optional(db)
    .await?;
    Ok(inserted.is_some())
}

/// Marks every `charge.success` delivery of this reference processed.
pub async fn mark_charge_processed(db: impl PgExecutor<'_>, reference: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE payment_events SET processed_at = now()
           WHERE reference = $1 AND event_type = 'charge.success' AND processed_at IS NULL"#,
        reference
    )
    .execute(db)
    .await?;
    Ok(())
}

/// References of `charge.success` deliveries older than `grace_seconds` still unprocessed.
pub async fn unprocessed_charges(
    db: impl PgExecutor<'_>,
    grace_seconds: f64,
    limit: i64,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"SELECT DISTINCT reference AS "reference!" FROM (
               SELECT reference FROM payment_events
               WHERE processed_at IS NULL AND event_type = 'charge.success'
                 AND reference IS NOT NULL
                 AND received_at < now() - make_interval(secs => $1)
                 -- Paystack retries for 72 hours; past a week a delivery is for the operator.
                 AND received_at > now() - interval '7 days'
               ORDER BY received_at LIMIT $2) AS due"#,
        grace_seconds,
        limit
    )
    .fetch_all(db)
    .await
}

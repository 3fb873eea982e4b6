//! The states of orders, tickets, events, refunds and payouts, as types. Stored as TEXT (with
//! CHECK constraints in the migrations), sent as snake_case strings; a value the database
//! holds that the code does not know is a decode error, never a silent default.
//!
//! Transitions stay guarded SQL statements (`UPDATE … WHERE status = <from>`); these types
//! make the Rust side say which state it means without string literals.

/// Declares a state enum with its wire/database spelling, serde, OpenAPI schema and the
/// sqlx encoding as TEXT — one definition per state machine.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let s = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Self::parse(s).ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)).into())
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    };
}

text_enum! {
    /// An order: `pending → paid | failed | expired | cancelled`; `paid → refund_pending →
    /// refunded`; a late payment takes `expired | failed | cancelled → paid | refund_pending`.
    OrderStatus {
        /// Tickets held, awaiting payment.
        Pending => "pending",
        Paid => "paid",
        Failed => "failed",
        Expired => "expired",
        /// A hold voided because the event was cancelled.
        Cancelled => "cancelled",
        RefundPending => "refund_pending",
        Refunded => "refunded",
    }
}

impl OrderStatus {
    /// The states a late payment may still be applied to.
    pub fn is_ended_hold(self) -> bool {
        matches!(self, Self::Expired | Self::Failed | Self::Cancelled)
    }

    /// Money received and owed back (or given back).
    pub fn is_owed_back(self) -> bool {
        matches!(self, Self::RefundPending | Self::Refunded)
    }
}

text_enum! {
    TicketStatus {
        Valid => "valid",
        Used => "used",
        Void => "void",
    }
}

text_enum! {
    /// An event as clients see it. Only `scheduled` and `cancelled` are stored: `ended` is
    /// derived from `ends_at`, so nothing has to flip it on time.
    EventStatus {
        Scheduled => "scheduled",
        Cancelled => "cancelled",
        Ended => "ended",
    }
}

text_enum! {
    /// Why an order is owed back: a label on metrics, the mail's wording, the refund's note.
    RefundReason {
        EventCancelled => "event_cancelled",
        OrganizerRefund => "organizer_refund",
        /// Paid after the hold ended, and no seats (or discount allowance) were left.
        LatePaymentSoldOut => "late_payment_sold_out",
        EventEnded => "event_ended",
        AmountMismatch => "amount_mismatch",
        /// Owed back before reasons were recorded.
        Unknown => "unknown",
    }
}

text_enum! {
    /// A refund at Paystack, as our driver tracks it (migration 0006 says what each means).
    RefundState {
        Pending => "pending",
        Sending => "sending",
        Processing => "processing",
        Failed => "failed",
        NeedsAttention => "needs_attention",
        Processed => "processed",
    }
}

text_enum! {
    /// A payout as the organizer sees it: `failed` and `reversed` are retried.
    PayoutStatus {
        Pending => "pending",
        Success => "success",
        Failed => "failed",
        Reversed => "reversed",
    }
}

text_enum! {
    /// The current attempt of a payout: `new` (not sent), `sent` (outcome unknown until
    /// looked up), `queued` (Paystack has it).
    TransferState {
        New => "new",
        Sent => "sent",
        Queued => "queued",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_match_serde() {
        for s in [
            OrderStatus::Pending,
            OrderStatus::RefundPending,
            OrderStatus::Refunded,
        ] {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(RefundState::NeedsAttention.as_str(), "needs_attention");
        assert_eq!(
            serde_json::to_value(RefundState::NeedsAttention).unwrap(),
            "needs_attention"
        );
        assert_eq!(OrderStatus::parse("unknown"), None);
    }
}

//! Ids that must not be mixed up: an order id where an event id is expected does not
//! compile. Each is a UUID (v7) underneath, transparent to serde and to SQL. Services that
//! take several ids take these; rows keep plain UUIDs and are converted at the call.

/// Declares id newtypes over `Uuid`.
macro_rules! id_types {
    ($($(#[$doc:meta])* $name:ident),+ $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl From<uuid::Uuid> for $name {
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for uuid::Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    )+};
}

id_types! {
    /// An event.
    EventId,
    /// An order (a hold, a purchase).
    OrderId,
    /// A user (attendee or organizer's login).
    UserId,
    /// A payout to an organizer.
    PayoutId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_transparent_on_the_wire() {
        let raw = uuid::Uuid::now_v7();
        let id = OrderId::from(raw);
        assert_eq!(
            serde_json::to_value(id).unwrap(),
            serde_json::json!(raw.to_string())
        );
        assert_eq!(uuid::Uuid::from(id), raw);
        assert_eq!(id.to_string(), raw.to_string());
    }
}

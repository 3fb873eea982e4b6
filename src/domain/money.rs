//! Money as integer kobo, where amounts are computed (fees, the ledger's split of a sale).
//! Rows and wire fields stay `i64` named `*_amount`/`price`; arithmetic on money goes
//! through this type, so a count of tickets can never be added to an amount by mistake.

use std::ops::{Add, Neg, Sub};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn kobo(kobo: i64) -> Self {
        Money(kobo)
    }

    pub const fn as_kobo(self) -> i64 {
        self.0
    }

    /// `quantity` of this amount (a unit price times tickets). Saturates rather than wraps:
    /// the database's CHECKs refuse what no real order reaches.
    pub fn times(self, quantity: i32) -> Self {
        Money(self.0.saturating_mul(i64::from(quantity)))
    }

    /// `floor(self × bps / 10000)`: a share in basis points, rounded down (in the payer's
    /// favour), in i128 so that no amount can overflow.
    pub fn basis_points(self, bps: u32) -> Self {
        Money((i128::from(self.0.max(0)) * i128::from(bps) / 10_000) as i64)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, other: Money) -> Money {
        Money(self.0 + other.0)
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, other: Money) -> Money {
        Money(self.0 - other.0)
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(-self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_stays_in_kobo_and_rounds_down() {
        assert_eq!(
            Money::kobo(2_000_000).basis_points(750),
            Money::kobo(150_000)
        );
        assert_eq!(Money::kobo(1_001).basis_points(750), Money::kobo(75));
        assert_eq!(Money::kobo(500).times(3), Money::kobo(1_500));
        assert_eq!(Money::kobo(5) - Money::kobo(7), -Money::kobo(2));
        assert_eq!(Money::kobo(i64::MAX).times(2), Money::kobo(i64::MAX));
    }
}

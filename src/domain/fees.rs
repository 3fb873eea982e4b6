//! The platform fee schedule (`PLATFORM_FEE_SCHEDULE`): tiers of ticket unit price in kobo,
//! each with a rate in basis points. Limits are inclusive, and the fee per ticket is
//! `floor(unit_price × bps / 10000)` — integer arithmetic only, rounding down in the buyer's
//! and organizer's favour.

use std::{fmt, str::FromStr};

use super::money::Money;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeSchedule {
    /// `(inclusive upper limit in kobo or None for the catch-all, basis points)`, ascending.
    tiers: Vec<(Option<i64>, u32)>,
}

impl FeeSchedule {
    /// Basis points that apply to a ticket of this unit price.
    pub fn bps_for(&self, unit_price: i64) -> u32 {
        self.tiers
            .iter()
            .find(|(limit, _)| limit.is_none_or(|l| unit_price <= l))
            .map(|(_, bps)| *bps)
            .unwrap_or(0)
    }

    /// Fee for one ticket: `floor(unit_price × bps / 10000)`.
    pub fn fee_per_ticket(&self, unit_price: Money) -> Money {
        unit_price.basis_points(self.bps_for(unit_price.as_kobo()))
    }
}

impl FromStr for FeeSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tiers = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (limit, bps) = part
                .split_once(':')
                .ok_or_else(|| format!("{part:?} is not limit_kobo:bps"))?;
            let bps: u32 = bps
                .trim()
                .parse()
                .map_err(|_| format!("{bps:?} is not a whole number of basis points"))?;
            if bps > 10_000 {
                return Err(format!("{bps} bps is more than 100%"));
            }
            let limit = match limit.trim() {
                "*" => None,
                n => Some(
                    n.parse::<i64>()
                        .ok()
                        .filter(|v| *v >= 0)
                        .ok_or_else(|| format!("{n:?} is not an amount in kobo"))?,
                ),
            };
            if let Some((previous, _)) = tiers.last() {
                match (previous, limit) {
                    (None, _) => return Err("`*` must be the last tier".into()),
                    (Some(p), Some(l)) if l <= *p => {
                        return Err("limits must be ascending".into());
                    }
                    _ => {}
                }
            }
            tiers.push((limit, bps));
        }
        match tiers.last() {
            Some((None, _)) => Ok(FeeSchedule { tiers }),
            _ => Err("the last tier must be `*:bps`".into()),
        }
    }
}

impl fmt::Display for FeeSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .tiers
            .iter()
            .map(|(limit, bps)| match limit {
                Some(l) => format!("{l}:{bps}"),
                None => format!("*:{bps}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_schedule() -> FeeSchedule {
        "2000000:750,10000000:500,*:250".parse().unwrap()
    }

    #[test]
    fn limits_are_inclusive() {
        let s = default_schedule();
        assert_eq!(s.bps_for(2_000_000), 750);
        assert_eq!(s.bps_for(2_000_001), 500);
        assert_eq!(s.bps_for(10_000_000), 500);
        assert_eq!(s.bps_for(10_000_001), 250);
    }

    #[test]
    fn fee_rounds_down() {
        let s = default_schedule();
        // 7.5% of ₦20,000.00 exactly.
        assert_eq!(
            s.fee_per_ticket(Money::kobo(2_000_000)),
            Money::kobo(150_000)
        );
        // 7.5% of 1,001 kobo is 75.075 kobo → 75.
        assert_eq!(s.fee_per_ticket(Money::kobo(1_001)), Money::kobo(75));
        assert_eq!(s.fee_per_ticket(Money::ZERO), Money::ZERO);
    }

    #[test]
    fn rejects_malformed_schedules() {
        assert!("2000000:750".parse::<FeeSchedule>().is_err());
        assert!("*:250,100:10".parse::<FeeSchedule>().is_err());
        assert!("500:1,100:1,*:1".parse::<FeeSchedule>().is_err());
        assert!("abc:1,*:1".parse::<FeeSchedule>().is_err());
        assert!("*:10001".parse::<FeeSchedule>().is_err());
        assert_eq!(
            default_schedule().to_string(),
            "2000000:750,10000000:500,*:250"
        );
    }
}

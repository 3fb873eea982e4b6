//! Coordinates as the database's `earthdistance` functions can take them.

/// Degrees rounded to 1e-7 (about a centimetre on the ground), which is finer than any venue
/// or phone fix. It also turns subnormal inputs (`5e-324`) into 0: `ll_to_earth` underflows on
/// them and PostgreSQL answers an error, which reached clients as a 500 (found by
/// schemathesis).
pub fn snap_degrees(x: f64) -> f64 {
    let snapped = (x * 1e7).round() / 1e7;
    // -0.0 and 0.0 are the same place; keep the stored value plain.
    if snapped == 0.0 { 0.0 } else { snapped }
}

/// A search radius in metres: at least one, so a radius of `1e-320` km is not an underflow.
pub fn radius_metres(radius_km: f64) -> f64 {
    (radius_km * 1000.0).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnormal_and_tiny_values_become_zero_and_real_ones_keep_a_centimetre() {
        assert_eq!(snap_degrees(5e-324), 0.0);
        assert_eq!(snap_degrees(-1e-310), 0.0);
        assert_eq!(snap_degrees(6.524_379_1), 6.524_379_1);
        assert_eq!(snap_degrees(3.379_205_649_9), 3.379_205_6);
        assert_eq!(radius_metres(1e-320), 1.0);
        assert_eq!(radius_metres(25.0), 25_000.0);
    }
}

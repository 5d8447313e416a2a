//! Synthetic datasets for end-to-end tests and the load generator.

/// A CSV of `rows` rows: `row_id`, `features` noisy numeric features and a `label` of three classes
/// (`c0`..`c2`, row `i` in class `i % 3`), each class centred on every third feature; deterministic
/// for a `seed`, different across seeds.
#[must_use]
pub fn synthetic_csv(rows: usize, features: usize, seed: u64) -> Vec<u8> {
    let mut csv = String::from("row_id");
    for feature in 0..features {
        csv.push_str(&format!(",f{feature}"));
    }
    csv.push_str(",label\n");
    // xorshift64: seeded, dependency-free, good enough for test noise.
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f64 / 5_000.0 - 1.0
    };
    for row in 0..rows {
        let class = row % 3;
        csv.push_str(&row.to_string());
        for feature in 0..features {
            let center = if feature % 3 == class { 1.5 } else { 0.0 };
            csv.push_str(&format!(",{:.4}", center + noise()));
        }
        csv.push_str(&format!(",c{class}\n"));
    }
    csv.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_features_and_seeds() {
        let csv = String::from_utf8(synthetic_csv(4, 2, 0)).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "row_id,f0,f1,label");
        assert_eq!(lines.len(), 5);
        assert!(lines[4].starts_with("3,") && lines[4].ends_with(",c0"));
        assert_eq!(synthetic_csv(4, 2, 0), synthetic_csv(4, 2, 0));
        assert_ne!(synthetic_csv(4, 2, 0), synthetic_csv(4, 2, 1));
    }
}

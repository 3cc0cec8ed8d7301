//! Seeded, stratified train/valid splits.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::error::{DataError, Result};

/// Splits row indices into `(train, valid)` so that each label keeps its share in both parts.
///
/// Each class contributes `round(n_class * valid_fraction)` rows to the validation part (at least
/// one when the class has two rows or more). The same labels, fraction and seed always give the
/// same split. Both index lists come back sorted.
pub fn stratified_split(
    labels: &[u8],
    valid_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(valid_fraction > 0.0 && valid_fraction < 1.0) {
        return Err(DataError::Split {
            message: format!("data.valid_fraction must be in (0, 1), found {valid_fraction}"),
        });
    }
    let mut classes: Vec<u8> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut train = Vec::new();
    let mut valid = Vec::new();
    for class in classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        let mut n_valid = (members.len() as f64 * valid_fraction).round() as usize;
        if n_valid == 0 && members.len() >= 2 {
            n_valid = 1;
        }
        if n_valid >= members.len() {
            return Err(DataError::Split {
                message: format!(
                    "label {class} has only {} row(s), too few for a validation share of {valid_fraction}",
                    members.len()
                ),
            });
        }
        valid.extend_from_slice(&members[..n_valid]);
        train.extend_from_slice(&members[n_valid..]);
    }
    train.sort_unstable();
    valid.sort_unstable();
    Ok((train, valid))
}

/// Splits row indices into `k` folds so that each label keeps its share in every fold: each
/// class is shuffled (seeded) and dealt round-robin, continuing where the previous class left
/// off so that fold sizes differ by at most one. Each fold comes back sorted.
pub fn stratified_folds(labels: &[u8], k: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if k < 2 {
        return Err(DataError::Split { message: format!("--folds must be at least 2, found {k}") });
    }
    if labels.len() < k {
        return Err(DataError::Split {
            message: format!("{} rows cannot make {k} folds", labels.len()),
        });
    }
    let mut classes: Vec<u8> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut folds = vec![Vec::new(); k];
    let mut next = 0usize;
    for class in classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == class).collect();
        members.shuffle(&mut rng);
        for i in members {
            folds[next % k].push(i);
            next += 1;
        }
    }
    for fold in &mut folds {
        fold.sort_unstable();
    }
    Ok(folds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_partition_the_rows_and_keep_class_shares() {
        let labels: Vec<u8> = (0..103).map(|i| u8::from(i % 4 == 0)).collect(); // 26 ones
        let folds = stratified_folds(&labels, 5, 3).unwrap();
        let mut all: Vec<usize> = folds.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        for fold in &folds {
            assert!((20..=21).contains(&fold.len()), "{}", fold.len());
            let ones = fold.iter().filter(|&&i| labels[i] == 1).count();
            assert!((5..=6).contains(&ones), "{ones}");
        }
        assert_eq!(stratified_folds(&labels, 5, 3).unwrap(), folds);
        assert!(stratified_folds(&labels, 1, 3).is_err());
    }

    #[test]
    fn keeps_class_shares_and_is_seeded() {
        let labels: Vec<u8> = (0..100).map(|i| u8::from(i % 4 == 0)).collect(); // 25 ones, 75 zeros
        let (train, valid) = stratified_split(&labels, 0.2, 7).unwrap();
        assert_eq!(train.len() + valid.len(), 100);
        assert_eq!(valid.iter().filter(|&&i| labels[i] == 1).count(), 5);
        assert_eq!(valid.iter().filter(|&&i| labels[i] == 0).count(), 15);
        let mut all: Vec<usize> = train.iter().chain(&valid).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());

        assert_eq!(stratified_split(&labels, 0.2, 7).unwrap(), (train.clone(), valid.clone()));
        assert_ne!(stratified_split(&labels, 0.2, 8).unwrap().1, valid);
    }

    #[test]
    fn rejects_bad_fraction_and_tiny_classes() {
        assert!(stratified_split(&[0, 1, 0, 1], 0.0, 1).is_err());
        assert!(stratified_split(&[0, 1, 0, 1], 1.0, 1).is_err());
        let err = stratified_split(&[0, 0, 0, 1], 0.5, 1).unwrap_err().to_string();
        assert!(err.contains("label 1"), "{err}");
    }
}

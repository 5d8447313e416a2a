//! Seeded stratified K-fold assignment.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// The fold of each row: every class's rows are shuffled (seeded) and dealt round-robin over the
/// folds, each class starting where the previous one stopped, so every fold gets `⌊n_c/F⌋` or
/// `⌈n_c/F⌉` rows of class `c` and fold sizes differ by at most one. A class with fewer rows than
/// folds thus has its rows in distinct folds.
pub(crate) fn stratified_folds(
    labels: &[usize],
    k_classes: usize,
    folds: usize,
    seed: u64,
) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k_classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label].push(row);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut assignment = vec![0; labels.len()];
    let mut next = 0;
    for rows in &mut by_class {
        rows.shuffle(&mut rng);
        for &row in rows.iter() {
            assignment[row] = next;
            next = (next + 1) % folds;
        }
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_balanced_and_seeded() {
        let labels: Vec<usize> = (0..103)
            .map(|i| {
                if i < 61 {
                    0
                } else if i < 101 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let folds = stratified_folds(&labels, 3, 5, 7);
        for class in 0..3 {
            let total = labels.iter().filter(|&&l| l == class).count();
            for fold in 0..5 {
                let count = labels
                    .iter()
                    .zip(&folds)
                    .filter(|&(&l, &f)| l == class && f == fold)
                    .count();
                assert!(
                    count == total / 5 || count == total.div_ceil(5),
                    "class {class} fold {fold}: {count}"
                );
            }
        }
        let sizes: Vec<usize> = (0..5)
            .map(|f| folds.iter().filter(|&&x| x == f).count())
            .collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
        assert_eq!(folds, stratified_folds(&labels, 3, 5, 7));
        assert_ne!(folds, stratified_folds(&labels, 3, 5, 8));
    }
}

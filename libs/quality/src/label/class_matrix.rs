//! A small dense K×K matrix indexed by class, row-major.

/// A K×K matrix indexed by class, row-major: `get(r, c)`. The meaning of rows and columns is stated
/// by each function that returns one (e.g. the confident joint is `[given][true]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassMatrix<T> {
    k: usize,
    data: Vec<T>,
}

impl<T: Copy> ClassMatrix<T> {
    /// Wraps `data` (row-major, `k * k` values).
    ///
    /// # Panics
    /// If `data.len() != k * k` (a programming error inside the crate, not bad user input).
    pub(crate) fn from_vec(k: usize, data: Vec<T>) -> Self {
        assert_eq!(data.len(), k * k, "a class matrix has k * k entries");
        Self { k, data }
    }

    /// Number of classes.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The entry at (`row`, `col`).
    pub fn get(&self, row: usize, col: usize) -> T {
        self.data[row * self.k + col]
    }

    /// Row `row`.
    pub fn row(&self, row: usize) -> &[T] {
        &self.data[row * self.k..(row + 1) * self.k]
    }

    /// All entries, row-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// Row `row`, mutable.
    pub(crate) fn row_mut(&mut self, row: usize) -> &mut [T] {
        &mut self.data[row * self.k..(row + 1) * self.k]
    }

    /// The diagonal.
    pub fn diagonal(&self) -> Vec<T> {
        (0..self.k).map(|i| self.get(i, i)).collect()
    }
}

impl ClassMatrix<f64> {
    /// Sum of each row.
    pub fn row_sums(&self) -> Vec<f64> {
        self.data
            .chunks_exact(self.k)
            .map(|r| r.iter().sum())
            .collect()
    }

    /// Sum of each column.
    pub fn col_sums(&self) -> Vec<f64> {
        let mut sums = vec![0.0; self.k];
        for r in self.data.chunks_exact(self.k) {
            for (s, v) in sums.iter_mut().zip(r) {
                *s += v;
            }
        }
        sums
    }
}

impl ClassMatrix<u64> {
    /// The same counts as `f64`.
    pub fn to_f64(&self) -> ClassMatrix<f64> {
        // NOTE: counts stay far below 2^53, so the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let data = self.data.iter().map(|&v| v as f64).collect();
        ClassMatrix { k: self.k, data }
    }
}

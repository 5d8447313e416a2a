//! The columnar input of AutoML: named columns of text cells, as read from a CSV file or a dataset's
//! rows (an empty or whitespace-only cell is a missing value), or of binary cells holding encoded
//! images (an empty cell is missing).

// NOTE: a small columnar type of our own rather than Arrow: every input today arrives as text
// cells (CSV upload, `trustmesh check`), and schema inference needs the text anyway (numbers,
// dates, booleans and list literals are all recognised from it). An Arrow reader can build this.

use crate::QualityError;

/// A column's cells.
#[derive(Debug, Clone, PartialEq)]
enum Cells {
    Text(Vec<String>),
    Binary(Vec<Vec<u8>>),
}

/// One named column of text or binary cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    name: String,
    cells: Cells,
}

impl Column {
    /// A column of text `cells`; an empty or whitespace-only cell is missing.
    pub fn new(name: impl Into<String>, cells: Vec<String>) -> Self {
        Self {
            name: name.into(),
            cells: Cells::Text(cells),
        }
    }

    /// A column of binary `cells` (encoded images: PNG, JPEG, BMP, GIF); an empty cell is missing.
    pub fn binary(name: impl Into<String>, cells: Vec<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            cells: Cells::Binary(cells),
        }
    }

    /// Whether the cells are binary.
    pub fn is_binary(&self) -> bool {
        matches!(self.cells, Cells::Binary(_))
    }

    /// Row `i`'s bytes in a binary column; `None` when missing or in a text column.
    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        match &self.cells {
            Cells::Binary(cells) => Some(cells[i].as_slice()).filter(|b| !b.is_empty()),
            Cells::Text(_) => None,
        }
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Row `i`'s text, trimmed; `None` when missing or in a binary column.
    pub fn get(&self, i: usize) -> Option<&str> {
        match &self.cells {
            Cells::Text(cells) => Some(cells[i].trim()).filter(|c| !c.is_empty()),
            Cells::Binary(_) => None,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match &self.cells {
            Cells::Text(cells) => cells.len(),
            Cells::Binary(cells) => cells.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Present text values with their rows.
    pub fn present(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        (0..self.len()).filter_map(|i| self.get(i).map(|v| (i, v)))
    }
}

/// Named columns of equal length.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    n: usize,
    columns: Vec<Column>,
}

impl Table {
    /// A table of `columns`, all of one length and with distinct names.
    ///
    /// # Errors
    /// [`QualityError::Empty`] without columns or rows; [`QualityError::InvalidColumn`] for a column
    /// of another length or a repeated name.
    pub fn new(columns: Vec<Column>) -> Result<Self, QualityError> {
        let n = columns.first().map_or(0, Column::len);
        if n == 0 {
            return Err(QualityError::Empty);
        }
        for (i, column) in columns.iter().enumerate() {
            if column.len() != n {
                return Err(QualityError::InvalidColumn {
                    column: column.name.clone(),
                    row: None,
                    reason: format!("{} rows, but the first column has {n}", column.len()),
                });
            }
            if columns[..i].iter().any(|c| c.name == column.name) {
                return Err(QualityError::InvalidColumn {
                    column: column.name.clone(),
                    row: None,
                    reason: "the name appears twice".into(),
                });
            }
        }
        Ok(Self { n, columns })
    }

    /// Number of rows.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The column named `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

//! CSV validation and parsing into columns of strings: every rejection names its line and column,
//! never a value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read};

/// Why an upload was rejected: a stable code and a message naming the position, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable reason in UPPER_SNAKE_CASE (`trustmesh.v1.DatasetError.code`).
    pub code: &'static str,
    /// Human-readable explanation naming line and column.
    pub message: String,
    /// 1-based line, when the problem is in one row.
    pub line: Option<u64>,
    /// Column name, when the problem is in one column.
    pub column: Option<String>,
}

impl Rejection {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            line: None,
            column: None,
        }
    }

    pub(crate) fn at(mut self, line: Option<u64>, column: Option<&str>) -> Self {
        self.line = line;
        self.column = column.map(str::to_owned);
        self
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// How to read the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CsvOptions {
    /// Field delimiter.
    pub(crate) delimiter: u8,
    /// Whether the first record names the columns.
    pub(crate) has_header: bool,
}

/// A parsed file, column by column.
#[derive(Debug)]
pub(crate) struct Table {
    /// Column names, unique and non-empty.
    pub(crate) names: Vec<String>,
    /// Values per column, one per row.
    pub(crate) columns: Vec<Cells>,
    /// The 1-based line each row starts on.
    pub(crate) lines: Vec<u64>,
    /// The binary columns' values by column index (a Parquet binary column; an empty value is a
    /// null), whose text cells are empty.
    pub(crate) binary: BTreeMap<usize, Vec<Vec<u8>>>,
}

impl Table {
    /// Rows parsed.
    pub(crate) fn row_count(&self) -> usize {
        self.lines.len()
    }
}

/// One column's text cells, compactly: one buffer of their text and where each ends, so a cell
/// costs its text and 4 bytes (not a `String` of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cells {
    text: String,
    ends: Vec<u32>,
}

impl Cells {
    /// Cells held.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Appends `value`; a column's text is limited to 4 GiB.
    pub(crate) fn push(&mut self, value: &str) -> Result<(), Rejection> {
        let end = u32::try_from(self.text.len() + value.len()).map_err(|_| {
            Rejection::new(
                "COLUMN_TOO_LARGE",
                "a column holds more than 4 GiB of text; split the file",
            )
        })?;
        self.text.push_str(value);
        self.ends.push(end);
        Ok(())
    }

    /// Appends empty cells until there are `len`.
    pub(crate) fn fill_to(&mut self, len: usize) {
        let end = self.ends.last().copied().unwrap_or_default();
        self.ends.resize(len.max(self.ends.len()), end);
    }

    /// The cells in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let end = end as usize;
            let cell = self.text.get(start..end).unwrap_or_default();
            start = end;
            cell
        })
    }
}

/// Parses the CSV file `reader` yields (read once, front to back, never held whole) into a
/// [`Table`], checking it has a header of unique, non-empty names, rows of that width, valid UTF-8
/// and at most `max_rows` rows and `max_columns` columns.
pub(crate) fn parse<R: Read>(
    reader: R,
    options: CsvOptions,
    max_rows: u64,
    max_columns: usize,
) -> Result<Table, Rejection> {
    let Some(reader) = skip_bom_unless_blank(reader).map_err(unreadable)? else {
        return Err(Rejection::new("EMPTY_FILE", "the file is empty"));
    };
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(options.delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut records = reader.byte_records();
    let mut table = Table {
        names: Vec::new(),
        columns: Vec::new(),
        lines: Vec::new(),
        binary: BTreeMap::new(),
    };
    let mut pending_first = None;
    if let Some(first) = records.next() {
        let first = first.map_err(malformed)?;
        let line = first.position().map(::csv::Position::line);
        if first.len() > max_columns {
            return Err(Rejection::new(
                "TOO_MANY_COLUMNS",
                format!(
                    "the file has {} columns; at most {max_columns} are allowed",
                    first.len()
                ),
            )
            .at(line, None));
        }
        if options.has_header {
            table.names = header_names(&first, line)?;
        } else {
            table.names = (1..=first.len()).map(|i| format!("column_{i}")).collect();
            pending_first = Some(first);
        }
    }
    table.columns = vec![Cells::default(); table.names.len()];
    let rest = records.map(|r| r.map_err(malformed));
    for record in pending_first.map(Ok).into_iter().chain(rest) {
        let record = record?;
        let line = record.position().map_or(0, ::csv::Position::line);
        if table.lines.len() as u64 >= max_rows {
            return Err(Rejection::new(
                "TOO_MANY_ROWS",
                format!("line {line} exceeds the limit of {max_rows} rows"),
            )
            .at(Some(line), None));
        }
        push_row(&mut table, &record, line)?;
    }
    if table.row_count() == 0 {
        return Err(Rejection::new(
            "NO_ROWS",
            "the file has a header but no data rows",
        ));
    }
    Ok(table)
}

/// `reader` without a leading UTF-8 byte-order mark; `None` if all it holds is whitespace. What
/// it reads ahead (whitespace up to the first other byte) is handed back in front of the rest.
pub(crate) fn skip_bom_unless_blank<R: Read>(
    mut reader: R,
) -> io::Result<Option<io::Chain<io::Cursor<Vec<u8>>, R>>> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    let mut ahead = Vec::new();
    let mut blank = true;
    let mut byte = [0_u8; 1];
    loop {
        if reader.read(&mut byte)? == 0 {
            return Ok((!blank).then(|| io::Cursor::new(ahead).chain(reader)));
        }
        ahead.push(byte[0]);
        blank &= byte[0].is_ascii_whitespace();
        if ahead == BOM {
            ahead.clear();
            blank = true;
        } else if !blank && !BOM.starts_with(&ahead) {
            return Ok(Some(io::Cursor::new(ahead).chain(reader)));
        }
    }
}

/// The upload could not be read (it was abandoned mid-way).
pub(crate) fn unreadable(error: io::Error) -> Rejection {
    Rejection::new(
        "UPLOAD_UNREADABLE",
        format!("the upload could not be read: {error}"),
    )
}

fn malformed(error: ::csv::Error) -> Rejection {
    let line = error.position().map(::csv::Position::line);
    let message = line.map_or_else(
        || "the file is not valid CSV".to_owned(),
        |line| format!("line {line} is not valid CSV"),
    );
    Rejection::new("CSV_MALFORMED", message).at(line, None)
}

fn header_names(header: &::csv::ByteRecord, line: Option<u64>) -> Result<Vec<String>, Rejection> {
    let mut names = Vec::with_capacity(header.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, field) in header.iter().enumerate() {
        let position = index + 1;
        let Ok(name) = std::str::from_utf8(field) else {
            return Err(Rejection::new(
                "UNSUPPORTED_ENCODING",
                format!("line 1 (the header), column {position} is not valid UTF-8"),
            )
            .at(line, None));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(Rejection::new(
                "CSV_EMPTY_HEADER",
                format!("line 1 (the header), column {position} has no name"),
            )
            .at(line, None));
        }
        if let Some(first) = seen.insert(name.to_owned(), position) {
            return Err(Rejection::new(
                "CSV_DUPLICATE_HEADER",
                format!("column \"{name}\" appears twice in the header, at columns {first} and {position}"),
            )
            .at(line, Some(name)));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

fn push_row(table: &mut Table, record: &::csv::ByteRecord, line: u64) -> Result<(), Rejection> {
    let width = table.names.len();
    if record.len() != width {
        let column = table.names.get(record.len()).map(String::as_str);
        return Err(Rejection::new(
            "CSV_JAGGED_ROW",
            format!(
                "line {line} has {} fields but the header has {width} columns",
                record.len()
            ),
        )
        .at(Some(line), column));
    }
    for ((field, column), name) in record.iter().zip(&mut table.columns).zip(&table.names) {
        let Ok(value) = std::str::from_utf8(field) else {
            return Err(Rejection::new(
                "UNSUPPORTED_ENCODING",
                format!("line {line}, column \"{name}\" is not valid UTF-8"),
            )
            .at(Some(line), Some(name)));
        };
        column
            .push(value)
            .map_err(|e| e.at(Some(line), Some(name)))?;
    }
    table.lines.push(line);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: CsvOptions = CsvOptions {
        delimiter: b',',
        has_header: true,
    };

    /// A table's cells as vectors.
    fn cells(table: &Table) -> Vec<Vec<&str>> {
        table.columns.iter().map(|c| c.iter().collect()).collect()
    }

    fn reject(bytes: &[u8]) -> Rejection {
        parse(bytes, OPTIONS, 100, 100).unwrap_err()
    }

    #[test]
    fn parses_columns_with_their_lines() {
        let table = parse(b"a,b\n1,x\n\"2\",\"y,z\"\n".as_slice(), OPTIONS, 100, 100).unwrap();
        assert_eq!(table.names, ["a", "b"]);
        assert_eq!(cells(&table), [vec!["1", "2"], vec!["x", "y,z"]]);
        assert_eq!(table.lines, [2, 3]);
    }

    #[test]
    fn rejections_name_line_and_column() {
        let jagged = reject(b"a,b,c\n1,2,3\n4,5\n");
        assert_eq!(jagged.code, "CSV_JAGGED_ROW");
        assert_eq!(
            (jagged.line, jagged.column.as_deref()),
            (Some(3), Some("c"))
        );
        assert!(jagged.message.contains("line 3"), "{jagged}");

        let utf8 = reject(b"a,b\n1,2\n3,\xff\xfe\n");
        assert_eq!(utf8.code, "UNSUPPORTED_ENCODING");
        assert_eq!((utf8.line, utf8.column.as_deref()), (Some(3), Some("b")));

        assert_eq!(reject(b"").code, "EMPTY_FILE");
        assert_eq!(reject(b" \n\n").code, "EMPTY_FILE");
        assert_eq!(reject(b"\xEF\xBB\xBF\n").code, "EMPTY_FILE");
        let bom = parse(&b"\xEF\xBB\xBF\na\n1\n"[..], OPTIONS, 100, 100).unwrap();
        assert_eq!((bom.row_count(), bom.names), (1, vec!["a".to_owned()]));
        assert_eq!(reject(b"a,b\n").code, "NO_ROWS");
        let dup = reject(b"a,b,a\n1,2,3\n");
        assert_eq!(dup.code, "CSV_DUPLICATE_HEADER");
        assert_eq!(dup.column.as_deref(), Some("a"));
        assert_eq!(reject(b"a,,c\n1,2,3\n").code, "CSV_EMPTY_HEADER");
        assert_eq!(
            parse(b"a\n1\n2\n3\n".as_slice(), OPTIONS, 2, 100)
                .unwrap_err()
                .code,
            "TOO_MANY_ROWS"
        );
        assert_eq!(
            parse(b"a,b,c\n1,2,3\n".as_slice(), OPTIONS, 2, 2)
                .unwrap_err()
                .code,
            "TOO_MANY_COLUMNS"
        );
    }

    #[test]
    fn without_a_header_columns_are_numbered() {
        let options = CsvOptions {
            has_header: false,
            ..OPTIONS
        };
        let table = parse(b"1,2\n3,4\n".as_slice(), options, 100, 100).unwrap();
        assert_eq!(table.names, ["column_1", "column_2"]);
        assert_eq!(table.row_count(), 2);
    }
}

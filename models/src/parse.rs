//! Pure parsers for the benchmark formats and for generic CSV tables.
//!
//! They take `&str` rather than paths so that the models crate stays free of
//! I/O: the binary reads the file, the library interprets it.

use crate::error::ParseError;
use serde::{Deserialize, Serialize};

/// A delimited text table with a header row; cells kept as text until a
/// caller asks for a column as numbers (so the time column may be anything).
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Column names from the header, trimmed.
    pub headers: Vec<String>,
    /// Data rows; each has exactly `headers.len()` cells.
    pub rows: Vec<Vec<String>>,
    /// 1-based line number of each data row, for error messages.
    pub line_numbers: Vec<usize>,
    /// The delimiter that was detected.
    pub delimiter: char,
}

impl Table {
    /// Index of a column by exact (trimmed) name.
    pub fn column_index(&self, name: &str) -> Result<usize, ParseError> {
        self.headers
            .iter()
            .position(|h| h == name.trim())
            .ok_or_else(|| ParseError::MissingColumn(name.to_string()))
    }

    /// A column as text.
    pub fn text_column(&self, name: &str) -> Result<Vec<String>, ParseError> {
        let i = self.column_index(name)?;
        Ok(self.rows.iter().map(|r| r[i].clone()).collect())
    }

    /// A column as finite numbers; the first bad cell is reported with its line.
    pub fn numeric_column(&self, name: &str) -> Result<Vec<f64>, ParseError> {
        let i = self.column_index(name)?;
        self.rows
            .iter()
            .zip(&self.line_numbers)
            .map(|(r, &line)| parse_number(&r[i], line, &self.headers[i]))
            .collect()
    }

    /// A column as numbers where missing cells (empty, `NaN`, `NA`, `null`,
    /// `None`, case-insensitive) become NaN; any other non-number is still
    /// reported with its line.
    pub fn numeric_column_with_missing(&self, name: &str) -> Result<Vec<f64>, ParseError> {
        let i = self.column_index(name)?;
        self.rows
            .iter()
            .zip(&self.line_numbers)
            .map(|(r, &line)| {
                let t = r[i].trim();
                if is_missing(t) {
                    Ok(f64::NAN)
                } else {
                    parse_number(t, line, &self.headers[i])
                }
            })
            .collect()
    }
}

/// Whether a cell denotes a missing value.
fn is_missing(t: &str) -> bool {
    t.is_empty()
        || ["nan", "na", "null", "none", "-nan"]
            .iter()
            .any(|m| t.eq_ignore_ascii_case(m))
}

fn parse_number(cell: &str, line: usize, column: &str) -> Result<f64, ParseError> {
    let t = cell.trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(ParseError::NotNumeric {
            line,
            column: column.to_string(),
            value: t.to_string(),
        }),
    }
}

/// Parses a delimited table with a header row. The delimiter is `;` when the
/// header contains one, otherwise `,` (SKAB uses `;`, most tools `,`).
/// Blank lines are skipped; quoting is not supported (numeric telemetry
/// exports do not need it).
pub fn parse_table(text: &str) -> Result<Table, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ParseError::Empty);
    };
    let delimiter = if header.contains(';') {
        ';'
    } else if header.contains(',') {
        ','
    } else if header.contains('\t') {
        '\t'
    } else {
        ','
    };
    let headers: Vec<String> = header
        .split(delimiter)
        .map(|h| h.trim().trim_matches('"').to_string())
        .collect();
    let mut rows = Vec::new();
    let mut line_numbers = Vec::new();
    for (line, l) in lines {
        let cells: Vec<String> = l
            .split(delimiter)
            .map(|c| c.trim().trim_matches('"').to_string())
            .collect();
        if cells.len() != headers.len() {
            return Err(ParseError::FieldCount {
                line,
                expected: headers.len(),
                found: cells.len(),
            });
        }
        rows.push(cells);
        line_numbers.push(line);
    }
    if rows.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(Table {
        headers,
        rows,
        line_numbers,
        delimiter,
    })
}

/// The eight SKAB sensor columns in file order.
pub const SKAB_SENSORS: [&str; 8] = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
];

/// One SKAB experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkabFile {
    /// `datetime` column as written.
    pub timestamps: Vec<String>,
    /// Sensor values, one row per sample, columns in [`SKAB_SENSORS`] order.
    pub features: Vec<Vec<f64>>,
    /// `anomaly` labels; `None` for the anomaly-free file, which has none.
    pub anomaly: Option<Vec<bool>>,
    /// `changepoint` labels; `None` when absent.
    pub changepoint: Option<Vec<bool>>,
}

/// Parses one SKAB CSV (`;`-separated, header, `datetime` first).
pub fn parse_skab_csv(text: &str) -> Result<SkabFile, ParseError> {
    let table = parse_table(text)?;
    let timestamps = table.text_column("datetime")?;
    let cols: Vec<Vec<f64>> = SKAB_SENSORS
        .iter()
        .map(|c| table.numeric_column(c))
        .collect::<Result<_, _>>()?;
    let n = timestamps.len();
    let features = (0..n)
        .map(|i| cols.iter().map(|c| c[i]).collect())
        .collect();
    let label = |name: &str| -> Result<Option<Vec<bool>>, ParseError> {
        if table.column_index(name).is_err() {
            return Ok(None);
        }
        Ok(Some(
            table
                .numeric_column(name)?
                .into_iter()
                .map(|v| v >= 0.5)
                .collect(),
        ))
    };
    Ok(SkabFile {
        timestamps,
        features,
        anomaly: label("anomaly")?,
        changepoint: label("changepoint")?,
    })
}

/// One C-MAPSS row: unit id, cycle, 3 operational settings, 21 sensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CmapssRow {
    /// Engine unit id.
    pub unit: u32,
    /// Cycle number, from 1.
    pub cycle: u32,
    /// `op_setting_1..3`.
    pub settings: [f64; 3],
    /// `sensor_1..21`.
    pub sensors: [f64; 21],
}

/// Parses a C-MAPSS `train_FD00x.txt` / `test_FD00x.txt` (whitespace
/// separated, no header, 26 numbers per line; trailing spaces allowed).
pub fn parse_cmapss(text: &str) -> Result<Vec<CmapssRow>, ParseError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = l.split_whitespace().collect();
        if fields.len() != 26 {
            return Err(ParseError::FieldCount {
                line,
                expected: 26,
                found: fields.len(),
            });
        }
        let mut v = [0.0; 26];
        for (j, f) in fields.iter().enumerate() {
            v[j] = parse_number(f, line, &format!("field {}", j + 1))?;
        }
        let as_id = |x: f64, col: &str| -> Result<u32, ParseError> {
            if x >= 0.0 && x.fract() == 0.0 && x <= u32::MAX as f64 {
                Ok(x as u32)
            } else {
                Err(ParseError::NotNumeric {
                    line,
                    column: col.to_string(),
                    value: x.to_string(),
                })
            }
        };
        let mut settings = [0.0; 3];
        settings.copy_from_slice(&v[2..5]);
        let mut sensors = [0.0; 21];
        sensors.copy_from_slice(&v[5..26]);
        out.push(CmapssRow {
            unit: as_id(v[0], "unit")?,
            cycle: as_id(v[1], "cycle")?,
            settings,
            sensors,
        });
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

/// Parses `RUL_FD00x.txt`: one true RUL per line, line i = unit i.
pub fn parse_rul(text: &str) -> Result<Vec<f64>, ParseError> {
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t.is_empty() {
            continue;
        }
        out.push(parse_number(t, i + 1, "rul")?);
    }
    if out.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKAB: &str = "datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint\n\
2020-03-09 10:14:33;0.0265878;0.0401113;1.3302;0.054711;79.3366;26.0199;233.062;32.0;0.0;0.0\n\
2020-03-09 10:14:34;0.0261697;0.0404525;1.35399;0.382638;79.5158;26.0258;236.04;32.0;1.0;1.0\n";

    #[test]
    fn skab_parses() {
        let f = parse_skab_csv(SKAB).unwrap();
        assert_eq!(f.features.len(), 2);
        assert_eq!(f.features[1][7], 32.0);
        assert_eq!(f.anomaly, Some(vec![false, true]));
    }

    #[test]
    fn skab_errors_are_typed() {
        assert_eq!(parse_skab_csv(""), Err(ParseError::Empty));
        let missing = SKAB.replace("Current", "Curr");
        assert_eq!(
            parse_skab_csv(&missing),
            Err(ParseError::MissingColumn("Current".into()))
        );
        let bad = SKAB.replace("1.35399", "abc");
        assert!(matches!(
            parse_skab_csv(&bad),
            Err(ParseError::NotNumeric { line: 3, .. })
        ));
    }

    #[test]
    fn table_autodetects_delimiter() {
        let t = parse_table("ts,v\n1,2.5\n2,3\n").unwrap();
        assert_eq!(t.delimiter, ',');
        assert_eq!(t.numeric_column("v").unwrap(), vec![2.5, 3.0]);
        assert_eq!(parse_table("ts,v\n"), Err(ParseError::Empty));
        assert!(matches!(
            parse_table("a,b\n1\n"),
            Err(ParseError::FieldCount { line: 2, .. })
        ));
        assert!(matches!(
            parse_table("a,b\n1,NaN\n").unwrap().numeric_column("b"),
            Err(ParseError::NotNumeric { line: 2, .. })
        ));
    }

    #[test]
    fn cmapss_parses() {
        let line = "1 1 -0.0007 -0.0004 100.0 518.67 641.82 1589.70 1400.60 14.62 21.61 554.36 2388.06 9046.19 1.30 47.47 521.66 2388.02 8138.62 8.4195 0.03 392 2388 100.00 39.06 23.4190  \n";
        let rows = parse_cmapss(line).unwrap();
        assert_eq!(rows[0].unit, 1);
        assert_eq!(rows[0].sensors[1], 641.82);
        assert!(matches!(
            parse_cmapss("1 2 3\n"),
            Err(ParseError::FieldCount { line: 1, .. })
        ));
        assert_eq!(parse_rul("112\n98\n").unwrap(), vec![112.0, 98.0]);
        assert_eq!(parse_rul("\n"), Err(ParseError::Empty));
    }
}

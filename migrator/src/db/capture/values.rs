//! A captured table's columns as the source describes them, and a row image from the binary
//! log turned into SQL the destination applies: `REPLACE` of the full row, `DELETE` by primary
//! key. Values travel as the binary log holds them; where its form differs from what a
//! statement takes, it is converted here:
//! - integers of `UNSIGNED` columns (the log carries them signed when the server does not log
//!   signedness): reinterpreted at the column's width;
//! - `TIMESTAMP`: seconds since the epoch (`FROM_UNIXTIME(…)` in a `+00:00` session);
//! - `SET` (a little-endian bit mask) and `BIT` (big-endian bytes): their integer value;
//! - `YEAR`: the log's `1900` is the zero year;
//! - strings, blobs, `JSON` (text in MariaDB), `DECIMAL` (text) and `INET6`/`UUID` (packed):
//!   bytes unchanged, the session's client charset being binary.

use crate::db::schema::{ctx, ident, Result, Side};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::*;
use mysql_async::{Conn, Value};

/// One column of a captured table.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnMeta {
    pub name: String,
    /// `DATA_TYPE`, lower case.
    pub data_type: String,
    pub unsigned: bool,
    /// Generated (virtual or stored): never written.
    pub generated: bool,
    /// Fractional digits of a temporal column (`DATETIME_PRECISION`), else 0.
    pub precision: u32,
}

/// A captured table: every column in ordinal order, and its primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableMeta {
    pub name: String,
    pub columns: Vec<ColumnMeta>,
    /// Indexes into `columns`, in key order.
    pub pk: Vec<usize>,
}

/// The base tables of `db` on the source, with their columns and primary keys.
pub async fn table_metas(conn: &mut Conn, db: &str) -> Result<Vec<TableMeta>> {
    let tables: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(ctx(Side::Source, || format!("listing tables of `{db}`")))?;
    type Col = (String, String, String, String, String, Option<u32>);
    let cols: Vec<Col> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, EXTRA, DATETIME_PRECISION \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? \
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .map_err(ctx(Side::Source, || format!("listing columns of `{db}`")))?;
    let pks: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' \
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .map_err(ctx(Side::Source, || {
            format!("listing primary keys of `{db}`")
        }))?;
    Ok(tables
        .into_iter()
        .map(|name| {
            let columns: Vec<ColumnMeta> = cols
                .iter()
                .filter(|c| c.0 == name)
                .map(|(_, col, ty, full, extra, precision)| {
                    let e = extra.to_ascii_uppercase();
                    ColumnMeta {
                        name: col.clone(),
                        data_type: ty.to_ascii_lowercase(),
                        unsigned: full.to_ascii_lowercase().contains("unsigned"),
                        generated: e.contains("GENERATED")
                            || e.contains("PERSISTENT")
                            || e.contains("VIRTUAL"),
                        precision: precision.unwrap_or(0),
                    }
                })
                .collect();
            let pk = pks
                .iter()
                .filter(|(t, _)| *t == name)
                .filter_map(|(_, c)| columns.iter().position(|x| x.name == *c))
                .collect();
            TableMeta { name, columns, pk }
        })
        .collect())
}

impl TableMeta {
    /// Why this table's changes cannot be applied from the log (`None`: they can). Such a
    /// table is copied again inside the freeze instead.
    pub fn uncapturable(&self) -> Option<String> {
        if self.pk.is_empty() {
            return Some("no primary key (changes cannot be applied by key)".into());
        }
        // mysql_common 0.37 misreads a negative TIME with 1 to 4 fractional digits from the
        // log (its unsigned arithmetic overflows): such a table is not trusted to the log.
        if let Some(c) = self
            .columns
            .iter()
            .find(|c| c.data_type == "time" && (1..=4).contains(&c.precision))
        {
            return Some(format!(
                "column `{}` is TIME({}), which the binary log reader cannot decode exactly",
                c.name, c.precision
            ));
        }
        None
    }

    /// Which column each value of a row image of `n` values is: every column, or (a server
    /// that leaves generated columns out of its images) the stored ones. `None`: the image
    /// does not fit this table (its definition changed).
    pub fn image_columns(&self, n: usize) -> Option<Vec<usize>> {
        if n == self.columns.len() {
            return Some((0..n).collect());
        }
        let stored: Vec<usize> = (0..self.columns.len())
            .filter(|&i| !self.columns[i].generated)
            .collect();
        (stored.len() == n).then_some(stored)
    }

    fn written(&self) -> impl Iterator<Item = (usize, &ColumnMeta)> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.generated)
    }

    /// `REPLACE INTO db.t (…) VALUES ` for the written columns.
    pub fn replace_head(&self, db: &str) -> String {
        let cols: Vec<String> = self.written().map(|(_, c)| ident(&c.name)).collect();
        format!(
            "REPLACE INTO {}.{} ({}) VALUES ",
            ident(db),
            ident(&self.name),
            cols.join(",")
        )
    }

    /// `(v1,…)` of one full row (values indexed by column).
    pub fn row_tuple(&self, row: &[Option<Literal>]) -> std::result::Result<String, Unfit> {
        let mut out = Vec::new();
        for (i, c) in self.written() {
            match row.get(i) {
                Some(Some(l)) => out.push(l.0.clone()),
                _ => {
                    return Err(Unfit(format!(
                        "column `{}` missing from the row image",
                        c.name
                    )))
                }
            }
        }
        Ok(format!("({})", out.join(",")))
    }

    /// `DELETE FROM db.t WHERE pk1 <=> v1 AND …` for one row's primary key.
    pub fn delete_by_pk(
        &self,
        db: &str,
        row: &[Option<Literal>],
    ) -> std::result::Result<String, Unfit> {
        let mut conds = Vec::new();
        for &i in &self.pk {
            let c = &self.columns[i];
            match row.get(i) {
                Some(Some(l)) => conds.push(format!("{} <=> {}", ident(&c.name), l.0)),
                _ => {
                    return Err(Unfit(format!(
                        "key column `{}` missing from the row image",
                        c.name
                    )))
                }
            }
        }
        Ok(format!(
            "DELETE FROM {}.{} WHERE {}",
            ident(db),
            ident(&self.name),
            conds.join(" AND ")
        ))
    }

    /// Whether two row images have the same primary key.
    pub fn same_pk(&self, a: &[Option<Literal>], b: &[Option<Literal>]) -> bool {
        self.pk.iter().all(|&i| a.get(i) == b.get(i))
    }
}

/// Why a row image does not fit its table (the table is then copied again).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Unfit(pub String);

/// A value rendered as an SQL expression for a session whose client charset is binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Literal(pub String);

/// Renders one value of a row image for `col`; an error names what could not be converted.
pub fn literal(col: &ColumnMeta, v: BinlogValue<'_>) -> std::result::Result<Literal, Unfit> {
    let v = match v {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(_) | BinlogValue::JsonDiff(_) => {
            return Err(Unfit(format!(
                "column `{}`: MySQL binary JSON is not supported (MariaDB stores JSON as text)",
                col.name
            )))
        }
    };
    let ty = col.data_type.as_str();
    let sql = match v {
        Value::NULL => "NULL".to_string(),
        Value::Int(i) if col.unsigned => unsigned(ty, i).to_string(),
        Value::Bytes(b) if ty == "timestamp" => {
            let s = String::from_utf8_lossy(&b).to_string();
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
                return Err(Unfit(format!(
                    "column `{}`: timestamp {s:?} from the log",
                    col.name
                )));
            }
            format!("FROM_UNIXTIME({s})")
        }
        Value::Int(i) if ty == "timestamp" => format!("FROM_UNIXTIME({i})"),
        Value::Bytes(b) if ty == "set" => le_uint(&b).to_string(),
        // Fixed-size binary types: the log drops trailing zero bytes (as for BINARY(n)); these
        // take only their full packed size as packed, so the zeros are put back.
        Value::Bytes(mut b) if packed_size(ty).is_some() => {
            let n = packed_size(ty).unwrap_or(16);
            if b.len() > n {
                return Err(Unfit(format!(
                    "column `{}`: {} bytes for a {ty}",
                    col.name,
                    b.len()
                )));
            }
            b.resize(n, 0);
            format!("0x{}", hex::encode_upper(&b))
        }
        Value::Bytes(b) if ty == "bit" => be_uint(&b).to_string(),
        Value::Bytes(b) if ty == "year" => match std::str::from_utf8(&b) {
            Ok("1900") => "0".to_string(),
            Ok(y) if y.bytes().all(|c| c.is_ascii_digit()) && !y.is_empty() => y.to_string(),
            _ => {
                return Err(Unfit(format!(
                    "column `{}`: year {b:?} from the log",
                    col.name
                )))
            }
        },
        other => other.as_sql(false),
    };
    Ok(Literal(sql))
}

/// The packed size of MariaDB's fixed-size binary types.
fn packed_size(ty: &str) -> Option<usize> {
    match ty {
        "inet6" | "uuid" => Some(16),
        "inet4" => Some(4),
        _ => None,
    }
}

/// A signed integer from the log read back as the unsigned value of the column's width.
fn unsigned(ty: &str, i: i64) -> u64 {
    match ty {
        "tinyint" => i as u8 as u64,
        "smallint" => i as u16 as u64,
        "mediumint" => (i as u32 as u64) & 0xff_ffff,
        "int" | "integer" => i as u32 as u64,
        _ => i as u64,
    }
}

fn le_uint(b: &[u8]) -> u64 {
    b.iter()
        .take(8)
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

fn be_uint(b: &[u8]) -> u64 {
    b.iter()
        .rev()
        .take(8)
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | x as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: &str, unsigned: bool) -> ColumnMeta {
        ColumnMeta {
            name: "c".into(),
            data_type: ty.into(),
            unsigned,
            generated: false,
            precision: 0,
        }
    }

    fn lit(ty: &str, unsigned: bool, v: Value) -> String {
        literal(&col(ty, unsigned), BinlogValue::Value(v))
            .unwrap()
            .0
    }

    #[test]
    fn unsigned_integers_are_read_at_their_width() {
        assert_eq!(lit("bigint", true, Value::Int(-1)), u64::MAX.to_string());
        assert_eq!(lit("tinyint", true, Value::Int(-1)), "255");
        assert_eq!(lit("smallint", true, Value::Int(-2)), "65534");
        assert_eq!(lit("mediumint", true, Value::Int(-1)), "16777215");
        assert_eq!(lit("int", true, Value::Int(-1)), "4294967295");
        assert_eq!(lit("int", false, Value::Int(-1)), "-1");
    }

    #[test]
    fn special_types_become_what_a_statement_takes() {
        let b = |s: &[u8]| Value::Bytes(s.to_vec());
        assert_eq!(
            lit("timestamp", false, b(b"1577934245.678000")),
            "FROM_UNIXTIME(1577934245.678000)"
        );
        assert!(literal(
            &col("timestamp", false),
            BinlogValue::Value(b(b"1); DROP TABLE x"))
        )
        .is_err());
        assert_eq!(lit("set", false, b(&[5])), "5");
        assert_eq!(lit("set", false, b(&[0, 1])), "256");
        assert_eq!(lit("bit", false, b(&[0, 5])), "5");
        assert_eq!(lit("bit", false, b(&[1, 0])), "256");
        assert_eq!(lit("year", false, b(b"1900")), "0");
        // 2001:db8::2800 with its trailing zero byte dropped by the log.
        let mut ip = vec![0x20, 0x01, 0x0d, 0xb8];
        ip.extend([0; 10]);
        ip.push(0x28);
        assert_eq!(
            lit("inet6", false, b(&ip)),
            "0x20010DB8000000000000000000002800"
        );
        assert_eq!(lit("year", false, b(b"2024")), "2024");
        assert_eq!(lit("varchar", false, Value::NULL), "NULL");
        assert_eq!(lit("varchar", false, b(b"it's")), "'it\\'s'");
        // Not UTF-8: a hex literal, bytes unchanged.
        assert_eq!(lit("blob", false, b(&[0xff, 0])), "0xFF00");
    }

    #[test]
    fn images_map_to_every_column_or_the_stored_ones() {
        let mut t = TableMeta {
            name: "t".into(),
            columns: vec![col("int", false), col("int", false), col("int", false)],
            pk: vec![0],
        };
        t.columns[2].generated = true;
        assert_eq!(t.image_columns(3), Some(vec![0, 1, 2]));
        assert_eq!(t.image_columns(2), Some(vec![0, 1]));
        assert_eq!(t.image_columns(4), None);
        let row = vec![
            Some(Literal("1".into())),
            Some(Literal("'a'".into())),
            Some(Literal("9".into())),
        ];
        assert_eq!(t.row_tuple(&row).unwrap(), "(1,'a')");
        assert_eq!(
            t.delete_by_pk("d", &row).unwrap(),
            "DELETE FROM `d`.`t` WHERE `c` <=> 1"
        );
    }
}

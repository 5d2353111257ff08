//! A connection of a database copy, set up the same way on both sides: utf8mb4, UTC, no
//! auto-value on zero, foreign key and unique checks off (the destination takes no writes before
//! cutover).

use crate::db::schema::{ctx, ident, Result, Side};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

pub(crate) async fn session(url: &Opts, side: Side, db: Option<&str>) -> Result<Conn> {
    let mut c = Conn::new(url.clone())
        .await
        .map_err(ctx(side, || "connecting".to_string()))?;
    c.query_drop(
        "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO', \
         foreign_key_checks = 0, unique_checks = 0",
    )
    .await
    .map_err(ctx(side, || "setting up the session".to_string()))?;
    if let Some(db) = db {
        c.query_drop(format!("USE {}", ident(db)))
            .await
            .map_err(ctx(side, || format!("USE `{db}`")))?;
    }
    Ok(c)
}

//! Which side serves each site, read from the systems themselves after a migration (never from
//! what the migrator believes): the SQL proxy's route of the site's database, the old VIP's
//! HAProxy server (which web server it sends to), both HAProxies' admin states, and the site's
//! A record on the lab's DNS. [`refresh`] writes `serving`/`db_serving` into the state file, so
//! `scenarios check` looks for each acknowledged write on the side that owns it now.

use crate::dc_services::haproxy_command;
use crate::error::{LabError, Result};
use crate::state::{LabState, Side};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// One HAProxy server as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbServer {
    pub addr: Ipv4Addr,
    /// Administrative maintenance (forced or from the config).
    pub maint: bool,
}

/// Everything observable about one site's placement.
#[derive(Debug, Clone, Serialize)]
pub struct SiteSides {
    pub site: String,
    /// The proxy's side for the site's database (`old`/`new`), and its mode.
    pub db_side: String,
    pub db_mode: String,
    /// The web server the old VIP sends the site to.
    pub old_vip_to: Option<Side>,
    pub old_vip_maint: bool,
    pub new_vip_maint: bool,
    /// The site's A record.
    pub dns: Vec<Ipv4Addr>,
}

/// Why a site is not served from exactly one side (a scenario's violation names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotOneSide {
    #[error("database is {0}")]
    DatabaseNotOpen(String),
    #[error("database on unknown side {0}")]
    UnknownSide(String),
    #[error("database on {} but the old VIP sends to {old_vip_to:?}", .db.label())]
    WebElsewhere { db: Side, old_vip_to: Option<Side> },
    #[error("old VIP's server in maintenance (frozen)")]
    OldVipFrozen,
    #[error("new VIP's server in maintenance (frozen)")]
    NewVipFrozen,
    #[error("served from old-dc but new-dc's VIP also serves it (both)")]
    BothServe,
    #[error("DNS answers {dns:?}, expected {}'s VIP", .side.label())]
    Dns { dns: Vec<Ipv4Addr>, side: Side },
}

impl SiteSides {
    /// `Ok(side)` when every system agrees the site is served from `side` and nothing is
    /// frozen; otherwise why not: frozen, or split between the sides.
    pub fn consistent(&self, st: &LabState) -> std::result::Result<Side, NotOneSide> {
        if self.db_mode != "open" {
            return Err(NotOneSide::DatabaseNotOpen(self.db_mode.clone()));
        }
        let side = match self.db_side.as_str() {
            "old" => Side::Old,
            "new" => Side::New,
            other => return Err(NotOneSide::UnknownSide(other.to_string())),
        };
        if self.old_vip_to != Some(side) {
            return Err(NotOneSide::WebElsewhere {
                db: side,
                old_vip_to: self.old_vip_to,
            });
        }
        if self.old_vip_maint {
            return Err(NotOneSide::OldVipFrozen);
        }
        if side == Side::New && self.new_vip_maint {
            return Err(NotOneSide::NewVipFrozen);
        }
        if side == Side::Old && !self.new_vip_maint {
            return Err(NotOneSide::BothServe);
        }
        if self.dns != [st.dc(side).vip] {
            return Err(NotOneSide::Dns {
                dns: self.dns.clone(),
                side,
            });
        }
        Ok(side)
    }
}

/// Parses `show servers state` (all backends) into `backend → server "web"`.
pub fn parse_servers_state(text: &str) -> BTreeMap<String, LbServer> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ...
        if f.len() < 7 || line.starts_with('#') || f[3] != "web" {
            continue;
        }
        let (Ok(addr), Ok(admin)) = (f[4].parse::<Ipv4Addr>(), f[6].parse::<u32>()) else {
            continue;
        };
        // SRV_ADMF_FMAINT 0x01, SRV_ADMF_IMAINT 0x02, SRV_ADMF_CMAINT 0x04.
        out.insert(
            f[1].to_string(),
            LbServer {
                addr,
                maint: admin & 0x07 != 0,
            },
        );
    }
    out
}

fn servers(st: &LabState, side: Side) -> Result<BTreeMap<String, LbServer>> {
    let sock = &st.dc(side).haproxy_admin_socket;
    let text = haproxy_command(sock, "show servers state")
        .map_err(LabError::io("haproxy runtime API", sock))?;
    Ok(parse_servers_state(&text))
}

/// A records of `name` from the lab's DNS, asked from the client namespace (`kdig`).
fn a_records(st: &LabState, name: &str) -> Result<Vec<Ipv4Addr>> {
    let out = crate::process::run(
        std::process::Command::new("ip")
            .args(["netns", "exec", &st.client.netns, "kdig"])
            .arg(format!("@{}", st.dns.addr))
            .args(["+short", "A", name]),
    )?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// Reads every site's placement from the systems.
pub fn observe(st: &LabState) -> Result<Vec<SiteSides>> {
    let routes = crate::sql_proxy::admin_get(st, "/routes")
        .map_err(|e| LabError::Internal(format!("sql-proxy admin API: {e}")))?;
    let routes: Vec<serde_json::Value> = serde_json::from_str(&routes)
        .map_err(|e| LabError::Internal(format!("sql-proxy GET /routes: {e}")))?;
    let route = |db: &str| {
        routes
            .iter()
            .find(|r| r["database"] == db)
            .map(|r| {
                (
                    r["side"].as_str().unwrap_or("").to_string(),
                    r["mode"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_default()
    };
    let old_lb = servers(st, Side::Old)?;
    let new_lb = servers(st, Side::New)?;
    let mut out = Vec::new();
    for s in &st.sites {
        let be = format!("be_{}", s.login);
        let (db_side, db_mode) = route(&s.database);
        let o = old_lb.get(&be);
        out.push(SiteSides {
            site: s.login.clone(),
            db_side,
            db_mode,
            old_vip_to: o.and_then(|o| {
                if o.addr == st.old.web_addr {
                    Some(Side::Old)
                } else if o.addr == st.new.web_addr {
                    Some(Side::New)
                } else {
                    None
                }
            }),
            old_vip_maint: o.is_none_or(|o| o.maint),
            new_vip_maint: new_lb.get(&be).is_none_or(|n| n.maint),
            dns: a_records(st, &s.domain)?,
        });
    }
    Ok(out)
}

/// Observes every site and records the serving sides in the state file.
pub fn refresh(st: &mut LabState) -> Result<Vec<SiteSides>> {
    let sides = observe(st)?;
    for (site, seen) in st.sites.iter_mut().zip(&sides) {
        if let Some(web) = seen.old_vip_to {
            site.serving = web;
        }
        site.db_serving = match seen.db_side.as_str() {
            "new" => Some(Side::New),
            "old" => Some(Side::Old),
            _ => None,
        };
    }
    st.save()?;
    Ok(sides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_state_gives_address_and_maintenance() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
                    3 be_site0001 1 web 10.2.0.10 2 0 1\n4 be_site0002 1 web 10.1.0.10 0 1 1\n5 be_x 1 other 1.2.3.4 2 0 1\n";
        let m = parse_servers_state(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["be_site0001"].addr, Ipv4Addr::new(10, 2, 0, 10));
        assert!(!m["be_site0001"].maint);
        assert!(m["be_site0002"].maint);
    }
}

//! Writing an inventory directory: used by the generator, and by the lab to describe its own
//! small set of real sites. Records are written as they come (JSONL; sites optionally CSV).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::model::{files, Database, Datacenter, Filer, Site, SqlServer, WebCluster};

/// How to write `sites`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SitesFormat {
    Jsonl,
    Csv,
}

/// An inventory directory being written.
pub struct InventoryWriter {
    dir: PathBuf,
    dcs: BufWriter<File>,
    clusters: BufWriter<File>,
    filers: BufWriter<File>,
    sql: BufWriter<File>,
    dbs: BufWriter<File>,
    sites: BufWriter<File>,
    format: SitesFormat,
}

fn open(dir: &Path, name: &str) -> io::Result<BufWriter<File>> {
    Ok(BufWriter::with_capacity(
        1 << 20,
        File::create(dir.join(name))?,
    ))
}

fn line<T: serde::Serialize>(w: &mut BufWriter<File>, v: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *w, v)?;
    w.write_all(b"\n")
}

/// Quotes a CSV field when it needs it.
fn csv_field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

impl InventoryWriter {
    /// Creates `dir` (and parents) and the inventory files in it, replacing old ones.
    pub fn create(dir: &Path, format: SitesFormat) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (keep, drop) = match format {
            SitesFormat::Jsonl => (files::SITES_JSONL, files::SITES_CSV),
            SitesFormat::Csv => (files::SITES_CSV, files::SITES_JSONL),
        };
        match std::fs::remove_file(dir.join(drop)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut sites = open(dir, keep)?;
        if format == SitesFormat::Csv {
            sites.write_all(
                b"id,login,domains,home,filer,cluster,bytes,files,dns_hosted,traffic,databases,\
window_start,window_end,window_tz,pin,excluded\n",
            )?;
        }
        Ok(InventoryWriter {
            dir: dir.to_path_buf(),
            dcs: open(dir, files::DATACENTERS)?,
            clusters: open(dir, files::CLUSTERS)?,
            filers: open(dir, files::FILERS)?,
            sql: open(dir, files::SQL_SERVERS)?,
            dbs: open(dir, files::DATABASES)?,
            sites,
            format,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn datacenter(&mut self, v: &Datacenter) -> io::Result<()> {
        line(&mut self.dcs, v)
    }
    pub fn cluster(&mut self, v: &WebCluster) -> io::Result<()> {
        line(&mut self.clusters, v)
    }
    pub fn filer(&mut self, v: &Filer) -> io::Result<()> {
        line(&mut self.filers, v)
    }
    pub fn sql_server(&mut self, v: &SqlServer) -> io::Result<()> {
        line(&mut self.sql, v)
    }
    pub fn database(&mut self, v: &Database) -> io::Result<()> {
        line(&mut self.dbs, v)
    }
    pub fn site(&mut self, v: &Site) -> io::Result<()> {
        match self.format {
            SitesFormat::Jsonl => line(&mut self.sites, v),
            SitesFormat::Csv => {
                let mut s = String::with_capacity(256);
                let w = v.window.as_ref();
                let cols: [String; 16] = [
                    v.id.clone(),
                    v.login.clone(),
                    v.domains.join(" "),
                    v.home.clone(),
                    v.filer.clone(),
                    v.cluster.clone(),
                    v.bytes.to_string(),
                    v.files.to_string(),
                    v.dns_hosted.to_string(),
                    v.traffic.to_string(),
                    v.databases.join(" "),
                    w.map(|w| w.start.clone()).unwrap_or_default(),
                    w.map(|w| w.end.clone()).unwrap_or_default(),
                    w.map(|w| w.tz.clone()).unwrap_or_default(),
                    v.pin.map(|p| p.to_string()).unwrap_or_default(),
                    if v.excluded {
                        "true".into()
                    } else {
                        String::new()
                    },
                ];
                for (i, c) in cols.iter().enumerate() {
                    if i > 0 {
                        s.push(',');
                    }
                    csv_field(&mut s, c);
                }
                s.push('\n');
                self.sites.write_all(s.as_bytes())
            }
        }
    }

    /// Flushes every file.
    pub fn finish(mut self) -> io::Result<()> {
        for w in [
            &mut self.dcs,
            &mut self.clusters,
            &mut self.filers,
            &mut self.sql,
            &mut self.dbs,
            &mut self.sites,
        ] {
            w.flush()?;
        }
        Ok(())
    }
}

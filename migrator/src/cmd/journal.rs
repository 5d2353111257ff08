//! `migrator journal show`: what the journal knows, for an operator at 3 a.m.

use clap::Subcommand;
use migrator::journal::{open_journal, JournalLocation};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum JournalCommand {
    /// Show sites and their states, or one site's steps (phase, status, duration, bytes, error).
    Journal {
        /// The journal: its file (SQLite), or mysql://user@host:port/db?password_file=PATH
        /// (MariaDB; the password file must be mode 0600).
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Show this site's steps (default: every site's state).
        site: Option<String>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: JournalCommand) -> anyhow::Result<i32> {
    let JournalCommand::Journal {
        journal,
        site,
        json,
    } = command;
    let journal = JournalLocation::parse(&journal)?;
    if !journal.may_exist() {
        anyhow::bail!("journal {journal} does not exist");
    }
    let j = open_journal(&journal)?;
    match site {
        None => {
            let sites = j.sites()?;
            if json {
                let v: Vec<_> = sites
                    .iter()
                    .map(|(s, st)| serde_json::json!({"site": s, "state": st}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if let Some(p) = j.plan()? {
                    println!("plan: {p}");
                }
                for (s, st) in sites {
                    println!("{s:<30} {}", st.as_str());
                }
            }
        }
        Some(site) => {
            let steps = j.steps(&site)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&steps)?);
            } else {
                if let Some(st) = j.site_state(&site)? {
                    println!("{site}: {}", st.as_str());
                }
                for s in steps {
                    let dur = s
                        .ended_ms
                        .map(|e| format!("{:.2}s", (e - s.started_ms) as f64 / 1000.0))
                        .unwrap_or_else(|| "(never finished: killed?)".into());
                    println!(
                        "#{:<5} {:<12} {:<8} {:<26} {:>14} bytes {}",
                        s.id,
                        s.phase,
                        s.status.name(),
                        dur,
                        s.bytes,
                        s.error.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(0)
}

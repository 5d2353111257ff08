//! Subcommand groups. Each file owns one group; `Command` flattens them into one CLI.

pub mod bundle;
pub mod config;
pub mod cron;
pub mod cutover;
pub mod db;
pub mod files;
pub mod journal;
pub mod planning;
pub mod preflight;
mod progress;
pub mod routes;
pub mod serve;
mod site_lease;
pub mod watch;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Planning(planning::PlanningCommand),
    #[command(flatten)]
    Files(files::FilesCommand),
    #[command(flatten)]
    Db(db::DbCommand),
    #[command(flatten)]
    Journal(journal::JournalCommand),
    #[command(flatten)]
    Cutover(cutover::CutoverCommand),
    #[command(flatten)]
    Routes(routes::RoutesCommand),
    #[command(flatten)]
    Bundle(bundle::BundleCommand),
    #[command(flatten)]
    Serve(serve::ServeCommand),
    #[command(flatten)]
    Watch(watch::WatchCommand),
    #[command(flatten)]
    Preflight(preflight::PreflightCommand),
    #[command(flatten)]
    Cron(cron::CronCommand),
}

/// Runs a command and returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Planning(c) => planning::run(c),
        Command::Files(c) => files::run(c),
        Command::Db(c) => db::run(c),
        Command::Journal(c) => journal::run(c),
        Command::Cutover(c) => cutover::run(c),
        Command::Routes(c) => routes::run(c),
        Command::Bundle(c) => bundle::run(c),
        Command::Serve(c) => serve::run(c),
        Command::Watch(c) => watch::run(c),
        Command::Preflight(c) => preflight::run_group(c),
        Command::Cron(c) => cron::run(c),
    }
}

/// Fails unless the journal a `--journal` value names exists: a file that exists, or any
/// MariaDB URL (opening it then says whether the server answers).
pub fn require_journal(journal: &std::path::Path) -> anyhow::Result<()> {
    let location = migrator::journal::JournalLocation::parse(journal)?;
    if !location.may_exist() {
        anyhow::bail!("journal {location} does not exist");
    }
    Ok(())
}

/// Opens an existing journal (a file path or a MariaDB URL).
pub fn open_existing(
    journal: &std::path::Path,
) -> anyhow::Result<Box<dyn migrator::journal::JournalStore + Send>> {
    require_journal(journal)?;
    Ok(migrator::journal::open_journal_at(journal)?)
}

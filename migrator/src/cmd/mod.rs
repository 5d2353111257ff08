//! Subcommand groups. Each file owns one group; `Command` flattens them into one CLI.

pub mod planning;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum Command {
    #[command(flatten)]
    Planning(planning::PlanningCommand),
}

/// Runs a command and returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Planning(c) => planning::run(c),
    }
}

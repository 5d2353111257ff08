//! `migrator plan …` and `migrator inventory …`.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PlanningCommand {
    /// Plan waves from an inventory (not implemented yet).
    Plan,
}

pub fn run(command: PlanningCommand) -> anyhow::Result<i32> {
    match command {
        PlanningCommand::Plan => anyhow::bail!("migrator plan is not implemented yet"),
    }
}

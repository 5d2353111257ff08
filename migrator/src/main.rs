//! `migrator`: the operator CLI. Each group of subcommands lives in its own file under `cmd/`
//! and is flattened into one command line here; `cmd/config.rs` fills the paths every command
//! shares (journal, sites, plan, control socket) from the environment and the config file.

mod cmd;

use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

/// mimalloc: a database copy holds thousands of small row values per batch and frees them
/// together; glibc's allocator spent more CPU consolidating them than the copy itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Move a shared-hosting platform between datacenters while the sites keep running.
#[derive(Parser)]
#[command(name = "migrator", version = climeta::VERSION, about, long_about = None)]
struct Cli {
    /// Config file with the journal, sites, plan and socket paths (TOML; default
    /// /etc/hostmove/migrator.toml when it exists). A flag beats the environment
    /// (HOSTMOVE_JOURNAL, ...), which beats this file.
    #[arg(long, global = true, value_name = "FILE", env = cmd::config::CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(flatten)]
    log: climeta::logging::LogArgs,
    #[command(subcommand)]
    command: cmd::Command,
}

/// The command line with every shared path's environment variable (and, from `file`, its
/// default): what `--help`, the man pages and the parser see.
fn command(file: &cmd::config::FileConfig) -> clap::Command {
    cmd::config::apply(Cli::command(), file)
}

fn main() {
    if let Some(code) = climeta::generate_docs_if_asked(|| command(&Default::default())) {
        std::process::exit(code);
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let (path, asked) =
        cmd::config::config_path(&args[1..], std::env::var_os(cmd::config::CONFIG_ENV));
    let file = match cmd::config::load(&path, asked) {
        Ok(f) => f,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(2);
        }
    };
    let cli =
        Cli::from_arg_matches(&command(&file).get_matches_from(args)).unwrap_or_else(|e| e.exit());
    cli.log.init();
    match cmd::run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests;

//! `migrator`: the operator CLI. Each group of subcommands lives in its own file under `cmd/`
//! and is flattened into one command line here.

mod cmd;

use clap::Parser;

/// mimalloc: a database copy holds thousands of small row values per batch and frees them
/// together; glibc's allocator spent more CPU consolidating them than the copy itself.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Move a shared-hosting platform between datacenters while the sites keep running.
#[derive(Parser)]
#[command(name = "migrator", version = climeta::VERSION, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: cmd::Command,
}

fn main() {
    if let Some(code) = climeta::generate_docs_if_asked(<Cli as clap::CommandFactory>::command) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    match cmd::run(cli.command) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::exit(2);
        }
    }
}

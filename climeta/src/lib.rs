//! What every hostmove binary (`migrator`, `sql-proxy`, `tunnel`) says about itself, one way:
//! - [`VERSION`]: `--version`, the crate version and the git commit it was built from
//!   (`build.rs`: `HOSTMOVE_COMMIT` when the packaging script sets it, else `git rev-parse`);
//! - [`generate`]: man pages (one per command and subcommand, `clap_mangen`) and bash/zsh
//!   completions (`clap_complete`) from the binary's own clap definition, so they never drift
//!   from `--help`. Each binary exposes it as a hidden `generate-docs --out DIR` command, which
//!   `scripts/package.sh` runs to fill the packages;
//! - [`logging`]: log lines with timestamps and levels, `RUST_LOG`, `--log-format text|json`.

pub mod logging;

use std::path::{Path, PathBuf};

/// `0.1.0 (git 0123456789ab)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("HOSTMOVE_COMMIT"),
    ")"
);

/// Why generating failed: the file it was writing.
#[derive(Debug)]
pub struct GenerateError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl std::fmt::Display for GenerateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for GenerateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// The hidden command every binary answers before parsing its own command line:
/// `<binary> generate-docs --out DIR` writes [`generate`]'s files and returns the exit code
/// (0, or 2 with the error on stderr); any other command line returns `None`.
pub fn generate_docs_if_asked(cmd: impl FnOnce() -> clap::Command) -> Option<i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().map(|a| a.as_os_str()) != Some("generate-docs".as_ref()) {
        return None;
    }
    let out = match &args[1..] {
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        _ => {
            eprintln!("usage: generate-docs --out DIR (man pages and shell completions)");
            return Some(2);
        }
    };
    match generate(cmd(), &out) {
        Ok(done) => {
            for f in done.files {
                println!("{}", out.join(f).display());
            }
            Some(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Some(2)
        }
    }
}

/// What [`generate`] wrote, relative paths under its output directory.
#[derive(Debug, Default)]
pub struct Generated {
    pub files: Vec<PathBuf>,
}

/// Writes into `out`: `man/<name>.1` and `man/<name>-<sub>.1` for every visible subcommand
/// (recursively), `completions/<name>.bash` and `completions/_<name>` (zsh).
pub fn generate(cmd: clap::Command, out: &Path) -> Result<Generated, GenerateError> {
    let mut cmd = cmd;
    cmd.build();
    let mut done = Generated::default();
    let man = out.join("man");
    create_dir(&man)?;
    write_man(&cmd, &man, &mut done, out)?;
    let completions = out.join("completions");
    create_dir(&completions)?;
    let name = cmd.get_name().to_string();
    for (shell, file) in [
        (clap_complete::Shell::Bash, format!("{name}.bash")),
        (clap_complete::Shell::Zsh, format!("_{name}")),
    ] {
        let path = completions.join(&file);
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut buf);
        write(&path, &buf)?;
        done.files.push(PathBuf::from("completions").join(file));
    }
    Ok(done)
}

fn write_man(
    cmd: &clap::Command,
    dir: &Path,
    done: &mut Generated,
    out: &Path,
) -> Result<(), GenerateError> {
    let file = format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name()));
    let path = dir.join(&file);
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut buf)
        .map_err(|source| GenerateError {
            path: path.clone(),
            source,
        })?;
    write(&path, &buf)?;
    done.files
        .push(path.strip_prefix(out).unwrap_or(&path).to_path_buf());
    // clap's generated `help` subcommand is `--help` again: no page of its own.
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!(
            "{}-{}",
            cmd.get_display_name().unwrap_or(cmd.get_name()),
            sub.get_name()
        );
        let sub = sub.clone().display_name(name);
        write_man(&sub, dir, done, out)?;
    }
    Ok(())
}

fn create_dir(path: &Path) -> Result<(), GenerateError> {
    std::fs::create_dir_all(path).map_err(|source| GenerateError {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), GenerateError> {
    std::fs::write(path, bytes).map_err(|source| GenerateError {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn demo() -> Command {
        Command::new("demo")
            .version(VERSION)
            .about("a demo")
            .subcommand(
                Command::new("run")
                    .about("runs")
                    .arg(
                        Arg::new("fast")
                            .long("fast")
                            .action(clap::ArgAction::SetTrue),
                    )
                    .subcommand(Command::new("deep").about("deeper")),
            )
            .subcommand(Command::new("secret").hide(true))
    }

    #[test]
    fn version_names_the_commit() {
        assert!(VERSION.starts_with(env!("CARGO_PKG_VERSION")), "{VERSION}");
        assert!(VERSION.contains(" (git "), "{VERSION}");
        assert!(!VERSION.contains("(git )"), "{VERSION}");
    }

    #[test]
    fn man_pages_for_every_visible_subcommand_and_completions() {
        let dir = tempfile::tempdir().unwrap();
        let done = generate(demo(), dir.path()).unwrap();
        let names: Vec<String> = done.files.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "man/demo.1",
                "man/demo-run.1",
                "man/demo-run-deep.1",
                "completions/demo.bash",
                "completions/_demo"
            ]
        );
        let page = std::fs::read_to_string(dir.path().join("man/demo-run.1")).unwrap();
        assert!(page.contains(".TH demo-run"), "{page}");
        assert!(page.contains("fast"), "{page}");
        let bash = std::fs::read_to_string(dir.path().join("completions/demo.bash")).unwrap();
        assert!(
            bash.contains("complete") && bash.contains("--fast"),
            "{bash}"
        );
        assert!(!names.iter().any(|n| n.contains("secret")), "{names:?}");
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "x").unwrap();
        let err = generate(demo(), &file).unwrap_err();
        assert!(err.to_string().contains("not-a-dir"), "{err}");
    }
}

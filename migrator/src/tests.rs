//! The command line as a whole: every read command answers `--json`, every mutating one has
//! `--dry-run` (issue 22), and the config file and environment reach the real commands.

use super::*;
use std::collections::BTreeMap;

/// Commands that only read: each must have `--json`.
const READ: &[&str] = &[
    "bundle list",
    "bundle show",
    "bundle verify",
    "cron-runs",
    "inventory check",
    "journal",
    "plan diff",
    "plan explain",
    "preflight",
    "routes check",
    "site schema",
    "site show",
    "status",
    "verify",
    "wave status",
];

/// Commands that change something (files, databases, journal, proxies, load balancers...):
/// each must have `--dry-run`.
const MUTATING: &[&str] = &[
    "bundle capture",
    "bundle expire",
    "bundle restore",
    "copy-db",
    "finalize",
    "follow-db",
    "lease-watch",
    "plan",
    "rollback",
    "routes reconcile",
    "site migrate",
    "sync-files",
    "wave cap",
    "wave pause",
    "wave resume",
    "wave run",
    "wave start",
    "wave throttle",
    "worker",
];

/// Neither rule applies, and why.
const EXEMPT: &[(&str, &str)] = &[
    (
        "serve",
        "a server: its reads are its JSON API (/api/...), its wave controls are the \
         journal's, the same as `wave pause|resume|throttle` (which have --dry-run)",
    ),
    (
        "watch",
        "a server: it only reads file metadata (inotify) and answers on its own socket; \
         nothing to rehearse, its answers are a wire protocol, not a report",
    ),
    (
        "receive",
        "internal (hidden): the far end of `sync-files` over SSH, run by it; its writes are \
         sync-files' own, rehearsed by `sync-files --dry-run`",
    ),
    (
        "cron-run",
        "the job wrapper cron runs on both sides: refusing on the side that does not own the \
         site is its whole purpose, and every run or refusal is journaled (`cron-runs`)",
    ),
    (
        "inventory generate",
        "test and benchmark tooling: writes a synthetic inventory into the directory given, \
         touches no system",
    ),
    (
        "site specs-from-lab",
        "lab tooling: writes a site spec file from a running lab's state, touches no system",
    ),
];

/// Every command one can run, as "group sub", with its long flags.
fn runnable(cmd: &clap::Command, prefix: &str, out: &mut BTreeMap<String, Vec<String>>) {
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("{prefix}{}", sub.get_name());
        if !sub.is_subcommand_required_set() || !sub.has_subcommands() {
            let flags = sub
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_string))
                .collect();
            out.insert(name.clone(), flags);
        }
        runnable(sub, &format!("{name} "), out);
    }
}

#[test]
fn every_read_command_has_json_and_every_mutating_one_dry_run() {
    let mut cmd = command(&Default::default());
    cmd.build();
    let mut all = BTreeMap::new();
    runnable(&cmd, "", &mut all);
    let mut problems = Vec::new();
    for (name, flags) in &all {
        let has = |f: &str| flags.iter().any(|x| x == f);
        let listed = [
            READ.contains(&name.as_str()),
            MUTATING.contains(&name.as_str()),
            EXEMPT.iter().any(|(n, _)| n == name),
        ];
        match listed {
            [true, false, false] if !has("json") => problems.push(format!("{name}: no --json")),
            [false, true, false] if !has("dry-run") => {
                problems.push(format!("{name}: no --dry-run"))
            }
            [true, false, false] | [false, true, false] | [false, false, true] => {}
            [false, false, false] => problems.push(format!(
                "{name}: new command: say whether it reads (READ) or changes (MUTATING)"
            )),
            _ => problems.push(format!("{name}: listed twice")),
        }
    }
    let known = READ
        .iter()
        .chain(MUTATING)
        .chain(EXEMPT.iter().map(|(n, _)| n));
    for name in known {
        if !all.contains_key(*name) {
            problems.push(format!("{name}: listed but no such command"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The config file reaches the real commands: the plan of `plan explain`, the socket of the
/// wave's controls and of `wave run`, not the change feed's `watch --socket`.
#[test]
fn the_config_file_fills_the_real_commands_paths() {
    use std::path::PathBuf;
    let file = cmd::config::FileConfig {
        plan: Some("/etc/hostmove/plan.json".into()),
        socket: Some("/run/hostmove/wave.sock".into()),
        ..Default::default()
    };
    let get = |args: &[&str], path: &[&str], id: &str| {
        let m = command(&file).try_get_matches_from(args).unwrap();
        let mut m = &m;
        for p in path {
            m = m.subcommand_matches(p).unwrap();
        }
        m.get_one::<PathBuf>(id).cloned()
    };
    assert_eq!(
        get(
            &["migrator", "plan", "explain", "s1"],
            &["plan", "explain"],
            "plan"
        ),
        Some(PathBuf::from("/etc/hostmove/plan.json"))
    );
    assert_eq!(
        get(
            &["migrator", "plan", "--inventory", "inv"],
            &["plan"],
            "out"
        ),
        Some(PathBuf::from("/etc/hostmove/plan.json"))
    );
    assert_eq!(
        get(&["migrator", "wave", "pause"], &["wave", "pause"], "socket"),
        Some(PathBuf::from("/run/hostmove/wave.sock"))
    );
    assert_eq!(
        get(
            &["migrator", "watch", "/srv", "--socket", "/tmp/feed.sock"],
            &["watch"],
            "socket"
        ),
        Some(PathBuf::from("/tmp/feed.sock"))
    );
    let err = command(&file)
        .try_get_matches_from(["migrator", "watch", "/srv"])
        .unwrap_err();
    assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    // --help names the variables.
    let help = command(&file)
        .find_subcommand_mut("status")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(help.contains("HOSTMOVE_JOURNAL"), "{help}");
}

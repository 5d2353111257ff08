//! `migrator inventory generate --artifacts` and `inventory check` on artifacts.jsonl (issue
//! 20): a generated file checks clean with its counts; a malformed cron line, an unknown PHP
//! version and a line for a site not in the inventory are each refused naming the file, line
//! and field, and the command fails.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

fn migrator(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("migrator {}\n{stdout}{stderr}", args.join(" "));
    (out.status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn generated_artifacts_check_clean_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let inv = dir.path().join("inv");
    let inv_s = inv.display().to_string();
    let (rc, out, _) = migrator(&[
        "inventory",
        "generate",
        "--sites",
        "300",
        "--seed",
        "3",
        "--out",
        &inv_s,
        "--artifacts",
        "--json",
    ]);
    assert_eq!(rc, 0);
    let g: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let with = g["artifacts"]["sites"].as_u64().unwrap();
    assert!(with > 100 && with <= 300, "{g}");
    let (rc, out, _) = migrator(&["inventory", "check", "--inventory", &inv_s, "--json"]);
    assert_eq!(rc, 0);
    let c: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["valid"], true);
    assert_eq!(
        c["artifacts"], g["artifacts"],
        "check counts what generate wrote"
    );

    // Three bad lines appended after the generated ones.
    let path = inv.join("artifacts.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().count();
    let site = |l: &str| serde_json::from_str::<serde_json::Value>(l).unwrap()["site"].clone();
    let known = site(text.lines().next().unwrap());
    // A site already given is refused too: make the three lines name unlisted sites.
    let sites: Vec<String> = std::fs::read_to_string(inv.join("sites.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let listed: std::collections::HashSet<String> = text
        .lines()
        .map(|l| site(l).as_str().unwrap().to_string())
        .collect();
    let free: Vec<&String> = sites.iter().filter(|s| !listed.contains(*s)).collect();
    assert!(free.len() >= 2, "every site got artifacts: {known}");
    text.push_str(&format!(
        "{{\"site\":\"{}\",\"artifacts\":{{\"cron\":[{{\"name\":\"j\",\"schedule\":\"* * *\",\"command\":\"true\",\"user\":\"www-data\"}}]}}}}\n",
        free[0]
    ));
    text.push_str(&format!(
        "{{\"site\":\"{}\",\"artifacts\":{{\"php\":{{\"version\":\"4.4\"}}}}}}\n",
        free[1]
    ));
    text.push_str("{\"site\":\"no-such-site\",\"artifacts\":{}}\n");
    std::fs::write(&path, text).unwrap();
    let (rc, _, err) = migrator(&["inventory", "check", "--inventory", &inv_s]);
    assert_eq!(rc, 1);
    for (n, field) in [
        (first + 1, "artifacts.cron[0].schedule"),
        (first + 2, "artifacts.php.version"),
        (first + 3, "site"),
    ] {
        let want = format!("artifacts.jsonl:{n}: field `{field}`");
        assert!(err.contains(&want), "{want} not in:\n{err}");
    }
    let (rc, out, _) = migrator(&["inventory", "check", "--inventory", &inv_s, "--json"]);
    assert_eq!(rc, 1);
    let c: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(c["valid"], false);
    assert_eq!(c["errors"].as_array().unwrap().len(), 3);
}

//! The SQLite journal against real files.

use super::*;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Progress {
    table: String,
    last_pk: Vec<String>,
}

#[test]
fn state_names_round_trip() {
    for st in SiteState::ALL {
        assert_eq!(st.as_str().parse(), Ok(st));
        assert_eq!(st.to_string(), st.as_str());
        assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
    }
    let err = "bogus".parse::<SiteState>().unwrap_err();
    assert!(err
        .to_string()
        .starts_with("unknown site state \"bogus\" (expected one of planned, "));
    assert!(err.to_string().ends_with("rolled_back)"), "{err}");
}

/// The `sites` table holds the states' names as text; a name this migrator does not know is
/// an error naming the journal, the site and the value, never a silent default.
#[test]
fn an_unknown_state_on_disk_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let mut j = SqliteJournal::open(&path).unwrap();
    j.set_site_state("shop", SiteState::RolledBack).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let raw: String = conn
        .query_row("SELECT state FROM sites WHERE site = 'shop'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(raw, "rolled_back", "the on-disk text is the journal name");
    conn.execute(
        "UPDATE sites SET state = 'teleported' WHERE site = 'shop'",
        [],
    )
    .unwrap();
    for err in [j.site_state("shop").unwrap_err(), j.sites().unwrap_err()] {
        let text = err.to_string();
        assert!(
            matches!(&err, JournalError::UnknownState { site, state, .. }
                if site == "shop" && state == "teleported"),
            "{text}"
        );
        assert!(
            text.contains("site shop has unknown state \"teleported\""),
            "{text}"
        );
    }
}

#[test]
fn steps_and_checkpoints_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    {
        let mut j = SqliteJournal::open(&path).unwrap();
        j.set_plan("plan.json@v3").unwrap();
        j.set_site_state("shop", SiteState::Prepared).unwrap();
        let a = j.begin_step("shop", "sync-files").unwrap();
        j.finish_step(
            a,
            &StepOutcome {
                bytes: 42,
                checksum: Some("abc".into()),
            },
        )
        .unwrap();
        let b = j.begin_step("shop", "copy-db").unwrap();
        j.put_checkpoint(
            "copy-db:shop",
            "orders",
            &Progress {
                table: "orders".into(),
                last_pk: vec!["17".into()],
            },
        )
        .unwrap();
        // `b` is never finished: as if the process were killed during the step.
        let _ = b;
    }
    let j = SqliteJournal::open(&path).unwrap();
    assert_eq!(j.plan().unwrap().as_deref(), Some("plan.json@v3"));
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Prepared));
    assert_eq!(j.site_state("other").unwrap(), None);
    let steps = j.steps("shop").unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].status, StepStatus::Done);
    assert_eq!(steps[0].bytes, 42);
    assert_eq!(steps[0].checksum.as_deref(), Some("abc"));
    assert_eq!(steps[1].status, StepStatus::Started);
    assert_eq!(steps[1].ended_ms, None);
    let p: Progress = j.checkpoint("copy-db:shop", "orders").unwrap().unwrap();
    assert_eq!(p.last_pk, vec!["17".to_string()]);
}

#[test]
fn failed_step_keeps_error_and_unknown_step_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = SqliteJournal::open(&dir.path().join("j.sqlite")).unwrap();
    let id = j.begin_step("s", "verify").unwrap();
    j.fail_step(id, "table t differs").unwrap();
    let steps = j.steps("s").unwrap();
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert_eq!(steps[0].error.as_deref(), Some("table t differs"));
    assert!(matches!(
        j.finish_step(999, &StepOutcome::default()),
        Err(JournalError::NoSuchStep { id: 999, .. })
    ));
}

#[test]
fn bad_checkpoint_json_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = SqliteJournal::open(&dir.path().join("j.sqlite")).unwrap();
    j.put_checkpoint_raw("scope", "k", "{\"nope\": 1}").unwrap();
    let err = j.checkpoint::<Progress>("scope", "k").unwrap_err();
    assert!(matches!(err, JournalError::Checkpoint { ref key, .. } if key == "k"));
    j.clear_checkpoints("scope").unwrap();
    assert!(j.checkpoint::<Progress>("scope", "k").unwrap().is_none());
}

//! `finalize --drop-old-copies` (issue 19) against a real old MariaDB server and real homes:
//! refused while the site is not finalized and when it was finalized with an override (no
//! verified bundle); with a verified bundle the old databases the proxy serves from the new
//! side and the old home are dropped, a database still served from the old side is kept, the
//! drop is journaled as `release-old`, and a rerun finds the copies gone.

mod bundle_support;

use bundle_support::{capture, text, Bed};
use migrator::bundle::state::{self, Stage};
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::release_old::{plan, release, CopyState, OldCopy};
use migrator::site_spec::SpecFile;

fn schemata(bed: &Bed) -> String {
    bed.old
        .exec("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'rel_%' ORDER BY 1")
        .unwrap()
}

#[test]
fn old_copies_are_dropped_only_for_a_finalized_site_with_a_verified_bundle() {
    let bed = Bed::start(
        &[("rel", &["rel_own", "rel_shared"])],
        "CREATE DATABASE rel_own; CREATE TABLE rel_own.t (id INT PRIMARY KEY); \
         INSERT INTO rel_own.t VALUES (1); \
         CREATE DATABASE rel_shared; CREATE TABLE rel_shared.t (id INT PRIMARY KEY);",
    );
    let d = bed.d();
    bed.switch("rel", &["rel_own", "rel_shared"]);
    let file = SpecFile::load(&d.join("sites.json")).unwrap();
    let spec = file.site("rel").unwrap();
    let home = spec.homes[0].old.clone();
    assert!(home.join("www/index.php").exists());
    // What finalize found: the proxy serves rel_own from the new side, rel_shared (shared with
    // a site that did not move) still from the old one.
    let f = migrator::finalize::Finalized {
        site: "rel".into(),
        already: false,
        old_homes: vec![home.clone()],
        old_databases: vec!["rel_own".into()],
        in_use_on_old: vec!["rel_shared".into()],
    };
    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();

    // Live, not finalized: refused.
    let e = release(&mut j, spec, &f).unwrap_err().to_string();
    assert!(e.contains("live, not finalized"), "{e}");
    // Finalized with an override (no bundle): refused, nothing dropped.
    j.set_site_state("rel", SiteState::Finalized).unwrap();
    let e = release(&mut j, spec, &f).unwrap_err().to_string();
    assert!(
        e.contains("no bundle") && e.contains("only once the bundle is verified"),
        "{e}"
    );
    assert_eq!(schemata(&bed), "rel_own\nrel_shared\n");
    assert!(home.exists());
    // The dry run's view: both copies there.
    let p = plan(spec, &f).unwrap();
    assert_eq!(
        p,
        vec![
            CopyState {
                copy: OldCopy::Database {
                    name: "rel_own".into()
                },
                existed: true,
                dropped: false
            },
            CopyState {
                copy: OldCopy::Home { path: home.clone() },
                existed: true,
                dropped: false
            },
        ]
    );

    // A captured but unverified bundle is not enough either.
    drop(j);
    let o = capture(d, "rel", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    assert_eq!(
        state::get(&j, "rel").unwrap().unwrap().stage,
        Stage::Captured
    );
    assert!(release(&mut j, spec, &f).is_err());
    assert_eq!(schemata(&bed), "rel_own\nrel_shared\n");

    // Verified: dropped, the shared database kept, journaled.
    drop(j);
    let o = capture(d, "rel", &["--verify-scratch-url-file", &bed.scratch()]);
    assert!(o.status.success(), "{}", text(&o));
    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    assert_eq!(
        state::get(&j, "rel").unwrap().unwrap().stage,
        Stage::Verified
    );
    let r = release(&mut j, spec, &f).unwrap();
    assert!(r.iter().all(|c| c.existed && c.dropped), "{r:?}");
    assert_eq!(schemata(&bed), "rel_shared\n");
    assert!(!home.exists());
    let step = j
        .steps("rel")
        .unwrap()
        .into_iter()
        .rfind(|s| s.phase == "release-old")
        .unwrap();
    assert_eq!(step.status, migrator::journal::StepStatus::Done);
    assert!(step.bytes > 0, "{step:?}: the home's bytes");
    // Rerun: nothing left to drop, nothing fails.
    let r = release(&mut j, spec, &f).unwrap();
    assert!(r.iter().all(|c| !c.existed && !c.dropped), "{r:?}");
    assert_eq!(j.site_state("rel").unwrap(), Some(SiteState::Finalized));
}

//! A bundle capture yields to freezes (issue 19: "the freeze with capture on vs off must be
//! unchanged"): the real `migrator bundle capture` against a real MariaDB server makes no
//! progress while another migrator (here: this test process) holds a freeze lease in the
//! shared journal — neither before its first part nor in the middle of one — and resumes and
//! completes once the lease is released, reporting its pauses.

mod bundle_support;

use bundle_support::{capture_cmd, text, Bed};
use migrator::cutover::lease;
use migrator::journal::SqliteJournal;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// Bytes under the bundle store (the parts being written and the finished ones).
fn stored(d: &Path) -> u64 {
    walkdir::WalkDir::new(d.join("store"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

fn still_running(child: &mut Child) {
    if child.try_wait().unwrap().is_some() {
        let o = std::mem::replace(child, std::process::Command::new("true").spawn().unwrap());
        panic!(
            "the capture ended while a site was frozen: {}",
            text(&o.wait_with_output().unwrap())
        );
    }
}

#[test]
fn a_capture_makes_no_progress_while_a_freeze_lease_is_held_and_resumes_after() {
    // ~2 MiB of dump: at 1 MiB/s the part takes about two seconds.
    let sql = "SET SESSION max_recursive_iterations = 100000; CREATE DATABASE big_a; \
               CREATE TABLE big_a.t (id INT PRIMARY KEY, pad VARCHAR(300)); \
               INSERT INTO big_a.t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL \
               SELECT n + 1 FROM s WHERE n < 8000) SELECT n, REPEAT(MD5(n), 8) FROM s;";
    let bed = Bed::start(&[("big", &["big_a"]), ("other", &[])], sql);
    let d = bed.d();
    bed.switch("big", &["big_a"]);
    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    // Another site of the fleet is frozen (this process is its live migrator).
    lease::take(&mut j, "other", Duration::from_secs(120)).unwrap();

    let mut child = capture_cmd(d, "big", &["--max-rate", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Frozen before the capture started: it does not start its part.
    std::thread::sleep(Duration::from_millis(1500));
    still_running(&mut child);
    assert_eq!(stored(d), 0, "the capture wrote while a site was frozen");

    // Unfrozen: it starts; frozen again mid-part: it stops there.
    lease::release(&mut j, "other").unwrap();
    let start = Instant::now();
    while stored(d) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no progress after the freeze lease was released"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    lease::take(&mut j, "other", Duration::from_secs(120)).unwrap();
    // What was already read when the freeze began is written out, then nothing more. Written
    // out: no change for 500 ms (a fixed 500 ms after the freeze could still see it written
    // on a loaded machine); a capture that keeps writing never gets there.
    let at_pause = {
        let start = Instant::now();
        let (mut last, mut since) = (stored(d), Instant::now());
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = stored(d);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_millis(500) {
                break last;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the capture kept writing after a site was frozen"
            );
        }
    };
    std::thread::sleep(Duration::from_millis(1500));
    still_running(&mut child);
    assert_eq!(
        stored(d),
        at_pause,
        "the capture made progress while a site was frozen"
    );

    // Released: it resumes and completes, and says it paused.
    lease::release(&mut j, "other").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = &v[0];
    assert!(r["pauses"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["paused_seconds"].as_f64().unwrap() >= 2.5, "{r}");
    assert!(stored(d) > at_pause, "{r}");
}

//! `--bundle-store` of `wave run` and `worker`: each site's consistency-point bundle captured
//! by a background thread ([`migrator::bundle::job::Background`]) as soon as the site is live,
//! while the run goes on with its other sites.

use super::Common;
use clap::Args;
use migrator::bundle::job::{Background, BackgroundJob};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The bundle flags of `wave run` and `worker`.
#[derive(Args, Debug, Clone)]
pub struct BundleArgs {
    /// Capture each site's consistency-point bundle into this directory as soon as the site
    /// is live (after its unfreeze), in a background thread while the run goes on (from the
    /// old side, throttled, nice 10: no freeze is longer); the run's end waits for the last
    /// one. `wave run` also captures, at its end, the wave's sites live before it (a complete
    /// bundle is kept as it is).
    #[arg(long, value_name = "DIR", requires = "bundle_key")]
    pub bundle_store: Option<PathBuf>,
    /// The bundles' signing key (created, mode 0600, when missing).
    #[arg(long, value_name = "FILE")]
    pub bundle_key: Option<PathBuf>,
    /// Verify each bundle after its capture on this scratch server (0600 URL file).
    #[arg(long, value_name = "FILE", requires = "bundle_store")]
    pub bundle_verify_scratch_url_file: Option<PathBuf>,
    /// MiB per second the bundles read from the old side (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 50)]
    pub bundle_max_rate: u64,
}

impl BundleArgs {
    /// `None`: no --bundle-store, or a dry run (nothing is captured).
    pub(super) fn get(self, dry_run: bool) -> Option<Bundles> {
        match (self.bundle_store, self.bundle_key) {
            (Some(store), Some(key)) if !dry_run => Some(Bundles {
                store,
                key,
                scratch: self.bundle_verify_scratch_url_file,
                rate: (self.bundle_max_rate > 0).then_some(self.bundle_max_rate << 20),
            }),
            _ => None,
        }
    }
}

/// `wave run --bundle-store`: where and how the wave's bundles are captured.
pub(super) struct Bundles {
    store: PathBuf,
    key: PathBuf,
    scratch: Option<PathBuf>,
    /// Bytes per second (`None`: no limit).
    rate: Option<u64>,
}

impl Bundles {
    fn options(&self) -> migrator::bundle::capture::CaptureOptions {
        migrator::bundle::capture::CaptureOptions {
            rate: self.rate,
            ..Default::default()
        }
    }

    /// The capture thread; its lines on stderr with `stderr` (`--json`).
    pub(super) fn start(&self, journal: &Path, stderr: bool) -> anyhow::Result<Background> {
        use migrator::bundle::store::LocalStore;
        let job = BackgroundJob {
            journal: journal.to_path_buf(),
            store: Arc::new(LocalStore::new(&self.store)),
            key: migrator::bundle::sign::load_or_create(&self.key)?,
            opts: self.options(),
            scratch: self
                .scratch
                .as_deref()
                .map(|f| crate::cmd::bundle::url_file("--bundle-verify-scratch-url-file", f))
                .transpose()?,
        };
        Ok(Background::start(job, move |r| {
            crate::cmd::bundle::print_bundle(r, stderr)
        }))
    }

    /// Waits for the capture thread, then captures the wave's live sites it was not given
    /// (live before this run); exit code 0 when every bundle is done (and verified if asked).
    pub(super) fn finish(
        &self,
        bg: Background,
        given: &[String],
        all: &[String],
        journal: &Path,
        common: &Common,
    ) -> anyhow::Result<i32> {
        let failed = bg.finish().iter().filter(|r| !r.ok()).count();
        let rest: Vec<String> = all.iter().filter(|s| !given.contains(s)).cloned().collect();
        let store = crate::cmd::bundle::StoreArgs::local(&self.store);
        let job = crate::cmd::bundle::CaptureJob {
            sites: &common.sites,
            journal,
            store: &store,
            key: &self.key,
            opts: self.options(),
            verify_scratch_url_file: self.scratch.as_deref(),
            only_live: true,
            dry_run: false,
            json: false,
            stderr: common.json,
        };
        let code = if rest.is_empty() { 0 } else { job.run(&rest)? };
        Ok(if failed == 0 { code } else { 1 })
    }
}

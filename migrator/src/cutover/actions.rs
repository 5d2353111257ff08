//! Actions on the outside systems that the cutover and the rollback share ([`Ctx`]): one copy
//! pass, pointing the old VIP's server, draining in-flight requests, checking the new backend,
//! pointing hosted DNS, and [`Ctx::point_site_at`] which does all of a switch to one side.

use crate::cutover::engine::{Ctx, DRAIN_WAIT};
use crate::cutover::phase::{CutoverError, Phase};
use crate::site_spec::SiteSpec;
use crate::systems::{Dc, Direction};
use std::time::{Duration, Instant};

impl Ctx<'_> {
    /// Sets the site's server on `dc`'s load balancer to `state` (read back); an error names
    /// the DC and `phase`.
    pub(crate) fn set_admin(
        &self,
        spec: &SiteSpec,
        dc: Dc,
        state: drivers::lb::AdminState,
        phase: Phase,
    ) -> Result<(), CutoverError> {
        let (lb, s) = match dc {
            Dc::Old => (&self.sys.lb_old, &spec.old_lb),
            Dc::New => (&self.sys.lb_new, &spec.new_lb),
        };
        lb.set_server_admin(&s.backend, &s.server, state)
            .map_err(|x| crate::systems::SystemError::from_driver("haproxy", dc, x))
            .map_err(CutoverError::system(phase))
    }

    /// One copy pass of the site in `dir`: its files, then `dbs` (only changed tables when
    /// `delta`). Returns the bytes moved. Sync, final sync and rollback share it.
    pub(crate) fn copy_pass(
        &self,
        spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
        phase: Phase,
    ) -> Result<u64, CutoverError> {
        let files = self
            .sys
            .data
            .sync_files(spec, dir)
            .map_err(CutoverError::system(phase))?;
        let db = self
            .sys
            .data
            .copy_dbs(spec, dbs, dir, delta)
            .map_err(CutoverError::system(phase))?;
        Ok(files + db)
    }

    /// The freeze's copy pass (old → new): the files, then the tail of `dbs`
    /// ([`crate::systems::DataMover::tail_dbs`]). Returns the bytes moved.
    pub(crate) fn tail_pass(&self, spec: &SiteSpec, dbs: &[String]) -> Result<u64, CutoverError> {
        let phase = Phase::FinalSync;
        let files = self
            .sys
            .data
            .sync_files(spec, Direction::Forward)
            .map_err(CutoverError::system(phase))?;
        let db = self
            .sys
            .data
            .tail_dbs(spec, dbs)
            .map_err(CutoverError::system(phase))?;
        Ok(files + db)
    }

    /// Points the old VIP's HAProxy server for the site at `web` (the driver reads the change
    /// back); nothing to do when it already points there. Switch, abort and rollback share it.
    pub(crate) fn point_old_vip_at(
        &self,
        spec: &SiteSpec,
        web: std::net::SocketAddr,
        phase: Phase,
    ) -> Result<(), CutoverError> {
        let drv =
            |x| crate::systems::SystemError::from_driver("haproxy", crate::systems::Dc::Old, x);
        let (backend, server) = (&spec.old_lb.backend, &spec.old_lb.server);
        let cur = self
            .sys
            .lb_old
            .server_state(backend, server)
            .map_err(drv)
            .map_err(CutoverError::system(phase))?;
        if cur.addr != web {
            self.sys
                .lb_old
                .set_server_addr(backend, server, web)
                .map_err(drv)
                .map_err(CutoverError::system(phase))?;
        }
        Ok(())
    }

    /// Waits (up to [`DRAIN_WAIT`]) until the old VIP's server of the site, already in
    /// maintenance, has no request in flight: a request admitted just before the freeze must
    /// finish (its upload written, its database write done) before the databases pause and the
    /// final copy starts. Past the wait the freeze fails, so the site aborts to the old side.
    pub(crate) fn drain_old_web(&self, spec: &SiteSpec) -> Result<(), CutoverError> {
        self.drain(spec, crate::systems::Dc::Old, Phase::Freeze)
    }

    /// Waits (up to [`DRAIN_WAIT`]) until the site's HAProxy server on the `dc` VIP, already in
    /// maintenance, has no request in flight; an error of `phase` past the wait.
    pub(crate) fn drain(
        &self,
        spec: &SiteSpec,
        dc: crate::systems::Dc,
        phase: Phase,
    ) -> Result<(), CutoverError> {
        let (lb, lbs) = match dc {
            crate::systems::Dc::Old => (self.sys.lb_old.as_ref(), &spec.old_lb),
            crate::systems::Dc::New => (self.sys.lb_new.as_ref(), &spec.new_lb),
        };
        let (b, s) = (&lbs.backend, &lbs.server);
        let deadline = Instant::now() + DRAIN_WAIT;
        loop {
            let n = lb
                .in_flight(b, s)
                .map_err(|x| crate::systems::SystemError::from_driver("haproxy", dc, x))
                .map_err(CutoverError::system(phase))?;
            if n == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(CutoverError::system(phase)(crate::systems::SystemError {
                    system: "haproxy",
                    dc,
                    message: format!(
                        "{b}/{s}: {n} request(s) still in flight {} s after maintenance",
                        DRAIN_WAIT.as_secs()
                    ),
                    retryable: true,
                }));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The new VIP's HAProxy must already have the site's backend server (the runtime API
    /// cannot create backends): it is pointed at the new web server when it is not yet (read
    /// back) and stays in maintenance until the unfreeze.
    pub(crate) fn new_backend_ready(&self, spec: &SiteSpec) -> Result<(), CutoverError> {
        let drv =
            |x| crate::systems::SystemError::from_driver("haproxy", crate::systems::Dc::New, x);
        let (b, s) = (&spec.new_lb.backend, &spec.new_lb.server);
        let err = || CutoverError::system(Phase::Prepare);
        let cur = self
            .sys
            .lb_new
            .server_state(b, s)
            .map_err(drv)
            .map_err(err())?;
        if cur.addr != spec.new_web {
            self.sys
                .lb_new
                .set_server_addr(b, s, spec.new_web)
                .map_err(drv)
                .map_err(err())?;
        }
        Ok(())
    }

    /// Moves the site's hosted DNS name (when we host it) to `vip`, confirmed on every
    /// authoritative server; nothing to do when it already answers `vip`.
    pub(crate) fn point_dns_at(
        &self,
        spec: &SiteSpec,
        vip: std::net::IpAddr,
        phase: Phase,
    ) -> Result<(), CutoverError> {
        if let (Some(dns), Some(d)) = (&self.sys.dns, &spec.dns) {
            let t = d.target();
            let cur = dns
                .current(t.name)
                .map_err(|x| crate::systems::SystemError::from_dns(crate::systems::Dc::Old, x))
                .map_err(CutoverError::system(phase))?;
            if cur != [vip] {
                dns.replace_confirmed(t.name, &cur, &[vip], t.low_ttl)
                    .map_err(|x| crate::systems::SystemError::from_dns(crate::systems::Dc::New, x))
                    .map_err(CutoverError::system(phase))?;
            }
        }
        Ok(())
    }

    /// A switch in either direction: the old VIP's server at `web`, DNS at `vip`, then every
    /// paused database of the site resumed on `side` (the commit point: writes land there).
    /// Each action checks the system first. Switch and rollback share it.
    pub(crate) fn point_site_at(
        &self,
        spec: &SiteSpec,
        web: std::net::SocketAddr,
        vip: std::net::IpAddr,
        side: &str,
        phase: Phase,
    ) -> Result<(), CutoverError> {
        let err = || CutoverError::system(phase);
        self.point_old_vip_at(spec, web, phase)?;
        self.point_dns_at(spec, vip, phase)?;
        for db in &spec.databases {
            let r = self.sys.proxy.route(db).map_err(err())?;
            if r.paused() {
                self.sys.proxy.resume(db, Some(side)).map_err(err())?;
            } else if r.side != side {
                // Open on the other side: something moved it since this site's freeze paused
                // it (another site sharing it, an operator). Declaring the switch done would
                // leave the site's web on one side and its writes on the other.
                return Err(err()(crate::systems::SystemError::new(
                    "sql-proxy",
                    crate::systems::Dc::Old,
                    format!(
                        "database {db} is open on side {:?}, not paused: the switch to {side:?} \
                         cannot take it (it was moved since the freeze paused it)",
                        r.side
                    ),
                )));
            }
        }
        Ok(())
    }
}

//! `migrator watch`: the change feed a sync pass uses instead of walking an unchanged home.

use anyhow::Context;
use clap::{Args, Subcommand};
use migrator::files::watch::{WatchOptions, Watcher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Source roots (site homes) to watch, recursively: one inotify watch per directory.
    #[arg(required = true, value_name = "ROOT")]
    pub roots: Vec<PathBuf>,
    /// The unix socket to serve checkpoints on (created 0600; an existing looser one, or one
    /// another watcher answers on, is refused). Give the same path to `sync-files --feed`.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// More changed entries than this between two passes: the feed gives up for that epoch
    /// and the next pass walks everything (cheaper than re-stating a huge list).
    #[arg(long, value_name = "N", default_value_t = migrator::files::feed::DEFAULT_MAX_DIRTY)]
    pub max_dirty: usize,
}

#[derive(Subcommand, Debug)]
pub enum WatchCommand {
    /// Watch site homes with inotify so `sync-files --feed SOCKET` re-stats only what changed
    /// since its last pass instead of walking every file.
    ///
    /// Run it WHERE THE WRITES LAND: on the web host that writes the files, or on the filer
    /// that owns the disk. inotify on an NFS client sees only that client's own writes, never
    /// other clients' or the server's: a watcher there would report "nothing changed" while
    /// files change. Not seen either: writes through a shared mmap, and writes through a hard
    /// link whose other name is outside the watched root. So `sync-files --full`,
    /// `--checksum`, `migrator verify` and the cutover's final pass inside the freeze always
    /// walk everything.
    ///
    /// Any doubt means a full walk, never a skipped file: a restarted watcher (new feed id), a
    /// checkpoint of the same site/destination taken by something else between two passes, an inotify queue overflow, a
    /// watch that could not be added (raise fs.inotify.max_user_watches: one watch per
    /// directory), or a socket that is missing or silent for 2 s.
    ///
    /// The socket is local to the watcher's host. With the watcher on a filer, forward it
    /// (`ssh -N -L /run/feed.sock:/run/feed.sock filer`) and name the root as the filer sees
    /// it: `sync-files alice --src /mnt/homez.1/alice --feed /run/feed.sock
    /// --feed-root /export/homez.1/alice`.
    ///
    /// Example, all on one host:
    ///   migrator watch /homez.1/alice --socket /run/feed.sock &
    ///   migrator sync-files alice --src /homez.1/alice --dst ssh://new/homez.9/alice
    ///       --journal j.sqlite --feed /run/feed.sock --json
    /// (the JSON's `feed` and `source_entries_statted` say what the feed saved).
    ///
    /// Stops on SIGTERM or SIGINT and removes its socket.
    #[command(verbatim_doc_comment)]
    Watch(WatchArgs),
}

pub fn run(command: WatchCommand) -> anyhow::Result<i32> {
    let WatchCommand::Watch(a) = command;
    let opts = WatchOptions {
        socket: a.socket.clone(),
        roots: a.roots.clone(),
        max_dirty: a.max_dirty,
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut w = Watcher::start(&opts).context("migrator watch")?;
    eprintln!(
        "watching {} directories under {} (feed {}); checkpoints on {}",
        w.watches(),
        a.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        w.feed_id(),
        a.socket.display()
    );
    w.run(&STOP).context("migrator watch")?;
    Ok(0)
}

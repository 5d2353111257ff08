//! The long help of `migrator bundle` and its subcommands (`--help`): written for an
//! operator, with the commands to run.

pub(super) const ABOUT_HELP: &str = "\
A bundle is a site's state at the instant its writes moved to the new side: per database a
compressed dump restorable with the stock client, per home the file manifest (paths, sizes,
modes, BLAKE3) and optionally a tar, and a manifest with the switch instant, the table
checksums the cutover journaled at the switch, the size and BLAKE3 of every part, signed with
an ed25519 key. It is captured from the OLD side after the switch (nothing writes there any
more), so the freeze is not made longer.

The life of a bundle:
  migrator bundle capture shop --sites S --journal J --store /srv/bundles --key K
  migrator bundle verify shop/1733450000000 --store /srv/bundles --public-key K.pub \\
      --scratch-url-file /etc/migrator/scratch.url --journal J
  migrator finalize shop ...          (refused until the bundle is verified)
  migrator bundle expire --store /srv/bundles        (daily: deletes expired bundles)

By hand, without the migrator:
  zstd -dc db-shop_db-*.sql.zst | mariadb NEWNAME   (after CREATE DATABASE NEWNAME)
  zstd -dc home-*.tar.zst | tar -x -C DIR";

pub(super) const CAPTURE_HELP: &str = "\
Captures the site's bundle from its old side. The site must be live (or finalized): the
journal's last finished `switch` names the bundle (SITE/SWITCH_MS). `wave run` and `worker`
with --bundle-store capture each site this way as soon as it is live; run this command for
sites moved without it, any time before the old side is released (finalize
--drop-old-copies). It reads the old SQL server (mariadb-dump, --single-transaction) and the
old homes, at most --max-rate MiB/s.

Killed or failed: run it again. Parts finished before are re-hashed and kept; only the part
being written is redone. A complete bundle is never rewritten (`already complete`).

The signing key (--key) is created when missing (mode 0600) with its public key next to it
(KEY.pub): give that file to whoever verifies bundles.

Exit codes: 0 captured (or already complete), 1 refused or failed (the journal records the
bundle as failed, with the reason), 2 the command itself failed.";

pub(super) const VERIFY_HELP: &str = "\
Checks, in order: the manifest's signature against --public-key; every part's size and
BLAKE3 (an altered or missing part is named); then, unless --no-restore, each database dump
is restored into a scratch database on the --scratch-url-file server (named
bundle_verify_<db>_<random>, dropped afterwards) and every table's checksum compared with the
checksum journaled at the switch.

With --journal the site's bundle state becomes `verified` or `failed`: `migrator finalize`
refuses a site whose bundle is not verified.

Exit codes: 0 verified, 1 a problem (each printed), 2 the command itself failed.";

pub(super) const RESTORE_HELP: &str = "\
Recreates one database, under a name you choose, on the server of --url-file:
  migrator bundle restore shop/1733450000000 --store S --public-key K.pub \\
      --db shop_db --as shop_db_at_switch --url-file /etc/migrator/old.url
or one home (captured with --tar) into a directory that is missing or empty:
  migrator bundle restore shop/1733450000000 --store S --public-key K.pub \\
      --home /homez.1/shop --into /srv/restore/shop

Never overwrites: an existing database name or a non-empty directory is refused. The
signature and the part's hash are checked first; a tampered bundle restores nothing.";

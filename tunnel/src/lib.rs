//! WireGuard links between datacenters: config, keys, backends (kernel or userspace
//! `wireguard-go`), reconcile (`plan`/`up`/`down`) and health (`status`/`check`).

//! The staging lab: two datacenters on one machine (network namespaces) with real MariaDB,
//! nginx + php-fpm, HAProxy, Knot DNS, sshd and a WireGuard tunnel; scenario files for dry runs.

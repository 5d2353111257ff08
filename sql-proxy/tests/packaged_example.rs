//! The example config the package installs (/etc/hostmove/sql-proxy.toml.example) is valid:
//! an operator who copies it gets a config the proxy accepts.

#[test]
fn the_packaged_example_config_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/sql-proxy.toml");
    let cfg = sql_proxy::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.default_side, "old");
    assert!(cfg.backends.contains_key("new"));
}

//! The example config the package installs (/etc/hostmove/tunnel.toml.example) is valid: an
//! operator who copies it gets a config the tunnel accepts.

#[test]
fn the_packaged_example_config_loads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/etc/tunnel.toml");
    let cfg = tunnel::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = cfg.datacenters.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["old-dc", "new-dc"]);
}

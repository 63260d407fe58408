//! The checked-in CRDs are what the Rust types generate.

#[test]
fn checked_in_crds_match_the_rust_types() {
    let stale = manifests::stale(&manifests::crd_dir()).expect("reading manifests/crds");
    assert!(
        stale.is_empty(),
        "stale CRDs: {stale:?}; run `cargo run -p manifests --bin crdgen` and commit the result"
    );
}

#[test]
fn crds_are_the_kubeedge_group_and_version() {
    for (file, crd) in manifests::crds() {
        assert_eq!(crd.spec.group, "devices.kubeedge.io", "{file}");
        assert!(
            crd.spec
                .versions
                .iter()
                .any(|v| v.name == "v1beta1" && v.served && v.storage),
            "{file}"
        );
        assert!(file.starts_with("devices.kubeedge.io_"));
    }
}

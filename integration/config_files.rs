//! Config files as users write them: every example in `config/` is valid, and errors name the
//! file, line and column.

use crate::support::run_lbd;

#[test]
fn every_example_config_passes_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "yaml") {
            continue;
        }
        let (code, stdout, stderr) = run_lbd(&["--check", "--config", path.to_str().unwrap()]);
        checked += 1;
        if code == 2 {
            // Valid, for a host with other interfaces than this one (config/lvs.yaml's br0),
            // or one that reaches the cluster's etcd (config/cluster.yaml's 10.0.0.5-7).
            assert!(
                stderr.contains("valid, but the host lacks")
                    && (stderr.contains("does not exist") || stderr.contains("stored table: etcd")),
                "{}: {stderr}",
                path.display()
            );
            continue;
        }
        assert_eq!(code, 0, "{}: {stderr}", path.display());
        assert!(stdout.contains(": OK ("), "{stdout}");
    }
    assert!(checked >= 2, "config/ holds the examples");
}

#[test]
fn check_reports_file_line_column_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    reals:\n      - address: 10.0.0.1:80\n        weight: 70000\n").unwrap();
    let (code, _, stderr) = run_lbd(&["--check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    let expected = format!(
        "lbd: {}:5:9: services[0].reals[0]: weight 70000 is out of range 0..65535",
        path.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_missing_file_is_named() {
    let (code, _, stderr) = run_lbd(&["--check", "--config", "/nonexistent/lbd.yaml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("/nonexistent/lbd.yaml: cannot read the config file"),
        "{stderr}"
    );
}

#[test]
fn a_bad_start_config_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lbd.yaml");
    std::fs::write(&path, "services:\n  - protocol: sctp\n    listen: 127.0.0.1:80\n").unwrap();
    let (code, _, stderr) = run_lbd(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(":2:15: services[0].protocol: unknown variant `sctp`"),
        "{stderr}"
    );
}

//! The `--json` outputs scripts read: one JSON object, the same facts as the text.

mod common;

use common::{scratch_dir, tapflow};

#[test]
fn check_config_json_lists_every_problem_with_its_place() {
    let dir = scratch_dir("check-json");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[cache]\ncapactiy = 5\n\n[[collector]]\naddress = \"127.0.0.1:2055\"\nmtu = 10\n",
    )
    .unwrap();
    let out = tapflow()
        .args(["check-config", "--json", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problems = report["problems"].as_array().unwrap();
    let at = |key: &str| {
        problems
            .iter()
            .find(|p| p["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))
    };
    assert_eq!(at("cache.capactiy")["line"], 2);
    assert!(
        at("cache.capactiy")["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `capacity`")
    );
    assert_eq!(at("collector[0].mtu")["line"], 6);

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[port]]\ndevice = \"net_af_packet0,iface=eth1\"\n\n\
         [[collector]]\naddress = \"127.0.0.1:2055\"\n",
    )
    .unwrap();
    let out = tapflow()
        .args(["check-config", "--json", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
    assert!(
        report["description"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:2055")
    );
}

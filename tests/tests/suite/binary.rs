//! The real `techub-host` binary, as an operator runs it.

use std::process::Command;
use techub_tests::{PluginDir, host_binary};

#[test]
fn a_taken_admin_port_stops_the_host_before_it_consumes_anything() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = PluginDir::with(&[("user-notifications", "user_notifications")]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "[host]\nplugins_dir = \".\"\nadmin_addr = \"{addr}\"\n\n[plugins.user-notifications]\nsubscribe = [\"user.created\"]\ncache_domains = [\"users\"]\npublish = [\"notification.*\"]\n"
        ),
    )
    .unwrap();
    let output = Command::new(host_binary())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        log.contains(&format!("could not listen on host.admin_addr {addr}")),
        "{log}"
    );
    assert!(
        !log.contains("consuming") && !log.contains("plugin loaded"),
        "the port is bound before any plugin starts: {log}"
    );
}

#[test]
fn check_prints_the_merged_config_without_secrets() {
    let dir = PluginDir::with(&[]);
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        "[redis]\nurl = \"redis://:hunter2@127.0.0.1:6379\"\n[cache.domains]\nusers = 60\n[plugins.ghost]\n",
    )
    .unwrap();
    let output = Command::new(host_binary())
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    let warned = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{warned}");
    assert!(!printed.contains("hunter2"), "{printed}");
    assert!(printed.contains("redis://:***@127.0.0.1:6379"), "{printed}");
    assert!(
        printed.contains("\"users\": 60") && printed.contains("\"cart\": 604800"),
        "the seed's domains stay beside the overridden one: {printed}"
    );
    assert!(
        warned.contains("[plugins.ghost] names no plugin file ghost.wasm"),
        "{warned}"
    );
}

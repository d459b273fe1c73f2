//! The admin API and `lbadm`, driven as an operator would: every command against a running
//! lbd, checked in the table (`list --json`) and in the traffic; the ipvsadm layout; rejected
//! input; the state file across restarts and crashes; the token.

use std::{
    collections::HashMap,
    net::{Shutdown, SocketAddr},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::*;

fn lbadm_binary() -> &'static str {
    env!("CARGO_BIN_EXE_lbadm")
}

/// Runs `lbadm --admin ADMIN args…`: (exit code, stdout, stderr).
fn lbadm(admin: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(lbadm_binary())
        .arg("--admin")
        .arg(admin)
        .args(args)
        .env_remove("LBADM_ADMIN")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs lbadm and insists that it succeeds; returns stdout.
fn ok(admin: &str, args: &[&str]) -> String {
    let (code, stdout, stderr) = lbadm(admin, args);
    assert_eq!(code, 0, "lbadm {args:?} failed: {stderr}");
    stdout
}

/// `list --json`: the services.
fn table(admin: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(admin, &["list", "--json"]))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// (address, weight) of every real of the first service.
fn reals(admin: &str) -> Vec<(String, u64)> {
    table(admin)[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|real| {
            (
                real["address"].as_str().unwrap().to_owned(),
                real["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

struct Director {
    lbd: Lbd,
    admin: String,
    listen: SocketAddr,
}

/// lbd with an admin API on a free loopback port and one `rr` service over `reals`.
fn director(reals: &[SocketAddr], extra: &str) -> Director {
    let admin = free_addr().to_string();
    let listen = free_addr();
    let reals: Vec<_> = reals.iter().map(|&real| (real, 1)).collect();
    let config = one_service(
        "tcp",
        listen,
        "rr",
        &reals,
        &format!("admin: {{ listen: '{admin}' }}\n{extra}"),
    );
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("admin API listening", 1);
    Director { lbd, admin, listen }
}

/// `director` with a `state_file` in a temporary directory (kept alive by the first value).
fn director_with_state_file(reals: &[SocketAddr]) -> (tempfile::TempDir, std::path::PathBuf, Director) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.yaml");
    let d = director(reals, &format!("state_file: {}\n", state.display()));
    (dir, state, d)
}

fn names(counts: &HashMap<String, usize>) -> Vec<&str> {
    let mut names: Vec<&str> = counts.keys().map(String::as_str).collect();
    names.sort_unstable();
    names
}

#[test]
fn every_command_changes_the_table_and_the_traffic() {
    let a = TcpBackend::start("a");
    let b = TcpBackend::start("b");
    let c = TcpBackend::start("c");
    let mut d = director(&[a.address], "");
    let service = d.listen.to_string();
    let admin_address = d.admin.clone();
    let (admin, svc) = (admin_address.as_str(), service.as_str());

    // add-real: new flows follow at once.
    ok(
        admin,
        &["add-real", "-t", svc, "-r", &b.address.to_string(), "-w", "1"],
    );
    // Logged once: what changed, from which client.
    let logged = format!("admin change applied: add-real to tcp:{svc}");
    d.lbd.wait_for_log(&logged, 1);
    assert_eq!(d.lbd.log_count(&logged), 1, "{}", d.lbd.log_text());
    assert!(
        d.lbd.log_text().contains("client=\"127.0.0.1:"),
        "{}",
        d.lbd.log_text()
    );
    assert_eq!(names(&distribution(d.listen, 4)), ["a", "b"]);
    // A range adds several; edit-real changes weight and thresholds.
    let range = format!("127.0.0.1:[{}-{}]", c.address.port(), c.address.port());
    ok(admin, &["add-real", "-t", svc, "-r", &range, "-w", "2"]);
    ok(
        admin,
        &[
            "edit-real",
            "-t",
            svc,
            "-r",
            &c.address.to_string(),
            "-w",
            "5",
            "-x",
            "100",
            "-y",
            "50",
        ],
    );
    let real_c = table(admin)[0]["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|real| real["address"] == c.address.to_string())
        .cloned()
        .unwrap();
    assert_eq!(
        (real_c["weight"].as_u64(), real_c["max_conns"].as_u64()),
        (Some(5), Some(100))
    );
    // drain-real: weight 0, no new flows.
    ok(admin, &["drain-real", "-t", svc, "-r", &a.address.to_string()]);
    ok(admin, &["edit-service", "-t", svc, "-s", "wrr"]);
    let counts = distribution(d.listen, 12);
    assert_eq!(names(&counts), ["b", "c"], "{counts:?}");
    assert_eq!((counts["b"], counts["c"]), (2, 10), "wrr 1:5");
    // del-real.
    ok(admin, &["del-real", "-t", svc, "-r", &b.address.to_string()]);
    assert_eq!(names(&distribution(d.listen, 4)), ["c"]);
    // edit-service persistence and back; the listing shows it.
    ok(
        admin,
        &["edit-service", "-t", svc, "-p", "60", "-M", "255.255.255.0"],
    );
    assert!(ok(admin, &["list", "-n"]).contains(&format!("TCP  {svc} wrr persistent 60 mask 255.255.255.0")));
    ok(admin, &["edit-service", "-t", svc, "--no-persistent"]);
    assert!(ok(admin, &["list", "-n"]).contains(&format!("TCP  {svc} wrr\n")));
    // edit-service slow start and back: the service document shows it.
    ok(admin, &["edit-service", "-t", svc, "--slow-start", "90s"]);
    assert_eq!(table(admin)[0]["slow_start"].as_str(), Some("90s"));
    ok(admin, &["edit-service", "-t", svc, "--no-slow-start"]);
    assert!(table(admin)[0]["slow_start"].is_null());
    let (code, _, stderr) = lbadm(admin, &["edit-service", "-t", svc, "--slow-start", "2h"]);
    assert!(code != 0 && stderr.contains("is out of range"), "{stderr}");
    // PROXY protocol: the service's header, a real's own, headers taken from a balancer.
    ok(
        admin,
        &[
            "edit-service",
            "-t",
            svc,
            "--proxy-protocol",
            "v2",
            "--accept-proxy-from",
            "10.0.0.0/8,fd00::/8",
        ],
    );
    let real = c.address.to_string();
    ok(
        admin,
        &["edit-real", "-t", svc, "-r", &real, "--proxy-protocol", "v1"],
    );
    let service = &table(admin)[0];
    assert_eq!(service["proxy_protocol"].as_str(), Some("v2"));
    assert_eq!(
        service["accept_proxy_from"],
        serde_json::json!(["10.0.0.0/8", "fd00::/8"])
    );
    let real_c = service["reals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == real.as_str())
        .cloned()
        .unwrap();
    assert_eq!(real_c["proxy_protocol"].as_str(), Some("v1"));
    assert!(
        ok(admin, &["save"]).contains("accept_proxy_from:\n  - 10.0.0.0/8\n  - fd00::/8"),
        "saved"
    );
    let (code, _, stderr) = lbadm(
        admin,
        &["edit-service", "-t", svc, "--accept-proxy-from", "10.0.0.1/8"],
    );
    assert!(
        code != 0 && stderr.contains("write the network, 10.0.0.0/8"),
        "{stderr}"
    );
    ok(
        admin,
        &[
            "edit-service",
            "-t",
            svc,
            "--proxy-protocol",
            "none",
            "--no-accept-proxy",
        ],
    );
    ok(
        admin,
        &["edit-real", "-t", svc, "-r", &real, "--proxy-protocol", "none"],
    );
    let service = &table(admin)[0];
    assert_eq!(service["proxy_protocol"].as_str(), Some("none"));
    assert_eq!(service["accept_proxy_from"], serde_json::json!([]));
    // zero: counters back to 0.
    assert!(table(admin)[0]["stats"]["conns"].as_u64().unwrap() > 0);
    ok(admin, &["zero", "-t", svc]);
    assert_eq!(table(admin)[0]["stats"]["conns"].as_u64(), Some(0));
    // add-service (by name), then del-service: the address stops answering.
    let other = free_addr();
    ok(
        admin,
        &[
            "add-service",
            "-t",
            &other.to_string(),
            "--name",
            "other",
            "-s",
            "rr",
        ],
    );
    ok(
        admin,
        &["add-real", "--service", "other", "-r", &a.address.to_string()],
    );
    assert_eq!(names(&distribution(other, 2)), ["a"]);
    ok(admin, &["del-service", "--service", "other"]);
    wait_refused(other);
    // save → clear → restore gives back an identical table.
    let saved = ok(admin, &["save"]);
    let before = ok(admin, &["list", "-n"]);
    ok(admin, &["clear"]);
    assert_eq!(table(admin).len(), 0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.yaml");
    std::fs::write(&file, &saved).unwrap();
    ok(admin, &["restore", file.to_str().unwrap()]);
    assert_eq!(ok(admin, &["save"]), saved);
    // The same table; flows closed before the clear count (TIME_WAIT) on the old reals only.
    let layout = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(layout(&ok(admin, &["list", "-n"])), layout(&before));
    assert_eq!(names(&distribution(d.listen, 2)), ["c"]);
    // status and reload.
    let status = ok(admin, &["status"]);
    assert!(status.contains("services: 1"), "{status}");
    ok(admin, &["reload"]);
    assert_eq!(
        reals(admin),
        [(a.address.to_string(), 1)],
        "reload replaces runtime changes"
    );
}

#[test]
fn list_n_matches_the_spec_layout() {
    let listen = free_addr();
    let admin = free_addr().to_string();
    let config = format!(
        "admin: {{ listen: '{admin}' }}\nworkers: 1\nservices:\n  - protocol: tcp\n    listen: {listen}\n    scheduler: wlc\n    persistence: {{ timeout: 360s }}\n    reals:\n      - {{ address: '127.0.0.2:8080', weight: 3 }}\n      - {{ address: '127.0.0.1:8080', weight: 1 }}\n  - protocol: udp\n    listen: {listen}\n    scheduler: sh\n    scheduler_flags: [sh-fallback, sh-port]\n    one_packet: true\n    reals:\n      - {{ address: '127.0.0.3:53' }}\n"
    );
    let _lbd = Lbd::start(&config);
    let expected = format!(
        "ulvs {} (flows=0)\n\
         Prot LocalAddress:Port Scheduler Flags\n\
         \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  {listen} wlc persistent 360\n\
         \x20 -> 127.0.0.1:8080               Proxy   1      0          0\n\
         \x20 -> 127.0.0.2:8080               Proxy   3      0          0\n\
         UDP  {listen} sh (sh-fallback,sh-port) ops\n\
         \x20 -> 127.0.0.3:53                 Proxy   1      0          0\n",
        env!("CARGO_PKG_VERSION")
    );
    wait_for_admin(&admin);
    assert_eq!(ok(&admin, &["list", "-n"]), expected);
}

/// Waits until connects to `address` are refused: the workers close a deleted service's
/// sockets right after the change is answered.
fn wait_refused(address: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() {
        assert!(Instant::now() < deadline, "{address} still accepts connections");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_for_admin(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lbadm(admin, &["status"]).0 != 0 {
        assert!(Instant::now() < deadline, "no admin API on {admin}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rejected_requests_change_nothing() {
    let a = TcpBackend::start("a");
    let d = director(&[a.address], "");
    let svc = d.listen.to_string();
    let admin = d.admin.as_str();
    let before = ok(admin, &["save"]);
    let dup_range = format!("127.0.0.1:[{}-{}]", a.address.port() - 1, a.address.port());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["add-real", "-t", &svc, "-r", "10.0.0.300:80"],
            "invalid real address",
        ),
        (
            vec!["add-real", "-t", &svc, "-r", &dup_range],
            "already in service",
        ),
        (
            vec!["add-real", "-t", "127.0.0.1:1", "-r", "127.0.0.9:80"],
            "no service",
        ),
        (
            vec!["add-real", "-t", &svc, "-r", "127.0.0.[1-:80"],
            "127.0.0.[1-",
        ),
        (
            vec!["edit-real", "-t", &svc, "-r", "127.0.0.9:80", "-w", "2"],
            "no real",
        ),
        (vec!["add-service", "-t", &svc], "duplicate service"),
        (
            vec![
                "add-service",
                "-u",
                "127.0.0.1:53",
                "-o",
                "-s",
                "rr",
                "-b",
                "sh-port",
            ],
            "sh-port",
        ),
    ];
    for (args, needle) in cases {
        let (code, _, stderr) = lbadm(admin, &args);
        assert_eq!(code, 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(ok(admin, &["save"]), before, "{args:?} changed the table");
    }
    // Bad usage, caught before anything is sent: exit 2, naming what was wrong.
    let usage: [(&[&str], &str); 4] = [
        (
            &["add-real", "-t", &svc, "-r", "127.0.0.9:80", "-w", "70000"],
            "weight 70000 is out of range 0..65535",
        ),
        (
            &["add-service", "-t", "127.0.0.1:1", "-s", "fastest"],
            "unknown scheduler `fastest`: expected one of rr, wrr",
        ),
        (&["list", "-t", "1.2.3.4"], "`1.2.3.4` is not VIP:PORT"),
        (&["restore", "/nonexistent/table.yaml"], "/nonexistent/table.yaml"),
    ];
    for (args, needle) in usage {
        let (code, _, stderr) = lbadm(admin, args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let restore = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(restore.path(), "services: [{protocol: tcp}]\n").unwrap();
    let (code, _, stderr) = lbadm(admin, &["restore", restore.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("restore {}:", restore.path().display())),
        "{stderr}"
    );
    assert_eq!(ok(admin, &["save"]), before);
    // Bad usage is 2; an unreachable director is 3.
    assert_eq!(lbadm(admin, &["add-real", "-t", &svc]).0, 2);
    let (code, _, stderr) = lbadm("127.0.0.1:1", &["status"]);
    assert_eq!(code, 3);
    assert!(stderr.contains("cannot reach the director"), "{stderr}");
}

#[test]
fn runtime_changes_survive_a_restart_through_the_state_file() {
    let a = TcpBackend::start("a");
    let b = TcpBackend::start("b");
    let (_dir, state, d) = director_with_state_file(&[a.address]);
    let svc = d.listen.to_string();
    ok(
        &d.admin,
        &["add-real", "-t", &svc, "-r", &b.address.to_string(), "-w", "4"],
    );
    let expected = reals(&d.admin);
    let config = std::fs::read_to_string(d.lbd.config_path()).unwrap();
    drop(d);
    let mut again = Lbd::start(&config);
    again.wait_for_log("services restored from the state file", 1);
    let admin = config
        .lines()
        .find_map(|line| line.strip_prefix("admin: { listen: '"))
        .and_then(|rest| rest.split('\'').next())
        .unwrap()
        .to_owned();
    wait_for_admin(&admin);
    assert_eq!(reals(&admin), expected);
    // A corrupt state file stops lbd with a clear error instead of starting empty.
    drop(again);
    std::fs::write(&state, "services: [ {").unwrap();
    let mut broken = Lbd::spawn(&config);
    let status = broken.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        broken.log_text().contains("the state file is not valid"),
        "{}",
        broken.log_text()
    );
}

#[test]
fn a_crash_during_a_burst_of_changes_leaves_a_prefix() {
    let a = TcpBackend::start("a");
    let (dir, state, d) = director_with_state_file(&[a.address]);
    let svc = d.listen.to_string();
    let admin = d.admin.clone();
    // 200 add-reals, one after another; lbd is killed part way.
    let burst = std::thread::spawn(move || {
        let mut acknowledged = 0;
        for i in 0..200u16 {
            let real = format!("127.1.0.{}:{}", 1 + i % 200, 1000 + i);
            if lbadm(&admin, &["add-real", "-t", &svc, "-r", &real]).0 != 0 {
                break;
            }
            acknowledged += 1;
        }
        acknowledged
    });
    std::thread::sleep(Duration::from_millis(300));
    d.lbd.signal(Signal::SIGKILL);
    let acknowledged = burst.join().unwrap();
    eprintln!("{acknowledged} changes acknowledged before SIGKILL");
    assert!(
        acknowledged > 0 && acknowledged < 200,
        "lbd was killed during the burst"
    );
    // The file loads, and holds the first k changes: every acknowledged one, maybe one more.
    let saved = std::fs::read_to_string(&state).unwrap();
    let added: Vec<u16> = saved
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- address: 127.1.0."))
        .map(|rest| rest.rsplit(':').next().unwrap().parse::<u16>().unwrap() - 1000)
        .collect();
    let prefix: Vec<u16> = (0..added.len() as u16).collect();
    assert_eq!(added, prefix, "a prefix of the burst");
    assert!(
        added.len() >= acknowledged && added.len() <= acknowledged + 1,
        "{} vs {acknowledged}",
        added.len()
    );
    let check = dir.path().join("check.yaml");
    std::fs::write(&check, &saved).unwrap();
    let (code, _, stderr) = run_lbd(&["--check", "--config", check.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_token_is_required_when_configured() {
    let a = TcpBackend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let admin = free_addr().to_string();
    let listen = free_addr();
    let config = one_service(
        "tcp",
        listen,
        "rr",
        &[(a.address, 1)],
        &format!(
            "admin: {{ listen: '{admin}', token_file: {} }}\n",
            token.display()
        ),
    );
    let _lbd = Lbd::start(&config);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (code, _, stderr) = loop {
        let answer = lbadm(&admin, &["status"]);
        if answer.0 != 3 || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, 1);
    assert!(stderr.contains("token"), "{stderr}");
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    assert_eq!(
        lbadm(&admin, &["--token-file", wrong.to_str().unwrap(), "status"]).0,
        1
    );
    ok(&admin, &["--token-file", token.to_str().unwrap(), "status"]);

    // A non-loopback admin address without a token is a config error.
    let open = dir.path().join("open.yaml");
    std::fs::write(&open, "admin: { listen: 0.0.0.0:9900 }\n").unwrap();
    let (code, _, stderr) = run_lbd(&["--check", "--config", open.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("admin.token_file is required"), "{stderr}");
}

#[test]
fn the_admin_api_listens_on_a_private_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let a = TcpBackend::start("a");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let listen = free_addr();
    let config = one_service(
        "tcp",
        listen,
        "rr",
        &[(a.address, 1)],
        &format!("admin: {{ listen: 'unix:{}' }}\n", socket.display()),
    );
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("admin API listening", 1);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let admin = format!("unix:{}", socket.display());
    assert_eq!(reals(&admin), [(a.address.to_string(), 1)]);
}

#[test]
fn a_held_connection_survives_every_change_but_its_removal_lets_it_finish() {
    let a = TcpBackend::start("a");
    let b = TcpBackend::start("b");
    let d = director(&[a.address], "");
    let svc = d.listen.to_string();
    let admin = d.admin.as_str();
    let (name, mut held) = connect_and_greet(d.listen);
    assert_eq!(name, "a");
    let a_real = a.address.to_string();
    let changes: Vec<Vec<&str>> = vec![
        vec!["edit-service", "-t", &svc, "-s", "wlc"],
        vec!["edit-service", "-t", &svc, "-p", "30"],
        vec!["edit-real", "-t", &svc, "-r", &a_real, "-w", "3", "-x", "100"],
        vec!["add-real", "-t", &svc, "-r", "127.0.0.1:9"],
        vec!["drain-real", "-t", &svc, "-r", &a_real],
        vec!["zero"],
        vec!["del-real", "-t", &svc, "-r", "127.0.0.1:9"],
        vec!["del-real", "-t", &svc, "-r", &a_real],
        vec!["del-service", "-t", &svc],
    ];
    let _ = b;
    for (i, change) in changes.iter().enumerate() {
        ok(admin, change);
        let text = format!("after change {i}\n");
        assert_eq!(echo(&mut held, text.as_bytes()), text, "after {change:?}");
    }
    // The service is gone: new connects are refused, the held one still finishes cleanly.
    wait_refused(d.listen);
    held.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn the_demo_balances_and_answers_lbadm() {
    let listen = free_addr().to_string();
    let admin = free_addr().to_string();
    let metrics = free_addr().to_string();
    let mut demo = KillOnDrop(
        Command::new(lbd_binary())
            .args([
                "demo",
                "--listen",
                &listen,
                "--admin",
                &admin,
                "--metrics",
                &metrics,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_admin(&admin);
    let listing = ok(&admin, &["list", "-n"]);
    assert_eq!(listing.matches("  -> 127.0.0.1:").count(), 3, "{listing}");
    assert!(listing.contains(&format!("TCP  {listen} wrr")), "{listing}");
    let mut bodies = HashMap::new();
    for _ in 0..6 {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&listen).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        *bodies.entry(body).or_insert(0) += 1;
    }
    assert_eq!(bodies.get("hello from backend-1"), Some(&3), "{bodies:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(demo.0.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(demo.0.wait().unwrap().success());
}

/// A child process killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends a raw HTTP/1.1 request; returns the status code and the body.
fn raw_http(admin: &str, request: &[u8]) -> (u16, String) {
    http_exchange(admin, request).unwrap()
}

#[test]
fn every_api_error_is_json_and_nothing_crashes_lbd() {
    let a = TcpBackend::start("a");
    let d = director(&[a.address], "");
    let admin = d.admin.as_str();
    let huge = format!(
        "POST /v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        9 * 1024 * 1024,
        "x".repeat(9 * 1024 * 1024)
    );
    let requests: Vec<(Vec<u8>, u16)> = vec![
        (b"GET /v1/services/%FF%FE HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 400),
        (b"GET /v1/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 404),
        (b"DELETE /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(), 405),
        (
            b"POST /v1/services HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 7\r\n\r\n{[}:{]}".to_vec(),
            400,
        ),
        (
            b"PATCH /v1/services/svc HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 6\r\n\r\n[1, 2]".to_vec(),
            400,
        ),
        (huge.into_bytes(), 413),
    ];
    for (request, expected) in requests {
        let (status, body) = raw_http(admin, &request);
        assert_eq!(status, expected, "{body}");
        let problem: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
        assert!(
            problem["error"].as_str().is_some_and(|text| !text.is_empty()),
            "{body}"
        );
    }
    // Still serving, table intact; `save --json` is JSON that `restore` takes back.
    assert_eq!(reals(admin), [(a.address.to_string(), 1)]);
    let saved = ok(admin, &["save", "--json"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("saved.json");
    std::fs::write(&file, &saved).unwrap();
    ok(admin, &["restore", file.to_str().unwrap()]);
    assert_eq!(ok(admin, &["save", "--json"]), saved);
}

/// `director` whose service checks its reals (`tcp`, every 100 ms, rise 1, fall 1) and does
/// `on_down` with a real found down.
fn checked_director(reals: &[SocketAddr], on_down: &str) -> Director {
    let admin = free_addr().to_string();
    let listen = free_addr();
    let reals: Vec<_> = reals.iter().map(|&real| (real, 1)).collect();
    let config = one_service("tcp", listen, "rr", &reals, &format!("admin: {{ listen: '{admin}' }}\n")).replace(
        "    reals:\n",
        &format!(
            "    health_check: {{ type: tcp, interval: 100ms, timeout: 500ms, rise: 1, fall: 1, on_down: {on_down} }}\n    reals:\n"
        ),
    );
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("admin API listening", 1);
    Director { lbd, admin, listen }
}

/// A connection through `listen` that reached the backend named `name` (rr: within a few).
fn held_on(listen: SocketAddr, name: &str) -> std::net::TcpStream {
    for _ in 0..10 {
        let (reached, stream) = connect_and_greet(listen);
        if reached == name {
            return stream;
        }
    }
    panic!("no connection reached {name}");
}

/// Whether the peer has closed `stream` (EOF or a reset) within five seconds.
fn closed_by_peer(stream: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => !matches!(
            error.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn maint_real_stops_new_flows_and_checks_and_ready_real_brings_it_back() {
    let mut a = TcpBackend::start("a");
    let b = TcpBackend::start("b");
    let d = checked_director(&[a.address, b.address], "remove");
    let (admin, svc) = (d.admin.as_str(), d.listen.to_string());
    let a_text = a.address.to_string();
    // A flow to a, held across the maintenance.
    let mut held = held_on(d.listen, "a");
    ok(admin, &["maint-real", "-t", &svc, "-r", &a_text]);
    let listing = ok(admin, &["list", "-n"]);
    assert!(
        listing
            .lines()
            .any(|line| line.contains(&a_text) && line.ends_with(" MAINT")),
        "{listing}"
    );
    let health = ok(admin, &["list", "--health"]);
    assert!(
        health
            .lines()
            .any(|line| line.contains(&a_text) && line.contains("maint")),
        "{health}"
    );
    assert!(ok(admin, &["save"]).contains("maintenance: true"));
    let counts = distribution(d.listen, 6);
    assert_eq!(
        names(&counts),
        ["b"],
        "no new flows to a real in maintenance: {counts:?}"
    );
    assert_eq!(echo(&mut held, b"still here"), "still here", "its flows go on");
    // Checks are paused: a stopped a is not found down while in maintenance.
    a.stop();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        d.lbd
            .log_count(&format!("real server {a_text} of service svc: up -> down")),
        0
    );
    // Ready again: checked at once, found down, then up once it listens.
    ok(admin, &["ready-real", "-t", &svc, "-r", &a_text]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d
        .lbd
        .log_text()
        .contains(&format!("real server {a_text} of service svc: up -> down"))
    {
        assert!(
            Instant::now() < deadline,
            "a's checks did not resume: {}",
            d.lbd.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    a.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    while names(&distribution(d.listen, 4)) != ["a", "b"] {
        assert!(Instant::now() < deadline, "a did not come back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!ok(admin, &["list", "-n"]).contains("MAINT"));
    let (code, _, stderr) = lbadm(admin, &["maint-real", "-t", &svc, "-r", "127.0.0.1:1"]);
    assert!(code != 0 && stderr.contains("no real 127.0.0.1:1"), "{stderr}");
}

#[test]
fn kill_flows_closes_a_reals_flows_then_the_services() {
    let a = TcpBackend::start("a");
    let b = TcpBackend::start("b");
    let d = director(&[a.address, b.address], "");
    let (admin, svc) = (d.admin.as_str(), d.listen.to_string());
    let mut flows: Vec<(String, std::net::TcpStream)> = (0..4).map(|_| connect_and_greet(d.listen)).collect();
    let on_a = flows.iter().filter(|(name, _)| name == "a").count();
    assert_eq!(on_a, 2, "rr");
    let out = ok(admin, &["kill-flows", "-t", &svc, "-r", &a.address.to_string()]);
    assert_eq!(out.trim(), "2 flow(s) closed");
    for (name, stream) in &mut flows {
        if name == "a" {
            assert!(closed_by_peer(stream), "a flow to a was closed");
        } else {
            assert_eq!(echo(stream, b"on b"), "on b", "flows to b go on");
        }
    }
    let out = ok(admin, &["--json", "kill-flows", "-t", &svc]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["flows"], 2);
    for (_, stream) in flows.iter_mut().filter(|(name, _)| name == "b") {
        assert!(closed_by_peer(stream), "every flow of the service was closed");
    }
    // The service still takes new flows.
    assert_eq!(distribution(d.listen, 2).values().sum::<usize>(), 2);
    let (code, _, stderr) = lbadm(admin, &["kill-flows", "-t", "127.0.0.1:1"]);
    assert!(code != 0 && stderr.contains("no service"), "{stderr}");
}

#[test]
fn on_down_shutdown_closes_a_failed_reals_flows_and_remove_keeps_them() {
    for (on_down, closed) in [("shutdown", true), ("remove", false)] {
        let mut a = TcpBackend::start("a");
        let b = TcpBackend::start("b");
        let d = checked_director(&[a.address, b.address], on_down);
        let mut held = held_on(d.listen, "a");
        // a stops listening: its check fails, its established flow is still there.
        a.stop();
        let down = format!("real server {} of service svc: up -> down", a.address);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !d.lbd.log_text().contains(&down) {
            assert!(Instant::now() < deadline, "a was not found down");
            std::thread::sleep(Duration::from_millis(50));
        }
        if closed {
            assert!(closed_by_peer(&mut held), "on_down: shutdown closes the flow");
            assert!(d.lbd.log_text().contains("its flows closed (on_down: shutdown)"));
        } else {
            assert_eq!(echo(&mut held, b"kept"), "kept", "on_down: remove keeps the flow");
        }
        drop(b);
    }
}

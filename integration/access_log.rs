//! The per-flow access log through the real lbd: one line per finished flow with its client,
//! service, real, bytes each way, duration and how it ended (closed, reset, killed, refused
//! and why, a UDP session's end), in JSON and, after a reload, in logfmt; and lbd's own log
//! in JSON with `--log-format json`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::support::*;

/// The lines of the log at `path` once it has `count` of them.
fn read_lines(path: &std::path::Path, count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} lines: {text}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_finished_flow_is_one_line_with_its_bytes_and_its_end() {
    let backend = TcpBackend::start("real");
    let udp_backend = UdpBackend::start("udp-real");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (web, dns, admin) = (free_addr(), free_addr(), free_addr());
    let denied = free_addr().ip();
    let config = format!(
        "workers: 2\nadmin: {{ listen: '{admin}' }}\naccess_log: {{ path: '{}', format: json }}\nservices:\n\
         \x20 - {{ name: web, protocol: tcp, listen: '{web}', deny: ['{denied}'], reals: [{{ address: '{}' }}] }}\n\
         \x20 - {{ name: dns, protocol: udp, listen: '{dns}', udp_responses: 1, reals: [{{ address: '{}' }}] }}\n",
        log.display(),
        backend.address,
        udp_backend.address
    );
    let mut lbd = Lbd::start_with_args(&["--log-format", "json"], &config);

    // Closed: 5 bytes up, the greeting (5) and their echo (5) down, then a clean close.
    let (_, mut stream) = connect_and_greet(web);
    let client = stream.local_addr().unwrap();
    assert_eq!(echo(&mut stream, b"hello"), "hello");
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = stream.read_to_end(&mut Vec::new());
    drop(stream);
    // Killed.
    let (_, mut killed) = connect_and_greet(web);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_lbadm"))
        .args(["--admin", &admin.to_string(), "kill-flows", "--service", "web"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let _ = killed.read_to_end(&mut Vec::new());
    // Refused: a denied client.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(denied, 0).into()).unwrap();
    socket.connect(&web.into()).unwrap();
    let _ = TcpStream::from(socket).read_to_end(&mut Vec::new());
    // A UDP session that ends with its one reply.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(b"ping!", dns).unwrap();
    udp.recv(&mut [0u8; 64]).unwrap();

    let lines = read_lines(&log, 4);
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let find = |end: &str, protocol: &str| {
        parsed
            .iter()
            .find(|line| line["end"] == end && line["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no {protocol} {end} line in {lines:?}"))
    };
    let closed = find("closed", "tcp");
    assert_eq!(closed["service"], "web");
    assert_eq!(closed["client"], client.to_string());
    assert_eq!(closed["vip"], web.to_string());
    assert_eq!(closed["real"], backend.address.to_string());
    assert_eq!(
        (closed["bytes_in"].as_u64(), closed["bytes_out"].as_u64()),
        (Some(5), Some(10))
    );
    assert!(closed["duration_ms"].as_u64().is_some() && closed["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(find("killed", "tcp")["real"], backend.address.to_string());
    let refused = find("refused", "tcp");
    assert_eq!(
        (refused["reason"].as_str(), refused.get("real")),
        (Some("denied"), None)
    );
    assert!(
        refused["client"]
            .as_str()
            .unwrap()
            .starts_with(&denied.to_string())
    );
    let session = find("closed", "udp");
    assert_eq!(
        (session["service"].as_str(), session["bytes_in"].as_u64()),
        (Some("dns"), Some(5))
    );
    assert_eq!(session["bytes_out"].as_u64(), Some("udp-real".len() as u64));

    // lbd's own log is JSON too.
    let own = lbd.log_text();
    let first = own.lines().next().unwrap();
    let line: Value = serde_json::from_str(first).unwrap_or_else(|_| panic!("not JSON: {first}"));
    assert!(line["fields"]["message"].is_string(), "{first}");

    // A reload switches to logfmt (and reopens the file: logrotate moves it away first).
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(
        lbd.config_path(),
        config.replace("format: json", "format: logfmt"),
    )
    .unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    let (_, mut stream) = connect_and_greet(web);
    stream.write_all(b"x").unwrap();
    drop(stream);
    let after = read_lines(&log, 1);
    assert!(
        after[0].starts_with("time=")
            && after[0].contains(" service=web protocol=tcp ")
            && after[0].contains(" end="),
        "{after:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        lines.len(),
        "nothing went to the old file"
    );
}

//! Access control and limits at the front door, through the real lbd and lbadm: `allow` and
//! `deny` networks, `source_limits` (flows at once, new flows per second) for TCP and UDP
//! proxied services, refusals counted by reason, and the lists edited at run time.

use std::{
    io::Read,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::Duration,
};

use crate::support::*;

/// A connection from `client` to `service` and the greeting of the backend reached, or
/// `None` when lbd refused it (a reset, or a close before any greeting).
fn greet_from(client: IpAddr, service: SocketAddr) -> Option<(String, TcpStream)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(client, 0).into()).unwrap();
    socket
        .connect_timeout(&service.into(), Duration::from_secs(5))
        .ok()?;
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = Vec::new();
    let mut byte = [0u8; 1];
    while !greeting.ends_with(b"\n") {
        match stream.read(&mut byte) {
            Ok(1) => greeting.push(byte[0]),
            _ => return None,
        }
    }
    Some((String::from_utf8_lossy(&greeting).trim().to_owned(), stream))
}

fn refused(metrics: SocketAddr, service: &str, reason: &str) -> u64 {
    metric_sample(
        metrics,
        &format!("lbd_service_refused_total{{service=\"{service}\",reason=\"{reason}\"}}"),
    )
}

fn lbadm(admin: SocketAddr, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_lbadm"))
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "lbadm {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn allow_deny_and_per_client_caps_refuse_and_count_by_reason() {
    let backend = TcpBackend::start("real");
    let udp_backend = UdpBackend::start("udp-real");
    let (lists, capped, rated, dns, metrics, admin) = (
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
        free_addr(),
    );
    let (denied, allowed, outsider) = (free_addr().ip(), free_addr().ip(), free_addr().ip());
    let real = backend.address;
    let config = format!(
        "workers: 2\nmetrics: {{ listen: '{metrics}' }}\nadmin: {{ listen: '{admin}' }}\nservices:\n\
         \x20 - {{ name: lists, protocol: tcp, listen: '{lists}', deny: ['{denied}'], allow: ['{allowed}', '{denied}', '::/0'],\n\
         \x20     reals: [{{ address: '{real}' }}] }}\n\
         \x20 - {{ name: capped, protocol: tcp, listen: '{capped}', source_limits: {{ max_flows: 2 }}, reals: [{{ address: '{real}' }}] }}\n\
         \x20 - {{ name: rated, protocol: tcp, listen: '{rated}', source_limits: {{ new_flows_per_second: 5 }}, reals: [{{ address: '{real}' }}] }}\n\
         \x20 - {{ name: dns, protocol: udp, listen: '{dns}', deny: ['{denied}'], reals: [{{ address: '{}' }}] }}\n",
        udp_backend.address
    );
    let _lbd = Lbd::start(&config);

    // allow and deny: deny wins over allow; a client outside allow is refused.
    assert!(greet_from(denied, lists).is_none(), "a denied client is refused");
    assert_eq!(
        greet_from(allowed, lists).map(|(name, _)| name).as_deref(),
        Some("real")
    );
    assert!(
        greet_from(outsider, lists).is_none(),
        "a client outside allow is refused"
    );
    assert_eq!(refused(metrics, "lists", "denied"), 2);

    // max_flows: two held, the third refused, one more once one ends.
    let first = greet_from(allowed, capped).expect("first");
    let _second = greet_from(allowed, capped).expect("second");
    assert!(
        greet_from(allowed, capped).is_none(),
        "a third flow at once is refused"
    );
    assert!(
        greet_from(denied, capped).is_some(),
        "another client has its own count"
    );
    drop(first);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        greet_from(allowed, capped).is_some(),
        "a flow ended gives its place back"
    );
    assert_eq!(refused(metrics, "capped", "source_flows"), 1);

    // new_flows_per_second 5: of 12 connections opened at once, about 5 are served.
    let served = (0..12).filter(|_| greet_from(allowed, rated).is_some()).count();
    assert!((5..=7).contains(&served), "served {served} of 12");
    assert_eq!(refused(metrics, "rated", "source_rate"), 12 - served as u64);

    // UDP: a denied client's datagram starts no session.
    let ask_from = |client: IpAddr| {
        let socket = UdpSocket::bind(SocketAddr::new(client, 0)).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        socket.send_to(b"hello", dns).unwrap();
        let mut buffer = [0u8; 64];
        socket
            .recv(&mut buffer)
            .ok()
            .map(|n| String::from_utf8_lossy(&buffer[..n]).into_owned())
    };
    assert_eq!(ask_from(allowed).as_deref(), Some("udp-real"));
    assert_eq!(ask_from(denied), None);
    assert_eq!(refused(metrics, "dns", "denied"), 1);

    // Edited at run time: deny the allowed client, then lift every list.
    lbadm(
        admin,
        &[
            "edit-service",
            "--service",
            "lists",
            "--deny",
            &format!("{allowed}/32"),
        ],
    );
    assert!(greet_from(allowed, lists).is_none(), "denied after the edit");
    assert!(greet_from(denied, lists).is_some(), "no longer denied");
    lbadm(
        admin,
        &["edit-service", "--service", "lists", "--no-deny", "--no-allow"],
    );
    assert!(greet_from(allowed, lists).is_some() && greet_from(outsider, lists).is_some());
    let listing = lbadm(admin, &["--json", "list", "--service", "capped"]);
    assert!(listing.contains("\"max_flows\": 2"), "{listing}");
    lbadm(
        admin,
        &["edit-service", "--service", "capped", "--source-max-flows", "1"],
    );
    let held = greet_from(allowed, capped).expect("one");
    assert!(greet_from(allowed, capped).is_none(), "now one at a time");
    drop(held);
}

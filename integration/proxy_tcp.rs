//! TCP proxy behaviour end to end.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use crate::support::*;

fn service_addr() -> SocketAddr {
    free_addr()
}

#[test]
fn rr_spreads_300_connections_exactly_evenly() {
    let backends: Vec<_> = (1..=3).map(|i| TcpBackend::start(&format!("b{i}"))).collect();
    let listen = service_addr();
    let reals: Vec<_> = backends.iter().map(|b| (b.address, 1)).collect();
    let _lbd = Lbd::start(&one_service("tcp", listen, "rr", &reals, ""));
    let counts = distribution(listen, 300);
    for backend in &backends {
        assert_eq!(counts.get(&backend.name), Some(&100), "{counts:?}");
    }
}

#[test]
fn wrr_3_2_1_exactly_over_600() {
    let backends: Vec<_> = (1..=3).map(|i| TcpBackend::start(&format!("w{i}"))).collect();
    let listen = service_addr();
    let reals = [
        (backends[0].address, 3),
        (backends[1].address, 2),
        (backends[2].address, 1),
    ];
    let _lbd = Lbd::start(&one_service("tcp", listen, "wrr", &reals, ""));
    let counts = distribution(listen, 600);
    assert_eq!(counts.get("w1"), Some(&300), "{counts:?}");
    assert_eq!(counts.get("w2"), Some(&200), "{counts:?}");
    assert_eq!(counts.get("w3"), Some(&100), "{counts:?}");
}

#[test]
fn a_dead_real_costs_clients_no_failed_connection() {
    let live: Vec<_> = (1..=2).map(|i| TcpBackend::start(&format!("live{i}"))).collect();
    let dead = free_addr();
    let listen = service_addr();
    let reals = [(live[0].address, 1), (dead, 1), (live[1].address, 1)];
    let lbd = Lbd::start(&one_service("tcp", listen, "rr", &reals, ""));
    let counts = distribution(listen, 100);
    assert_eq!(counts.values().sum::<usize>(), 100);
    assert!(counts.keys().all(|name| name.starts_with("live")), "{counts:?}");
    assert!(counts.len() == 2, "both live reals serve: {counts:?}");
    assert!(
        lbd.log_text().contains("connect to real server failed"),
        "the failure is logged"
    );
}

#[test]
fn half_close_with_a_200_kb_payload() {
    // The backend reads until the client's FIN, then sends everything back: the
    // server-to-client direction must stay open after the client half-closes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            std::thread::spawn(move || {
                let mut received = Vec::new();
                stream.read_to_end(&mut received).unwrap();
                received.reverse();
                stream.write_all(&received).unwrap();
            });
        }
    });
    let listen = service_addr();
    let _lbd = Lbd::start(&one_service("tcp", listen, "rr", &[(backend, 1)], ""));
    let payload: Vec<u8> = (0..200 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let mut stream = TcpStream::connect(listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&payload).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let mut expected = payload;
    expected.reverse();
    assert_eq!(answer.len(), expected.len());
    assert!(answer == expected, "payload corrupted");
}

#[test]
fn sighup_reweights_while_a_connection_stays_open() {
    let backends: Vec<_> = (1..=3).map(|i| TcpBackend::start(&format!("h{i}"))).collect();
    let listen = service_addr();
    let before = [
        (backends[0].address, 1),
        (backends[1].address, 1),
        (backends[2].address, 1),
    ];
    let mut lbd = Lbd::start(&one_service("tcp", listen, "wrr", &before, ""));
    let (_, mut held) = connect_and_greet(listen);

    let after = [
        (backends[0].address, 2),
        (backends[1].address, 0),
        (backends[2].address, 1),
    ];
    std::fs::write(lbd.config_path(), one_service("tcp", listen, "wrr", &after, "")).unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);

    let counts = distribution(listen, 30);
    assert_eq!(counts.get("h1"), Some(&20), "{counts:?}");
    assert_eq!(counts.get("h2"), None, "weight 0 gets no new flows: {counts:?}");
    assert_eq!(counts.get("h3"), Some(&10), "{counts:?}");

    held.write_all(b"still here\n").unwrap();
    let mut line = String::new();
    BufReader::new(&held).read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n", "the open connection survived the reload");
}

#[test]
fn an_invalid_reload_keeps_the_running_config() {
    let backend = TcpBackend::start("keep");
    let listen = service_addr();
    let mut lbd = Lbd::start(&one_service("tcp", listen, "rr", &[(backend.address, 1)], ""));
    std::fs::write(
        lbd.config_path(),
        "services:\n  - protocol: tcp\n    listen: nowhere\n",
    )
    .unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("reload refused", 1);
    assert!(
        lbd.log_text().contains("invalid address `nowhere`"),
        "{}",
        lbd.log_text()
    );
    assert_eq!(connect_and_greet(listen).0, "keep");
}

#[test]
fn reload_adds_and_removes_services() {
    let backend = TcpBackend::start("moved");
    let (first, second) = (service_addr(), service_addr());
    let mut lbd = Lbd::start(&one_service("tcp", first, "rr", &[(backend.address, 1)], ""));
    std::fs::write(
        lbd.config_path(),
        one_service("tcp", second, "rr", &[(backend.address, 1)], ""),
    )
    .unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    assert_eq!(connect_and_greet(second).0, "moved");
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(first).is_ok() {
        assert!(Instant::now() < deadline, "the removed service still accepts");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_drains_then_exits_zero() {
    let backend = TcpBackend::start("d");
    let listen = service_addr();
    let mut lbd = Lbd::start(&one_service("tcp", listen, "rr", &[(backend.address, 1)], ""));
    let (_, mut held) = connect_and_greet(listen);
    lbd.signal(Signal::SIGTERM);
    lbd.wait_for_log("stopping", 1);
    // New connections are refused once the listeners are closed...
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(listen).is_ok() {
        assert!(Instant::now() < deadline, "lbd still accepts after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ...while the open one keeps working,
    held.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    BufReader::new(&held).read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    // and lbd exits 0 as soon as it closes, well before the 10 s drain timeout.
    let closed = Instant::now();
    drop(held);
    let status = lbd.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(closed.elapsed() < Duration::from_secs(3));
    assert!(lbd.log_text().contains("all flows finished"));
}

#[test]
fn drain_timeout_bounds_the_wait() {
    let backend = TcpBackend::start("slow");
    let listen = service_addr();
    let config = one_service("tcp", listen, "rr", &[(backend.address, 1)], "")
        .replace("drain_timeout: 10s", "drain_timeout: 500ms");
    let mut lbd = Lbd::start(&config);
    let (_, _held) = connect_and_greet(listen);
    let started = Instant::now();
    lbd.signal(Signal::SIGTERM);
    let status = lbd.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "waited for the open flow"
    );
    assert!(lbd.log_text().contains("drain timeout reached"));
}

#[test]
fn listen_address_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let backend = TcpBackend::start("x");
    let mut lbd = Lbd::spawn(&one_service("tcp", listen, "rr", &[(backend.address, 1)], ""));
    let status = lbd.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    let log = lbd.log_text();
    assert!(
        log.contains(&format!("cannot listen on tcp:{listen}: address already in use")),
        "{log}"
    );
}

#[test]
fn no_available_real_resets_the_client() {
    let backend = TcpBackend::start("q");
    let listen = service_addr();
    let _lbd = Lbd::start(&one_service("tcp", listen, "rr", &[(backend.address, 0)], ""));
    let mut stream = TcpStream::connect(listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buffer = [0u8; 16];
    let result = stream.read(&mut buffer);
    assert!(
        matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
            || matches!(result, Ok(0)),
        "{result:?}"
    );
}

#[test]
fn a_reset_from_the_real_reaches_the_client() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut line = [0u8; 5];
            let _ = stream.read_exact(&mut line);
            // Close with a zero linger: the kernel sends RST.
            socket2::SockRef::from(&stream)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
        }
    });
    let listen = service_addr();
    let _lbd = Lbd::start(&one_service("tcp", listen, "rr", &[(backend, 1)], ""));
    let mut stream = TcpStream::connect(listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"reset").unwrap();
    let mut buffer = [0u8; 8];
    let result = stream.read(&mut buffer);
    assert!(
        matches!(&result, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected a reset, got {result:?}"
    );
}

#[test]
fn an_idle_connection_is_closed_after_timeouts_tcp() {
    let backend = TcpBackend::start("idle");
    let listen = service_addr();
    let config = one_service(
        "tcp",
        listen,
        "rr",
        &[(backend.address, 1)],
        "timeouts: { tcp: 400ms }\n",
    );
    let _lbd = Lbd::start(&config);
    let (_, mut active) = connect_and_greet(listen);
    let (_, mut idle) = connect_and_greet(listen);
    // Traffic keeps one connection alive past the timeout; the other is closed.
    let started = Instant::now();
    let mut line = String::new();
    let mut reader = BufReader::new(active.try_clone().unwrap());
    while started.elapsed() < Duration::from_millis(900) {
        active.write_all(b"tick\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "tick\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut buffer = [0u8; 8];
    let closed = idle.read(&mut buffer);
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the idle connection was closed: {closed:?}"
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "closed near the 400 ms timeout, not later ({elapsed:?})"
    );
}

#[test]
fn the_sorry_server_serves_only_while_no_real_is_available() {
    let real = TcpBackend::start("real");
    let sorry = TcpBackend::start("sorry");
    let listen = service_addr();
    let with_sorry = |weight: u32| {
        one_service("tcp", listen, "rr", &[(real.address, weight)], "").replace(
            "    scheduler: rr\n",
            &format!("    scheduler: rr\n    sorry_server: {}\n", sorry.address),
        )
    };
    // The only real is quiesced: every new flow goes to the sorry server.
    let mut lbd = Lbd::start(&with_sorry(0));
    assert_eq!(distribution(listen, 5).get("sorry"), Some(&5));
    // As soon as a real is available again, flows go back to it.
    std::fs::write(lbd.config_path(), with_sorry(1)).unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    assert_eq!(distribution(listen, 5).get("real"), Some(&5));
}

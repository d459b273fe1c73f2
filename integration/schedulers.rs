//! Schedulers end to end: the real lbd, real backends, choices checked against IPVS's rules.

use std::net::{SocketAddr, TcpStream};

use socket2::{Domain, Socket, Type};

use crate::support::*;

fn service_addr() -> SocketAddr {
    free_addr()
}

/// The kernel's rule for lc / wlc over reals in list order (most recently added first, so the
/// reverse of the config): the first real with the least `active / weight` (cross-multiplied),
/// every held connection being active.
fn expected_picks(weights_in_config_order: &[u32], connections: usize) -> Vec<usize> {
    let list: Vec<usize> = (0..weights_in_config_order.len()).rev().collect();
    let mut active = vec![0u64; weights_in_config_order.len()];
    let mut picks = Vec::new();
    for _ in 0..connections {
        let mut best = list[0];
        for &i in &list[1..] {
            let (w_best, w_i) = (
                u64::from(weights_in_config_order[best]),
                u64::from(weights_in_config_order[i]),
            );
            if (active[best] << 8) * w_i > (active[i] << 8) * w_best {
                best = i;
            }
        }
        active[best] += 1;
        picks.push(best);
    }
    picks
}

fn held_connection_picks(scheduler: &str, weights: &[u32], connections: usize) {
    let backends: Vec<_> = (0..weights.len())
        .map(|i| TcpBackend::start(&format!("r{i}")))
        .collect();
    let listen = service_addr();
    let reals: Vec<_> = backends
        .iter()
        .zip(weights)
        .map(|(b, &w)| (b.address, w))
        .collect();
    let _lbd = Lbd::start(&one_service("tcp", listen, scheduler, &reals, ""));
    let mut held = Vec::new();
    let mut got = Vec::new();
    for _ in 0..connections {
        // Each connection stays open (ActiveConn) while the next is scheduled.
        let (name, stream) = connect_and_greet(listen);
        got.push(name[1..].parse::<usize>().unwrap());
        held.push(stream);
    }
    assert_eq!(
        got,
        expected_picks(weights, connections),
        "{scheduler} {weights:?}"
    );
}

#[test]
fn lc_with_held_connections_follows_the_formula() {
    held_connection_picks("lc", &[1, 1, 1], 9);
}

#[test]
fn wlc_with_held_connections_follows_the_formula() {
    held_connection_picks("wlc", &[1, 2, 3], 12);
}

/// Connects from `source` (an address on loopback) and returns the backend that answered.
fn greet_from(source: [u8; 4], service: SocketAddr) -> String {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    socket.connect(&service.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&stream), &mut line).unwrap();
    line.trim_end().to_owned()
}

#[test]
fn sh_keeps_each_of_30_sources_on_one_real() {
    let backends: Vec<_> = (0..4).map(|i| TcpBackend::start(&format!("s{i}"))).collect();
    let listen = service_addr();
    let reals: Vec<_> = backends.iter().map(|b| (b.address, 1)).collect();
    let _lbd = Lbd::start(&one_service("tcp", listen, "sh", &reals, ""));
    let mut used = std::collections::HashSet::new();
    for host in 1..=30u8 {
        let source = [127, 0, 0, host + 10];
        let first = greet_from(source, listen);
        for _ in 0..3 {
            assert_eq!(greet_from(source, listen), first, "source {source:?} moved");
        }
        used.insert(first);
    }
    assert!(used.len() >= 3, "30 sources spread over the reals: {used:?}");
}

#[test]
fn persistence_keeps_a_client_then_lets_it_move_after_expiry() {
    let backends: Vec<_> = (0..3).map(|i| TcpBackend::start(&format!("p{i}"))).collect();
    let listen = service_addr();
    let reals: Vec<_> = backends.iter().map(|b| (b.address, 1)).collect();
    let config = one_service("tcp", listen, "rr", &reals, "").replace(
        "    scheduler: rr\n",
        "    scheduler: rr\n    persistence: { timeout: 1s }\n",
    );
    let _lbd = Lbd::start(&config);
    let first = greet_from([127, 0, 0, 7], listen);
    for _ in 0..5 {
        assert_eq!(
            greet_from([127, 0, 0, 7], listen),
            first,
            "persistent within the timeout"
        );
    }
    // Another client is scheduled by rr meanwhile, and does not disturb the first.
    let other = greet_from([127, 0, 0, 8], listen);
    assert_ne!(other, first);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_ne!(
        greet_from([127, 0, 0, 7], listen),
        first,
        "after expiry rr moves the client on"
    );
}

/// Short connections are spread by weight under wlc, because closed flows keep counting in
/// InActConn for TIME_WAIT, as in IPVS: one client after another splits exactly by weight;
/// with 3 clients at once, open flows (each weighing as much as 256 closed ones, IPVS's rule)
/// tilt the split a little towards the lightest real.
#[test]
fn wlc_honours_weights_under_short_connections() {
    let backends: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|name| TcpBackend::start(name))
        .collect();
    let listen = service_addr();
    let weights = [4, 4, 1];
    let reals: Vec<(SocketAddr, u32)> = backends
        .iter()
        .zip(weights)
        .map(|(backend, weight)| (backend.address, weight))
        .collect();
    let _lbd = Lbd::start(&one_service("tcp", listen, "wlc", &reals, ""));
    // Sequential clients, then concurrent ones.
    let mut counts = distribution(listen, 1500);
    println!("one client at a time: {counts:?}");
    for (name, expected) in [("a", 666), ("b", 667), ("c", 167)] {
        assert!(counts[name].abs_diff(expected) <= 45, "{name}: {counts:?}");
    }
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || distribution(listen, 300)))
        .collect();
    for client in clients {
        for (name, n) in client.join().unwrap() {
            *counts.entry(name).or_insert(0) += n;
        }
    }
    let total: usize = counts.values().sum();
    let share = |name: &str| counts.get(name).copied().unwrap_or(0) as f64 * 100.0 / total as f64;
    println!(
        "wlc 4:4:1 over {total} short connections: {:.1} / {:.1} / {:.1} %",
        share("a"),
        share("b"),
        share("c")
    );
    for (name, expected) in [("a", 44.4), ("b", 44.4), ("c", 11.1)] {
        assert!(
            (share(name) - expected).abs() <= 3.0,
            "{name}: {:.1} % (expected {expected} ± 3): {counts:?}",
            share(name)
        );
    }
}

//! UDP proxy behaviour end to end.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::support::*;

fn ask(client: &UdpSocket, service: SocketAddr) -> String {
    client.send_to(b"hello", service).unwrap();
    let mut buffer = [0u8; 256];
    let (n, from) = client.recv_from(&mut buffer).expect("a reply through lbd");
    assert_eq!(from, service, "replies come from the service address");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn client() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    socket
}

#[test]
fn udp_rr_over_30_clients() {
    let backends: Vec<_> = (1..=3)
        .map(|i| (format!("u{i}"), UdpBackend::start(&format!("u{i}"))))
        .collect();
    let listen = free_addr();
    let reals: Vec<_> = backends.iter().map(|(_, b)| (b.address, 1)).collect();
    let _lbd = Lbd::start(&one_service("udp", listen, "rr", &reals, ""));
    let clients: Vec<UdpSocket> = (0..30).map(|_| client()).collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut first_answer = Vec::new();
    for client in &clients {
        let name = ask(client, listen);
        *counts.entry(name.clone()).or_default() += 1;
        first_answer.push(name);
    }
    for (name, _) in &backends {
        assert_eq!(counts.get(name), Some(&10), "{counts:?}");
    }
    // A session sticks: each client's next datagram reaches the same real.
    for (client, name) in clients.iter().zip(&first_answer) {
        assert_eq!(&ask(client, listen), name);
    }
}

#[test]
fn one_packet_schedules_every_datagram() {
    let backends: Vec<_> = (1..=2).map(|i| UdpBackend::start(&format!("o{i}"))).collect();
    let listen = free_addr();
    let reals: Vec<_> = backends.iter().map(|b| (b.address, 1)).collect();
    let config = one_service("udp", listen, "rr", &reals, "")
        .replace("    scheduler: rr\n", "    scheduler: rr\n    one_packet: true\n");
    let _lbd = Lbd::start(&config);
    let client = client();
    let answers: Vec<String> = (0..6).map(|_| ask(&client, listen)).collect();
    let o1 = answers.iter().filter(|a| *a == "o1").count();
    assert_eq!(o1, 3, "one client alternates between reals: {answers:?}");
}

#[test]
fn udp_session_idles_out_and_is_rescheduled() {
    let backends: Vec<_> = (1..=2).map(|i| UdpBackend::start(&format!("i{i}"))).collect();
    let listen = free_addr();
    let reals: Vec<_> = backends.iter().map(|b| (b.address, 1)).collect();
    let config = one_service("udp", listen, "rr", &reals, "timeouts: { udp: 300ms }\n");
    let _lbd = Lbd::start(&config);
    let client = client();
    let first = ask(&client, listen);
    assert_eq!(ask(&client, listen), first, "same session within the timeout");
    std::thread::sleep(Duration::from_millis(700));
    assert_ne!(
        ask(&client, listen),
        first,
        "a new session after the idle timeout goes to the next real"
    );
}

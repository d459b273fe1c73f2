//! IPv6 in proxy mode, in a network namespace of the test's own (its loopback holds the
//! test's IPv6 addresses, so no address or port is shared with anything else): IPv6 VIPs and
//! reals for TCP and UDP, both mixes of families, a dual-stack listener, health checks and the
//! sorry server over IPv6, node-set ranges of IPv6 reals, and lbadm's ipvsadm layout. Needs
//! root (the namespace); without it the test says why it skips.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    lvs::{in_netns, ip, root},
    netns::{delete_namespaces, lbadm_in},
    support::*,
};

pub(crate) const VIP6: &str = "fd00:77::100";
pub(crate) const REAL1: &str = "fd00:77::11";
pub(crate) const REAL2: &str = "fd00:77::12";

/// The test's namespace; deleted when dropped.
pub(crate) struct Namespace(pub(crate) String);

impl Drop for Namespace {
    fn drop(&mut self) {
        delete_namespaces(std::slice::from_ref(&self.0), &[]);
    }
}

/// A namespace whose loopback holds the VIP, two IPv6 reals and an IPv4 real.
pub(crate) fn namespace() -> Namespace {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("v{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    ip(&format!("netns add {name}"));
    let namespace = Namespace(name.clone());
    ip(&format!("-n {name} link set lo up"));
    for address in [VIP6, REAL1, REAL2] {
        ip(&format!("-n {name} addr add {address}/128 dev lo nodad"));
    }
    for address in ["10.77.0.100", "10.77.0.11"] {
        ip(&format!("-n {name} addr add {address}/32 dev lo"));
    }
    namespace
}

/// A backend at `address`: TCP greets with `name` and the client's address, then echoes; UDP
/// answers `name`. Once `stop` is set, the next connection is closed and the listener too.
fn backend(namespace: &str, name: &'static str, address: SocketAddr, stop: Arc<AtomicBool>) {
    in_netns(namespace, move || {
        let listener = TcpListener::bind(address).unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if stop.load(Ordering::SeqCst) {
                    // Stopped: this connection is closed, and the listener with it.
                    drop(stream);
                    break;
                }
                thread::spawn(move || {
                    let peer = stream.peer_addr().unwrap().ip();
                    if stream.write_all(format!("{name} {peer}\n").as_bytes()).is_err() {
                        return;
                    }
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let socket = UdpSocket::bind(SocketAddr::new(address.ip(), address.port() - 8080 + 5353)).unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(name.as_bytes(), peer);
            }
        });
    });
}

/// The greeting of a new connection to `service`, or why there was none.
fn greet(service: SocketAddr) -> Result<String, String> {
    let stream =
        TcpStream::connect_timeout(&service, Duration::from_secs(2)).map_err(|error| error.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|error| error.to_string())?;
    Ok(line.trim().to_owned())
}

/// Which backend answered each of `n` new connections.
fn spread(service: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let name = greet(service)
            .map(|line| line.split_whitespace().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|error| format!("error: {error}"));
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn config() -> String {
    format!(
        "admin: {{ listen: 127.0.0.1:9900 }}\nmetrics: {{ listen: 127.0.0.1:9901 }}\nworkers: 1\nservices:\n\
  - {{ name: web6, protocol: tcp, listen: '[{VIP6}]:80', scheduler: rr, reals: [{{ address: '[fd00:77::[11-12]]:8080' }}],\n\
      health_check: {{ type: tcp, interval: 200ms, timeout: 500ms, rise: 1, fall: 1 }} }}\n\
  - {{ name: dns6, protocol: udp, listen: '[{VIP6}]:53', scheduler: rr, reals: [{{ address: 'fd00:77::[11-12]' , weight: 1 }}] }}\n\
  - {{ name: v4-to-v6, protocol: tcp, listen: '10.77.0.100:81', reals: [{{ address: '[{REAL1}]:8080' }}] }}\n\
  - {{ name: v6-to-v4, protocol: tcp, listen: '[{VIP6}]:82', reals: [{{ address: '10.77.0.11:8081' }}] }}\n\
  - {{ name: dual, protocol: tcp, listen: '[::]:90', ipv6_only: false, reals: [{{ address: '[{REAL2}]:8080' }}] }}\n\
  - {{ name: sorry6, protocol: tcp, listen: '[{VIP6}]:83', reals: [{{ address: '[fd00:77::13]:8080' }}], sorry_server: '[{REAL2}]:8080',\n\
      health_check: {{ type: tcp, interval: 200ms, timeout: 500ms, rise: 1, fall: 1 }} }}\n"
    )
}

#[test]
fn ipv6_vips_and_reals_work_in_proxy_mode_with_either_family_on_either_side() {
    if !root() {
        return;
    }
    let namespace = namespace();
    let ns = namespace.0.clone();
    let stop1 = Arc::new(AtomicBool::new(false));
    backend(
        &ns,
        "real1",
        format!("[{REAL1}]:8080").parse().unwrap(),
        Arc::clone(&stop1),
    );
    backend(
        &ns,
        "real2",
        format!("[{REAL2}]:8080").parse().unwrap(),
        Arc::new(AtomicBool::new(false)),
    );
    backend(
        &ns,
        "real4",
        "10.77.0.11:8081".parse().unwrap(),
        Arc::new(AtomicBool::new(false)),
    );
    // The UDP services' port: 5353 for the IPv6 reals (their `address` gives no port, so the
    // service's 53 applies: map it).
    let _lbd = Lbd::start_in(
        &ns,
        &config().replace("'fd00:77::[11-12]' ", "'[fd00:77::[11-12]]:5353' "),
    );

    let tcp: SocketAddr = format!("[{VIP6}]:80").parse().unwrap();
    let (counts, big) = in_netns(&ns, move || {
        let counts = spread(tcp, 20);
        // 1 MB up and 1 MB down through the IPv6 VIP.
        let stream = TcpStream::connect(tcp).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut greeting = String::new();
        reader.read_line(&mut greeting).unwrap();
        let sent: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let (mut stream, sent) = (stream.try_clone().unwrap(), sent.clone());
            thread::spawn(move || stream.write_all(&sent).unwrap())
        };
        let mut echoed = vec![0u8; sent.len()];
        reader.read_exact(&mut echoed).unwrap();
        writer.join().unwrap();
        (counts, echoed == sent)
    });
    assert_eq!(counts.get("real1"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("real2"), Some(&10), "{counts:?}");
    assert!(big, "1 MB went up and came back down unchanged");

    // UDP through the IPv6 VIP, each datagram from its own port, spread by rr.
    let udp: SocketAddr = format!("[{VIP6}]:53").parse().unwrap();
    let answers = in_netns(&ns, move || {
        let mut answers: HashMap<String, usize> = HashMap::new();
        for _ in 0..20 {
            let socket = UdpSocket::bind("[::1]:0").unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            socket.send_to(b"q", udp).unwrap();
            let mut buffer = [0u8; 64];
            let name = match socket.recv(&mut buffer) {
                Ok(n) => String::from_utf8_lossy(&buffer[..n]).into_owned(),
                Err(error) => format!("error: {error}"),
            };
            *answers.entry(name).or_default() += 1;
        }
        answers
    });
    assert_eq!(answers.get("real1"), Some(&10), "{answers:?}");
    assert_eq!(answers.get("real2"), Some(&10), "{answers:?}");

    // Mixed families both ways, and a dual-stack listener taking both families.
    let greetings = in_netns(&ns, move || {
        [
            "10.77.0.100:81".to_owned(),
            format!("[{VIP6}]:82"),
            "127.0.0.1:90".to_owned(),
            "[::1]:90".to_owned(),
        ]
        .map(|service| greet(service.parse().unwrap()))
    });
    assert!(
        greetings[0]
            .as_ref()
            .is_ok_and(|line| line.starts_with("real1 fd00:77::")),
        "{greetings:?}"
    );
    assert!(
        greetings[1]
            .as_ref()
            .is_ok_and(|line| line.starts_with("real4 10.77.0.11")),
        "{greetings:?}"
    );
    assert!(
        greetings[2].as_ref().is_ok_and(|line| line.starts_with("real2")),
        "{greetings:?}"
    );
    assert!(
        greetings[3].as_ref().is_ok_and(|line| line.starts_with("real2")),
        "{greetings:?}"
    );

    // The sorry server answers for a service whose only real is down (checked over IPv6).
    let sorry: SocketAddr = format!("[{VIP6}]:83").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = in_netns(&ns, move || greet(sorry));
        if answer.as_ref().is_ok_and(|line| line.starts_with("real2")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sorry server never answered: {answer:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }

    // lbadm: ipvsadm's IPv6 layout, and IPv6 ranges.
    let (code, listing, err) = lbadm_in(&ns, &["list", "-n"]);
    assert_eq!(code, 0, "{err}");
    assert!(listing.contains(&format!("TCP  [{VIP6}]:80 rr")), "{listing}");
    assert!(listing.contains(&format!("  -> [{REAL1}]:8080")), "{listing}");
    assert!(listing.contains("TCP  [::]:90 wlc"), "{listing}");
    let service = format!("[{VIP6}]:80");
    let (code, _, err) = lbadm_in(
        &ns,
        &[
            "add-real",
            "-t",
            &service,
            "-r",
            "[fd00:77::[13-14]]:8080",
            "-w",
            "0",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, listing, _) = lbadm_in(&ns, &["list", "-n", "-t", &service]);
    assert!(
        listing.contains("[fd00:77::13]:8080") && listing.contains("[fd00:77::14]:8080"),
        "{listing}"
    );
    let (code, _, err) = lbadm_in(
        &ns,
        &["del-real", "-t", &service, "-r", "[fd00:77::[13-14]]:8080"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, metrics) = in_netns(&ns, || {
        http_fetch("127.0.0.1:9901".parse().unwrap(), "GET", "/metrics", b"").unwrap()
    });
    assert!(
        metrics.contains(&format!("real=\"[{REAL1}]:8080\"")),
        "the metrics label IPv6 reals as ipvsadm writes them"
    );

    // real1 stops taking connections: its health check (over IPv6) takes it out, and new
    // flows all go to real2.
    stop1.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let counts = in_netns(&ns, move || spread(tcp, 10));
        if counts.get("real2") == Some(&10) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "real1 still gets new flows: {counts:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

//! The packet data plane in network namespaces built from scratch: a
//! client, the director running the real `lbd`, two real servers. Needs root; without it the
//! tests say why they skip. Every namespace (and with it every veth, bridge and TUN) is
//! deleted at the end, pass or fail.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    thread,
    time::Duration,
};

use crate::support::*;

const VIP: &str = "192.168.77.100";
const CLIENT: &str = "192.168.77.2";

/// One address family's addresses in the topology: the client's network (with the VIP in
/// it, answered by the director's proxy ARP or proxy NDP) and the reals' network.
#[derive(Debug, Clone, Copy)]
struct Family {
    vip: &'static str,
    client: &'static str,
    reals: [&'static str; 2],
    /// The unspecified address (to bind a client's socket).
    any: &'static str,
}

const IPV4: Family = Family {
    vip: VIP,
    client: CLIENT,
    reals: ["10.77.0.11", "10.77.0.12"],
    any: "0.0.0.0",
};

const IPV6: Family = Family {
    vip: "fd00:77::100",
    client: "fd00:77::2",
    reals: ["fd00:10::11", "fd00:10::12"],
    any: "::",
};

impl Family {
    fn is_ipv6(&self) -> bool {
        self.vip.contains(':')
    }

    /// `ip:port` in this family's notation.
    fn at(&self, ip: &str, port: u16) -> String {
        if self.is_ipv6() {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    }

    /// The `ip` command's family option.
    fn ip_option(&self) -> &'static str {
        if self.is_ipv6() { "-6" } else { "-4" }
    }
}

/// The four namespaces of one test; deleted when dropped.
struct Topology {
    client: String,
    director: String,
    reals: [String; 2],
}

impl Drop for Topology {
    fn drop(&mut self) {
        // lbd keeps how to undo its host setup in /run/lbd, per network namespace; a killed
        // lbd leaves its journal there.
        use std::os::unix::fs::MetadataExt;
        if let Ok(namespace) = std::fs::metadata(format!("/run/netns/{}", self.director))
            && let Ok(entries) = std::fs::read_dir("/run/lbd")
        {
            let suffix = format!("-net{}", namespace.ino());
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().ends_with(&suffix) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        for namespace in [&self.client, &self.director, &self.reals[0], &self.reals[1]] {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
    }
}

pub(crate) fn root() -> bool {
    // SAFETY-free: read our effective uid from /proc.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        skipped("the packet data plane tests need root (network namespaces, TUN)");
        return false;
    }
    true
}

/// Runs `ip args…`, failing the test with its message if it fails.
pub(crate) fn ip(args: &str) {
    let output = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip (iproute2)");
    assert!(
        output.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

pub(crate) fn sysctl(namespace: &str, key: &str, value: &str) {
    ip(&format!("netns exec {namespace} sysctl -qw {key}={value}"));
}

/// Builds the base topology: client 192.168.77.2 — director (192.168.77.1 / br0 10.77.0.1) —
/// reals 10.77.0.11 and .12 on the bridge, their gateway the director.
fn topology() -> Topology {
    let topology = base_topology();
    sysctl(&topology.director, "net.ipv6.conf.all.disable_ipv6", "1");
    topology
}

/// The namespaces, links and IPv4 addresses of [`topology`].
fn base_topology() -> Topology {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let tag = format!("u{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
    let topology = Topology {
        client: format!("{tag}cl"),
        director: format!("{tag}dir"),
        reals: [format!("{tag}rs1"), format!("{tag}rs2")],
    };
    let (cl, dir) = (&topology.client, &topology.director);
    for namespace in [cl, dir, &topology.reals[0], &topology.reals[1]] {
        ip(&format!("netns add {namespace}"));
        ip(&format!("-n {namespace} link set lo up"));
    }
    ip(&format!(
        "-n {dir} link add dcl0 type veth peer name cl0 netns {cl}"
    ));
    ip(&format!("-n {cl} addr add {CLIENT}/24 dev cl0"));
    ip(&format!("-n {cl} link set cl0 up"));
    ip(&format!("-n {dir} addr add 192.168.77.1/24 dev dcl0"));
    ip(&format!("-n {dir} link set dcl0 up"));
    ip(&format!("-n {cl} route add default via 192.168.77.1"));
    ip(&format!("-n {dir} link add br0 type bridge"));
    ip(&format!(
        "-n {dir} link set br0 type bridge stp_state 0 forward_delay 0"
    ));
    ip(&format!("-n {dir} addr add 10.77.0.1/24 dev br0"));
    ip(&format!("-n {dir} link set br0 up"));
    for (i, real) in topology.reals.iter().enumerate() {
        let n = i + 1;
        ip(&format!(
            "-n {dir} link add d-rs{n} type veth peer name r0 netns {real}"
        ));
        ip(&format!("-n {dir} link set d-rs{n} master br0"));
        ip(&format!("-n {dir} link set d-rs{n} up"));
        ip(&format!("-n {real} addr add 10.77.0.1{n}/24 dev r0"));
        ip(&format!("-n {real} link set r0 up"));
        ip(&format!("-n {real} route add default via 10.77.0.1"));
    }
    topology
}

/// The base topology with IPv6 beside IPv4: client fd00:77::2 — director (fd00:77::1 /
/// br0 fd00:10::1) — reals fd00:10::11 and ::12, their gateway the director.
fn dual_stack_topology() -> Topology {
    let topology = base_topology();
    let (cl, dir) = (&topology.client, &topology.director);
    ip(&format!("-n {cl} addr add fd00:77::2/64 dev cl0 nodad"));
    ip(&format!("-n {cl} -6 route add default via fd00:77::1"));
    ip(&format!("-n {dir} addr add fd00:77::1/64 dev dcl0 nodad"));
    ip(&format!("-n {dir} addr add fd00:10::1/64 dev br0 nodad"));
    for (i, real) in topology.reals.iter().enumerate() {
        ip(&format!("-n {real} addr add {}/64 dev r0 nodad", IPV6.reals[i]));
        ip(&format!("-n {real} -6 route add default via fd00:10::1"));
    }
    // Link-local addresses are tentative for a second or two (duplicate address detection);
    // neighbour discovery misbehaves meanwhile (a health check's first connection can time
    // out), so the test starts once they are settled, as on a host that has been up a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for namespace in [cl, dir, &topology.reals[0], &topology.reals[1]] {
        while !Command::new("ip")
            .args(["-n", namespace, "-6", "addr", "show", "tentative"])
            .output()
            .is_ok_and(|output| output.stdout.is_empty())
        {
            assert!(
                std::time::Instant::now() < deadline,
                "IPv6 addresses stay tentative in {namespace}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
    topology
}

/// Runs `work` on a thread inside `namespace` (threads it starts stay there too).
pub(crate) fn in_netns<T: Send + 'static>(namespace: &str, work: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{namespace}");
    thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        work()
    })
    .join()
    .unwrap()
}

/// A TCP server on port 8080 that greets with its name and the client's address, then echoes;
/// and a UDP server on 5353 that answers with its name. Runs until the namespace goes.
pub(crate) fn start_servers(
    namespace: &str,
    name: &'static str,
    udp_ip: &'static str,
) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = std::sync::Arc::clone(&stopped);
    in_netns(namespace, move || {
        // Both families (IPv4 clients appear as v4-mapped, shown canonical).
        let listener = TcpListener::bind("[::]:8080").unwrap();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                if stop.load(Ordering::SeqCst) {
                    // Stopped: refuse by closing at once (and the health check sees resets).
                    drop(stream);
                    break;
                }
                thread::spawn(move || {
                    let peer = stream.peer_addr().unwrap().ip().to_canonical();
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
        // dr and tun: UDP replies must come from the VIP, so the server binds it.
        let socket = UdpSocket::bind(SocketAddr::new(udp_ip.parse().unwrap(), 5353)).unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while let Ok((_, peer)) = socket.recv_from(&mut buffer) {
                let _ = socket.send_to(name.as_bytes(), peer);
            }
        });
    });
    stopped
}

/// The config of one mode: a TCP service (health-checked) and a UDP one over both reals.
/// nat maps ports (80 → 8080, 53 → 5353); dr and tun keep them.
fn config(mode: &str) -> String {
    config_of(mode, IPV4)
}

/// [`config`] for one address family's VIP and reals.
fn config_of(mode: &str, family: Family) -> String {
    let (tcp_port, udp_port) = if mode == "nat" { (80, 53) } else { (8080, 5353) };
    let [rs1, rs2] = family.reals;
    let (vip_tcp, vip_udp) = (family.at(family.vip, tcp_port), family.at(family.vip, udp_port));
    let (rs1_tcp, rs2_tcp) = (family.at(rs1, 8080), family.at(rs2, 8080));
    let (rs1_udp, rs2_udp) = (family.at(rs1, 5353), family.at(rs2, 5353));
    format!(
        "workers: 2\ndrain_timeout: 1s\nadmin: {{ listen: '127.0.0.1:9900' }}\ndataplane: {{ tun: lbtun0, server_interface: br0, setup: auto, max_flows: 10000 }}\nservices:\n  - name: web\n    protocol: tcp\n    listen: '{vip_tcp}'\n    scheduler: rr\n    forward: {mode}\n    health_check: {{ type: tcp, port: 8080, interval: 300ms, timeout: 300ms, rise: 1, fall: 1 }}\n    reals:\n      - address: '{rs1_tcp}'\n      - address: '{rs2_tcp}'\n  - name: dns\n    protocol: udp\n    listen: '{vip_udp}'\n    scheduler: rr\n    forward: {mode}\n    reals:\n      - address: '{rs1_udp}'\n      - address: '{rs2_udp}'\n"
    )
}

/// A nat UDP service on port 54 whose real does not listen (5454): its ICMP port unreachable
/// comes back translated.
fn closed_service(family: Family) -> String {
    let (vip, real) = (family.at(family.vip, 54), family.at(family.reals[0], 5454));
    format!(
        "  - name: closed\n    protocol: udp\n    listen: '{vip}'\n    forward: nat\n    reals:\n      - address: '{real}'\n"
    )
}

/// A process killed when the test ends.
pub(crate) struct Running(pub(crate) std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The real-server side of dr and tun: the VIP on `lo`, no ARP answers for it (IPv6 answers
/// neighbour solicitations only for addresses of the link they arrive on); for tun, the
/// decapsulator (`lbd ipip-decap`, this kernel has no ipip or ip6tnl device).
fn prepare_reals(topology: &Topology, mode: &str, family: Family) -> Vec<Running> {
    let mut helpers = Vec::new();
    if mode == "nat" {
        return helpers;
    }
    let host_len = if family.is_ipv6() { 128 } else { 32 };
    for real in &topology.reals {
        ip(&format!("-n {real} addr add {}/{host_len} dev lo", family.vip));
        for key in ["all.arp_ignore", "r0.arp_ignore"] {
            sysctl(real, &format!("net.ipv4.conf.{key}"), "1");
        }
        for key in ["all.arp_announce", "r0.arp_announce"] {
            sysctl(real, &format!("net.ipv4.conf.{key}"), "2");
        }
        sysctl(real, "net.ipv4.conf.all.rp_filter", "0");
        if mode == "tun" {
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    real,
                    lbd_binary(),
                    "ipip-decap",
                    "--vip",
                    family.vip,
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            helpers.push(Running(child));
        }
    }
    if mode == "tun" {
        // Wait for the decapsulators' devices.
        for real in &topology.reals {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !Command::new("ip")
                .args(["-n", real, "link", "show", "ipipdecap0"])
                .output()
                .is_ok_and(|output| output.status.success())
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "ipip-decap did not start in {real}"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    helpers
}

/// Connects from the client namespace; returns the greeting (server name and the client
/// address it saw) and the stream.
fn greet(client: &str, port: u16) -> (String, TcpStream) {
    greet_at(client, format!("{VIP}:{port}"))
}

/// [`greet`] at `vip` (`address:port`).
fn greet_at(client: &str, vip: String) -> (String, TcpStream) {
    in_netns(client, move || {
        let vip: SocketAddr = vip.parse().unwrap();
        let stream = TcpStream::connect_timeout(&vip, Duration::from_secs(5)).expect("connect to the VIP");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(stream.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (line.trim().to_owned(), stream)
    })
}

/// Sends 1 MB up through `vip` from the client namespace and reads it back echoed (the
/// reals' servers echo), failing the test with `what` if it does not all come back unchanged.
fn echo_a_megabyte(client: &str, vip: String, what: &str) {
    let (_, mut stream) = greet_at(client, vip);
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let mut reader = stream.try_clone().unwrap();
    let writer = thread::spawn(move || stream.write_all(&sent).unwrap());
    let mut echoed = vec![0u8; payload.len()];
    reader
        .read_exact(&mut echoed)
        .unwrap_or_else(|error| panic!("1 MB {what}: {error}"));
    writer.join().unwrap();
    assert!(echoed == payload, "1 MB {what}: the echo differs");
}

#[test]
fn nat_balances_tcp_and_udp_keeps_the_client_address_and_follows_health() {
    forwards("nat", IPV4);
}

#[test]
fn dr_balances_tcp_and_udp_keeps_the_client_address_and_follows_health() {
    forwards("dr", IPV4);
}

#[test]
fn tun_balances_tcp_and_udp_keeps_the_client_address_and_follows_health() {
    forwards("tun", IPV4);
}

#[test]
fn nat_over_ipv6_balances_tcp_and_udp_keeps_the_client_address_and_follows_health() {
    forwards("nat", IPV6);
}

#[test]
fn dr_over_ipv6_balances_tcp_and_udp_keeps_the_client_address_and_follows_health() {
    forwards("dr", IPV6);
}

#[test]
fn tun_over_ipv6_balances_tcp_and_udp_keeps_the_client_address_and_follows_health() {
    forwards("tun", IPV6);
}

/// Through `mode` over `family`: rr over both reals for TCP and UDP, the client's address
/// seen by the real, 1 MB up and down, a real's ICMP error translated back (nat), and a real
/// stopped mid-test dropped by its health check.
fn forwards(mode: &str, family: Family) {
    if !root() {
        return;
    }
    let topology = if family.is_ipv6() {
        dual_stack_topology()
    } else {
        topology()
    };
    let _helpers = prepare_reals(&topology, mode, family);
    let udp_ip = if mode == "nat" { family.any } else { family.vip };
    let udp_ip: &'static str = udp_ip;
    let _rs1 = start_servers(&topology.reals[0], "rs1", udp_ip);
    let rs2 = start_servers(&topology.reals[1], "rs2", udp_ip);
    let (tcp_port, udp_port) = if mode == "nat" { (80, 53) } else { (8080, 5353) };
    let mut config = config_of(mode, family);
    if mode == "nat" {
        config += &closed_service(family);
    }
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);
    let route = Command::new("ip")
        .args([
            "-n",
            &topology.director,
            family.ip_option(),
            "route",
            "show",
            family.vip,
        ])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    // Oversize packets to a tunnelled VIP are answered with "fragmentation needed" or
    // "packet too big": its route is narrower by the outer header.
    let narrower = if family.is_ipv6() {
        "mtu lock 1460"
    } else {
        "mtu 1480"
    };
    assert_eq!(route.contains(narrower), mode == "tun", "{route}");
    let vip_tcp = family.at(family.vip, tcp_port);

    // rr over both reals; each real sees the client's own address.
    let greetings: Vec<String> = (0..4)
        .map(|_| greet_at(&topology.client, vip_tcp.clone()).0)
        .collect();
    let mut sorted = greetings.clone();
    sorted.sort();
    let client = family.client;
    assert_eq!(
        sorted,
        [
            format!("rs1 {client}"),
            format!("rs1 {client}"),
            format!("rs2 {client}"),
            format!("rs2 {client}")
        ],
        "{greetings:?}\n{}",
        lbd.log_text()
    );

    // 1 MB up and 1 MB back down on one connection.
    echo_a_megabyte(&topology.client, vip_tcp.clone(), "echoed through the director");

    // UDP: new client sockets are spread by rr, and replies come from the VIP.
    let vip_udp = family.at(family.vip, udp_port);
    let any = family.at(family.any, 0);
    let expected_from = vip_udp.clone();
    let answers: Vec<(String, SocketAddr)> = in_netns(&topology.client, move || {
        (0..4)
            .map(|_| {
                let socket = UdpSocket::bind(&any).unwrap();
                socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                socket.send_to(b"ping", &vip_udp).unwrap();
                let mut buffer = [0u8; 64];
                let (n, from) = socket
                    .recv_from(&mut buffer)
                    .expect("a UDP reply through the director");
                (String::from_utf8_lossy(&buffer[..n]).into_owned(), from)
            })
            .collect()
    });
    assert!(
        answers.iter().all(|(_, from)| from.to_string() == expected_from),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(name, _)| name == "rs1").count(),
        2,
        "{answers:?}"
    );

    if mode == "nat" {
        // A real's "port unreachable" (it quotes client → real) reaches the client as the
        // VIP's: its connected socket sees the refusal.
        let (any, closed) = (family.at(family.any, 0), family.at(family.vip, 54));
        let refused = in_netns(&topology.client, move || {
            let socket = UdpSocket::bind(&any).unwrap();
            socket.connect(&closed).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            socket.send(b"anyone?").unwrap();
            socket.recv(&mut [0u8; 16]).map_err(|error| error.kind())
        });
        assert_eq!(refused, Err(std::io::ErrorKind::ConnectionRefused));
    }

    // rs2 stops: its health check takes it out, new flows go to rs1 only.
    rs2.store(true, Ordering::SeqCst);
    in_netns(&topology.reals[1], || {
        // Wakes the accept loop, which sees the flag and closes the listening socket.
        let _ = TcpStream::connect("127.0.0.1:8080");
    });
    let stopped = family.at(family.reals[1], 8080);
    lbd.wait_for_log(&format!("real server {stopped} of service web: up -> down"), 1);
    thread::sleep(Duration::from_millis(200));
    for _ in 0..4 {
        assert_eq!(
            greet_at(&topology.client, vip_tcp.clone()).0,
            format!("rs1 {client}")
        );
    }

    // kill-flows drops the service's entries, a held connection's among them.
    let held = in_netns(&topology.client, {
        let vip = vip_tcp.clone();
        move || TcpStream::connect(&vip).unwrap()
    });
    thread::sleep(Duration::from_millis(100));
    let (code, out, err) = crate::netns::lbadm_in(&topology.director, &["kill-flows", "--service", "web"]);
    assert_eq!(code, 0, "{err}");
    let killed: usize = out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(killed >= 1, "{out}");
    let (_, listing, _) = crate::netns::lbadm_in(&topology.director, &["list", "-c", "-n"]);
    assert!(
        !listing.contains(&vip_tcp),
        "no flow of the service is left: {listing}"
    );
    drop(held);

    // A clean exit undoes the host setup, this family's included.
    lbd.signal(Signal::SIGTERM);
    assert!(lbd.wait_exit(Duration::from_secs(10)).success());
    let show = |args: &[&str]| {
        let mut command = vec!["-n", &topology.director, family.ip_option()];
        command.extend_from_slice(args);
        let output = Command::new("ip").args(&command).output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(
        !show(&["rule", "show"]).contains("lookup 100"),
        "{}",
        show(&["rule", "show"])
    );
    assert_eq!(show(&["route", "show", family.vip]), "");
    assert_eq!(show(&["neigh", "show", "proxy"]), "");
}

/// tun across families, as IPVS allows: an IPv6 VIP whose reals are IPv4 addresses gets its
/// flows inside IPv4 (IPv6 in IPv4, protocol 41); the reals' decapsulators take them and the
/// reals answer the client from the VIP over IPv6.
#[test]
fn tun_carries_ipv6_flows_to_reals_reached_over_ipv4() {
    if !root() {
        return;
    }
    let topology = dual_stack_topology();
    let _helpers = prepare_reals(&topology, "tun", IPV6);
    let _rs1 = start_servers(&topology.reals[0], "rs1", IPV6.vip);
    let _rs2 = start_servers(&topology.reals[1], "rs2", IPV6.vip);
    let vip = IPV6.at(IPV6.vip, 8080);
    let config = format!(
        "workers: 2\ndataplane: {{ tun: lbtun0, server_interface: br0, setup: auto }}\nservices:\n  - {{ name: web, protocol: tcp, listen: '{vip}', scheduler: rr, forward: tun, reals: [{{address: '10.77.0.11:8080'}}, {{address: '10.77.0.12:8080'}}] }}\n"
    );
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);
    let route = Command::new("ip")
        .args(["-n", &topology.director, "-6", "route", "show", IPV6.vip])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(
        route.contains("mtu lock 1480"),
        "narrower by the outer IPv4 header: {route}"
    );
    let mut names: Vec<String> = (0..4)
        .map(|_| greet_at(&topology.client, vip.clone()).0)
        .collect();
    names.sort();
    let client = IPV6.client;
    assert_eq!(
        names,
        [
            format!("rs1 {client}"),
            format!("rs1 {client}"),
            format!("rs2 {client}"),
            format!("rs2 {client}")
        ]
    );
    echo_a_megabyte(&topology.client, vip, "through IPv6 in IPv4");
}

/// Packet Too Big: with the reals' links narrowed to IPv6's minimum MTU, a 1 MB upload
/// through nat completes. The VIP's route is as narrow (`mtu lock 1280`), so the director
/// answers the client's full-size packets with Packet Too Big quoting the packet it sent,
/// and the client's path MTU discovery shrinks its segments.
#[test]
fn an_upload_through_nat_over_ipv6_completes_when_the_reals_links_are_narrower() {
    if !root() {
        return;
    }
    let topology = dual_stack_topology();
    let dir = &topology.director;
    for (i, real) in topology.reals.iter().enumerate() {
        ip(&format!("-n {dir} link set d-rs{} mtu 1280", i + 1));
        ip(&format!("-n {real} link set r0 mtu 1280"));
    }
    let _rs1 = start_servers(&topology.reals[0], "rs1", "::");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "::");
    let mut lbd = Lbd::start_in(dir, &config_of("nat", IPV6));
    lbd.wait_for_log("packet data plane started", 1);
    let route = Command::new("ip")
        .args(["-n", dir, "-6", "route", "show", IPV6.vip])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("mtu lock 1280"), "{route}");
    echo_a_megabyte(
        &topology.client,
        IPV6.at(IPV6.vip, 80),
        "through links narrower than the client's",
    );
}

/// Reads `lbd_flows{protocol=…}` from the director's /metrics.
fn flows_metric(director: &str, protocol: &'static str) -> u64 {
    metric(director, format!("lbd_flows{{protocol=\"{protocol}\"}}"))
}

/// Reads the value of one sample (`name{labels}`) from the director's /metrics.
fn metric(director: &str, sample: String) -> u64 {
    in_netns(director, move || {
        let mut stream = TcpStream::connect("127.0.0.1:9901").unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).unwrap();
        let needle = format!("{sample} ");
        page.lines()
            .find_map(|line| line.strip_prefix(&needle))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {needle} in /metrics"))
    })
}

/// With two packet workers, every client's packets (both directions of nat) reach the worker
/// that owns its flows: the kernel steers them with lbd's eBPF program, so no packet is
/// handled by another worker (`lbd_packets_misqueued_total` stays 0).
#[test]
fn nat_steers_each_client_to_the_worker_that_owns_its_flows() {
    if !root() {
        return;
    }
    let topology = topology();
    let _rs1 = start_servers(&topology.reals[0], "rs1", "0.0.0.0");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "0.0.0.0");
    let clients: Vec<String> = (3..19).map(|n| format!("192.168.77.{n}")).collect();
    for client in &clients {
        ip(&format!("-n {} addr add {client}/24 dev cl0", topology.client));
    }
    let owners: std::collections::BTreeSet<usize> = clients
        .iter()
        .map(|client| ulvs::lvs::steering::owner(client.parse().unwrap(), 2))
        .collect();
    assert_eq!(owners.len(), 2, "the test's clients belong to both workers");
    let config = config("nat").replace(
        "workers: 2\n",
        "workers: 2\nmetrics: { listen: '127.0.0.1:9901' }\n",
    );
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);
    assert!(
        lbd.log_text().contains("steered=true"),
        "the steering program is attached: {}",
        lbd.log_text()
    );
    let serve_all = |vip: &'static str| {
        let clients = clients.clone();
        in_netns(&topology.client, move || {
            for client in &clients {
                let from: SocketAddr = format!("{client}:0").parse().unwrap();
                // TCP: greeting, then an echo.
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
                socket.bind(&from.into()).unwrap();
                let to: SocketAddr = format!("{vip}:80").parse().unwrap();
                socket
                    .connect_timeout(&to.into(), Duration::from_secs(5))
                    .expect("connect to the VIP");
                let mut stream = TcpStream::from(socket);
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                assert!(line.trim().ends_with(client.as_str()), "{line}");
                stream.write_all(b"echo\n").unwrap();
                line.clear();
                reader.read_line(&mut line).unwrap();
                assert_eq!(line, "echo\n");
                // UDP: one datagram and its answer.
                let udp = UdpSocket::bind(from).unwrap();
                udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                udp.send_to(b"ping", format!("{vip}:53")).unwrap();
                let mut buffer = [0u8; 16];
                udp.recv_from(&mut buffer).expect("a UDP reply");
            }
        });
    };
    serve_all(VIP);
    assert_eq!(
        metric(&topology.director, "lbd_packets_misqueued_total".to_owned()),
        0,
        "packets reached another worker than their flow's"
    );
    // A reload that adds a VIP replaces the steering program: its flows are steered too.
    let second = config.replace("services:\n", "services:\n  - { name: web2, protocol: tcp, listen: '192.168.77.101:80', scheduler: rr, forward: nat, reals: [{address: '10.77.0.11:8080'}, {address: '10.77.0.12:8080'}] }\n  - { name: dns2, protocol: udp, listen: '192.168.77.101:53', scheduler: rr, forward: nat, reals: [{address: '10.77.0.11:5353'}, {address: '10.77.0.12:5353'}] }\n");
    std::fs::write(lbd.config_path(), second).unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    serve_all("192.168.77.101");
    assert_eq!(
        metric(&topology.director, "lbd_packets_misqueued_total".to_owned()),
        0,
        "packets to the added VIP reached another worker than their flow's"
    );
}

#[test]
fn the_flow_table_stays_bounded_under_a_syn_flood_and_expires_idle_flows() {
    if !root() {
        return;
    }
    let topology = topology();
    let _rs1 = start_servers(&topology.reals[0], "rs1", "0.0.0.0");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "0.0.0.0");
    let max_flows = 1000;
    let config = config("nat")
        .replace("max_flows: 10000", &format!("max_flows: {max_flows}"))
        .replace(
            "workers: 2\n",
            "workers: 2\nmetrics: { listen: '127.0.0.1:9901' }\ntimeouts: { udp: 1s }\n",
        );
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);

    // A UDP flow lives for `timeouts.udp` without traffic, then expires.
    in_netns(&topology.client, || {
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.send_to(b"ping", format!("{VIP}:53")).unwrap();
        let mut buffer = [0u8; 16];
        socket.recv_from(&mut buffer).expect("a UDP reply");
    });
    assert_eq!(flows_metric(&topology.director, "udp"), 1);
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        flows_metric(&topology.director, "udp"),
        0,
        "the UDP flow expired after 1 s idle"
    );

    // 100k SYNs from random spoofed sources.
    let sent = in_netns(&topology.client, || {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::RAW,
            Some(socket2::Protocol::from(255)), // IPPROTO_RAW: we write the IP header
        )
        .unwrap();
        let vip: std::net::Ipv4Addr = VIP.parse().unwrap();
        let to = socket2::SockAddr::from(SocketAddr::new(vip.into(), 0));
        let mut state = 0x9e37_79b9_u32;
        let mut sent = 0;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let source = std::net::Ipv4Addr::from(0x0b00_0000 | (state & 0x00ff_ffff));
            let mut packet = Vec::with_capacity(40);
            etherparse::PacketBuilder::ipv4(source.octets(), vip.octets(), 64)
                .tcp((state >> 16) as u16 | 1024, 80, state, 1000)
                .syn()
                .write(&mut packet, &[])
                .unwrap();
            if socket.send_to(&packet, &to).is_ok() {
                sent += 1;
            }
        }
        sent
    });
    assert!(sent > 90_000, "sent {sent} SYNs");
    let during = flows_metric(&topology.director, "tcp");
    assert!(during <= max_flows, "{during} flows for max_flows {max_flows}");
    // A legitimate client still gets through.
    let (greeting, _) = greet(&topology.client, 80);
    assert!(greeting.ends_with(CLIENT), "{greeting}");
    eprintln!("SYN flood: {sent} SYNs sent, {during} flows in the table (max_flows {max_flows})");
}

#[test]
fn manual_setup_refuses_to_start_and_names_what_is_missing() {
    if !root() {
        return;
    }
    let topology = topology();
    let _rs1 = start_servers(&topology.reals[0], "rs1", "0.0.0.0");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "0.0.0.0");
    let dir = &topology.director;
    let config = config("nat").replace("setup: auto", "setup: manual");
    // A persistent TUN device, as an operator who manages the host would create.
    ip(&format!("-n {dir} tuntap add dev lbtun0 mode tun multi_queue"));
    ip(&format!("-n {dir} link set lbtun0 up"));
    let mut refused = Lbd::spawn_in_netns(dir, &config);
    let status = refused.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let log = refused.log_text();
    assert!(
        log.contains("dataplane setup is manual and these are missing"),
        "{log}"
    );
    // Apply exactly the commands it printed, then it starts and serves.
    for line in log.lines().map(str::trim) {
        if let Some(sysctl) = line.strip_prefix("sysctl -w ") {
            let (key, value) = sysctl.split_once('=').unwrap();
            self::sysctl(dir, key, value);
        } else if let Some(args) = line.strip_prefix("ip ") {
            ip(&format!("-n {dir} {args}"));
        }
    }
    let mut lbd = Lbd::start_in(dir, &config);
    lbd.wait_for_log("packet data plane started", 1);
    let (greeting, _) = greet(&topology.client, 80);
    assert!(greeting.ends_with(CLIENT), "{greeting}");
}

/// The reply-steering rules (`lookup 100`) of the director, as `ip rule` lists them.
fn reply_rules(director: &str) -> Vec<String> {
    let output = Command::new("ip")
        .args(["-n", director, "rule", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.contains("lookup 100"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_reload_whose_host_setup_fails_changes_nothing_and_a_corrected_one_applies() {
    if !root() {
        return;
    }
    let topology = topology();
    let _rs1 = start_servers(&topology.reals[0], "rs1", "0.0.0.0");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "0.0.0.0");
    let config = config("nat").replace(
        "workers: 2\n",
        "workers: 2\nmetrics: { listen: '127.0.0.1:9901' }\n",
    );
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);
    let before = reply_rules(&topology.director);
    assert_eq!(before.len(), 5, "{before:?}");
    // A third nat real moves the UDP rules to prefs 1003 and 1004; one the new plan needs is
    // in the way, so its step fails after the rule for the new real (pref 1002) was added.
    let blocker = "pref 1003 iif br0 from 10.77.0.11 ipproto udp sport 5353 lookup 100";
    ip(&format!("-n {} rule add {blocker}", topology.director));
    let third = config.replace(
        "      - address: '10.77.0.12:8080'\n",
        "      - address: '10.77.0.12:8080'\n      - address: '10.77.0.13:8080'\n",
    );
    std::fs::write(lbd.config_path(), &third).unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("reload refused", 1);
    assert!(lbd.log_text().contains("File exists"), "{}", lbd.log_text());
    let mut after = reply_rules(&topology.director);
    after.retain(|rule| !(rule.starts_with("1003:") && rule.contains("10.77.0.11 iif br0 ipproto udp")));
    assert_eq!(after, before, "the host is exactly as it was");
    assert_eq!(
        metric(
            &topology.director,
            "lbd_config_reloads_total{result=\"failure\"}".to_owned()
        ),
        1
    );
    let (name, _stream) = greet(&topology.client, 80);
    assert!(name.starts_with("rs"), "still forwarding: {name}");
    // Corrected: the same reload applies, and the old UDP rule at 1002 is gone.
    ip(&format!("-n {} rule del {blocker}", topology.director));
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    let rules = reply_rules(&topology.director);
    assert_eq!(rules.len(), 6, "{rules:?}");
    assert!(
        rules
            .iter()
            .any(|rule| rule.starts_with("1002:") && rule.contains("10.77.0.13")),
        "{rules:?}"
    );
    assert!(
        rules
            .iter()
            .any(|rule| rule.starts_with("1003:") && rule.contains("udp")),
        "{rules:?}"
    );
    drop(lbd);
}

#[test]
fn an_lbd_that_was_killed_leaves_nothing_the_next_one_trips_on() {
    if !root() {
        return;
    }
    let topology = topology();
    let _rs1 = start_servers(&topology.reals[0], "rs1", "0.0.0.0");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "0.0.0.0");
    let config = config("nat");
    let mut first = Lbd::start_in(&topology.director, &config);
    first.wait_for_log("packet data plane started", 1);
    // One per nat real and protocol, and one for ICMP errors from the reals.
    assert_eq!(reply_rules(&topology.director).len(), 5);
    // A second lbd on the same TUN device in this namespace is refused, naming why.
    let mut second = Lbd::spawn_in_netns(&topology.director, &config);
    let status = second.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    assert!(
        second
            .log_text()
            .contains("another lbd in this network namespace uses the TUN device lbtun0"),
        "{}",
        second.log_text()
    );
    assert_eq!(
        reply_rules(&topology.director).len(),
        5,
        "the second changed nothing"
    );
    // SIGKILL: no undo ran; the rules are still there.
    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(5));
    assert_eq!(reply_rules(&topology.director).len(), 5);
    // The next lbd undoes what the dead one left before it applies its own setup.
    let mut third = Lbd::start_in(&topology.director, &config);
    third.wait_for_log("packet data plane started", 1);
    assert!(
        third.log_text().contains("did not exit cleanly"),
        "{}",
        third.log_text()
    );
    assert_eq!(
        reply_rules(&topology.director).len(),
        5,
        "{:?}",
        reply_rules(&topology.director)
    );
    let (name, _stream) = greet(&topology.client, 80);
    assert!(name.starts_with("rs"), "forwarding: {name}");
    // A clean exit leaves no rule behind.
    third.signal(Signal::SIGTERM);
    assert!(third.wait_exit(Duration::from_secs(10)).success());
    assert_eq!(reply_rules(&topology.director), Vec::<String>::new());
}

/// nat applies `source_limits` and `deny` to a flow's first packet: a client over its cap,
/// or denied (an edit at run time), gets no answer to its SYN, and the refusals are counted.
#[test]
fn nat_refuses_the_first_packet_of_a_client_over_its_cap_or_denied() {
    if !root() {
        return;
    }
    let topology = topology();
    let _rs1 = start_servers(&topology.reals[0], "rs1", "0.0.0.0");
    let _rs2 = start_servers(&topology.reals[1], "rs2", "0.0.0.0");
    let config = config("nat")
        .replace(
            "workers: 2\n",
            "workers: 2\nmetrics: { listen: '127.0.0.1:9901' }\n",
        )
        .replace(
            "  - name: web\n",
            "  - name: web\n    source_limits: { max_flows: 2 }\n",
        );
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);
    let vip = format!("{VIP}:80");
    let try_connect = |client: &str| {
        let vip: SocketAddr = vip.parse().unwrap();
        in_netns(client, move || {
            TcpStream::connect_timeout(&vip, Duration::from_secs(2)).ok()
        })
    };
    let held: Vec<TcpStream> = (0..2)
        .map(|_| try_connect(&topology.client).expect("within the cap"))
        .collect();
    assert!(
        try_connect(&topology.client).is_none(),
        "a third flow's SYN is dropped"
    );
    let refused = |reason: &str| {
        metric(
            &topology.director,
            format!("lbd_service_refused_total{{service=\"web\",reason=\"{reason}\"}}"),
        )
    };
    assert!(refused("source_flows") >= 1);
    assert!(
        metric(
            &topology.director,
            "lbd_packets_dropped_total{reason=\"refused\"}".to_owned()
        ) >= 1
    );
    // Entries count until they expire (TIME_WAIT included): lift the cap, deny the client.
    drop(held);
    let (code, _, err) = crate::netns::lbadm_in(
        &topology.director,
        &[
            "edit-service",
            "--service",
            "web",
            "--no-source-limits",
            "--deny",
            "192.168.77.0/24",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        try_connect(&topology.client).is_none(),
        "a denied client's SYN is dropped"
    );
    assert!(refused("denied") >= 1);
    let (code, _, err) = crate::netns::lbadm_in(
        &topology.director,
        &["edit-service", "--service", "web", "--no-deny"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(try_connect(&topology.client).is_some(), "served again");
}

/// `via_vip` checks each dr or tun real through the VIP's own path: a real that loses the VIP
/// from its loopback still answers on its own address (a plain check would pass) but is found
/// down, and comes back once the VIP is back; new flows follow.
fn via_vip_finds_a_real_without_the_vip_down(mode: &str) {
    if !root() {
        return;
    }
    let topology = topology();
    let _helpers = prepare_reals(&topology, mode, IPV4);
    let _rs1 = start_servers(&topology.reals[0], "rs1", IPV4.vip);
    let _rs2 = start_servers(&topology.reals[1], "rs2", IPV4.vip);
    let config = config(mode).replace(
        "health_check: { type: tcp, port: 8080, interval: 300ms, timeout: 300ms, rise: 1, fall: 1 }",
        "health_check: { type: tcp, via_vip: true, interval: 200ms, timeout: 500ms, rise: 1, fall: 1 }",
    );
    assert!(config.contains("via_vip"));
    let mut lbd = Lbd::start_in(&topology.director, &config);
    lbd.wait_for_log("packet data plane started", 1);
    let vip = format!("{VIP}:8080");
    // dr learns a real's MAC once it is asked for (within ~50 ms): a first check may miss it.
    thread::sleep(Duration::from_secs(1));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while lbd.log_count("of service web: up -> down") > lbd.log_count("of service web: down -> up") {
        assert!(std::time::Instant::now() < deadline, "{}", lbd.log_text());
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(300));
    let names = || {
        let mut names: Vec<String> = (0..4)
            .map(|_| {
                greet_at(&topology.client, vip.clone())
                    .0
                    .split(' ')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(
        names(),
        ["rs1", "rs2"],
        "both reals pass their checks through the VIP: {}",
        lbd.log_text()
    );
    let rs2 = &topology.reals[1];
    let (down, up) = (
        "real server 10.77.0.12:8080 of service web: up -> down",
        "real server 10.77.0.12:8080 of service web: down -> up",
    );
    let downs = lbd.log_count(down);
    ip(&format!("-n {rs2} addr del {VIP}/32 dev lo"));
    lbd.wait_for_log(down, downs + 1);
    assert_eq!(names(), ["rs1"]);
    let ups = lbd.log_count(up);
    ip(&format!("-n {rs2} addr add {VIP}/32 dev lo"));
    lbd.wait_for_log(up, ups + 1);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(names(), ["rs1", "rs2"]);
}

#[test]
fn dr_checks_through_the_vip_find_a_real_without_the_vip_down() {
    via_vip_finds_a_real_without_the_vip_down("dr");
}

#[test]
fn tun_checks_through_the_vip_find_a_real_without_the_vip_down() {
    via_vip_finds_a_real_without_the_vip_down("tun");
}

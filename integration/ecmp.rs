//! Scale-out behind ECMP, in network namespaces built from scratch: a client behind a router
//! that runs BIRD (multipath routes, hashing on L4), three directors each running the real
//! `lbd` (dr, `mh` with `mh-port`, `sloppy_tcp`) and BIRD with `config/bird-director.conf`
//! announcing what lbd puts in its announce table, and two real servers. A director that
//! stops withdraws its VIP first; one that is killed loses its route with its TUN device.
//! Flows the router moves to another director keep their real. Needs root and BIRD; without
//! them the test says why it skips. Everything is killed and deleted at the end.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    lvs::{Running, in_netns, ip, root, start_servers, sysctl},
    netns::{delete_namespaces, spawn_logged},
    support::*,
};

const VIP: &str = "10.200.0.100";
const DIRECTORS: [&str; 3] = ["d1", "d2", "d3"];

/// The namespaces and processes of the test; killed and deleted when dropped.
struct Net {
    tag: String,
    dir: tempfile::TempDir,
    /// BIRD of the router and of each director.
    bird: Vec<Running>,
    /// lbd of each director, by index in [`DIRECTORS`].
    lbd: Vec<Option<Running>>,
}

impl Net {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.lbd.clear();
        self.bird.clear();
        let names = |names: &[&str]| names.iter().map(|name| self.ns(name)).collect::<Vec<_>>();
        delete_namespaces(
            &names(&["cl", "rt", "sw", "d1", "d2", "d3", "r1", "r2"]),
            &names(&DIRECTORS),
        );
    }
}

fn spawn_in(net: &Net, namespace: &str, log: &str, command: &[&str]) -> Running {
    spawn_logged(&net.ns(namespace), &net.dir.path().join(log), command)
}

/// client 10.71.0.2 — router (10.71.0.1 / 10.70.0.1) — core bridge: directors 10.70.0.11-13,
/// reals 10.70.0.21-22 (the VIP on their `lo`, no ARP for it, the router their gateway).
fn network() -> Net {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let net = Net {
        tag: format!("e{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)),
        dir: tempfile::tempdir().unwrap(),
        bird: Vec::new(),
        lbd: Vec::new(),
    };
    for name in ["cl", "rt", "sw", "d1", "d2", "d3", "r1", "r2"] {
        ip(&format!("netns add {}", net.ns(name)));
        ip(&format!("-n {} link set lo up", net.ns(name)));
    }
    let (cl, rt, sw) = (net.ns("cl"), net.ns("rt"), net.ns("sw"));
    ip(&format!(
        "-n {cl} link add eth0 type veth peer name c0 netns {rt}"
    ));
    ip(&format!("-n {cl} addr add 10.71.0.2/24 dev eth0"));
    ip(&format!("-n {cl} link set eth0 up"));
    ip(&format!("-n {cl} route add default via 10.71.0.1"));
    ip(&format!("-n {rt} addr add 10.71.0.1/24 dev c0"));
    ip(&format!("-n {rt} link set c0 up"));
    sysctl(&rt, "net.ipv4.ip_forward", "1");
    sysctl(&rt, "net.ipv4.fib_multipath_hash_policy", "1");
    ip(&format!(
        "-n {sw} link add core type bridge stp_state 0 forward_delay 0"
    ));
    ip(&format!("-n {sw} link set core up"));
    let mut hosts = vec![("rt", "10.70.0.1")];
    hosts.extend([("d1", "10.70.0.11"), ("d2", "10.70.0.12"), ("d3", "10.70.0.13")]);
    hosts.extend([("r1", "10.70.0.21"), ("r2", "10.70.0.22")]);
    for (name, address) in hosts {
        let ns = net.ns(name);
        let port = format!("p{name}");
        ip(&format!(
            "-n {sw} link add {port} type veth peer name e0 netns {ns}"
        ));
        ip(&format!("-n {sw} link set {port} master core up"));
        ip(&format!("-n {ns} addr add {address}/24 dev e0"));
        ip(&format!("-n {ns} link set e0 up"));
    }
    for real in ["r1", "r2"] {
        let ns = net.ns(real);
        ip(&format!("-n {ns} addr add {VIP}/32 dev lo"));
        ip(&format!("-n {ns} route add default via 10.70.0.1"));
        for (key, value) in [
            ("all.arp_ignore", "1"),
            ("e0.arp_ignore", "1"),
            ("all.arp_announce", "2"),
            ("e0.arp_announce", "2"),
            ("all.rp_filter", "0"),
            ("e0.rp_filter", "0"),
        ] {
            sysctl(&ns, &format!("net.ipv4.conf.{key}"), value);
        }
    }
    for director in DIRECTORS {
        sysctl(&net.ns(director), "net.ipv6.conf.all.disable_ipv6", "1");
        // The clients are reached through the router (and found there by reverse-path checks).
        ip(&format!(
            "-n {} route add default via 10.70.0.1",
            net.ns(director)
        ));
    }
    net
}

/// BIRD with `config`, in `namespace`.
fn start_bird(net: &mut Net, namespace: &str, config: &str) {
    let path = net.dir.path().join(format!("bird-{namespace}.conf"));
    std::fs::write(&path, config).unwrap();
    let socket = net.dir.path().join(format!("bird-{namespace}.ctl"));
    let bird = spawn_in(
        net,
        namespace,
        &format!("bird-{namespace}.log"),
        &[
            "bird",
            "-f",
            "-c",
            path.to_str().unwrap(),
            "-s",
            socket.to_str().unwrap(),
        ],
    );
    net.bird.push(bird);
}

fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn lbd_config() -> String {
    format!(
        "workers: 1\ndrain_timeout: 1s\nadmin: {{ listen: 127.0.0.1:9900 }}\n\
         dataplane: {{ tun: lbtun0, server_interface: e0, sloppy_tcp: true, announce: {{ table: 101, withdraw_wait: 1s }} }}\n\
         services:\n  - {{ protocol: tcp, listen: '{VIP}:8080', forward: dr, scheduler: mh, scheduler_flags: [mh-port],\n      \
         reals: [{{ address: '10.70.0.21:8080' }}, {{ address: '10.70.0.22:8080' }}] }}\n"
    )
}

fn start_lbd(net: &mut Net, n: usize) {
    let director = DIRECTORS[n];
    let path = net.dir.path().join(format!("lbd-{director}.yaml"));
    std::fs::write(&path, lbd_config()).unwrap();
    let lbd = spawn_in(
        net,
        director,
        &format!("lbd-{director}.log"),
        &[lbd_binary(), "-c", path.to_str().unwrap()],
    );
    if net.lbd.len() <= n {
        net.lbd.resize_with(n + 1, || None);
    }
    net.lbd[n] = Some(lbd);
}

/// The router's next hops for the VIP.
fn next_hops(net: &Net) -> usize {
    let output = Command::new("ip")
        .args(["-n", &net.ns("rt"), "route", "show", VIP])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    match text.matches("nexthop via").count() {
        0 if text.contains(" via ") => 1,
        n => n,
    }
}

/// Waits until the router has `count` next hops for the VIP; how long that took.
fn wait_for_hops(net: &Net, count: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    while next_hops(net) != count {
        if started.elapsed() > limit {
            let logs: String = [
                "bird-rt.log",
                "bird-d1.log",
                "lbd-d1.log",
                "lbd-d2.log",
                "lbd-d3.log",
            ]
            .iter()
            .map(|log| {
                let text = std::fs::read_to_string(net.dir.path().join(log)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                format!(
                    "--- {log}\n{}\n",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect();
            panic!(
                "the router has {} next hops for the VIP, not {count}, after {limit:?}\n{logs}",
                next_hops(net)
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    started.elapsed()
}

/// The entries in `director`'s connection table (`lbadm list -c`).
fn flows_on(net: &Net, director: &str) -> u64 {
    let output = Command::new("ip")
        .args(["netns", "exec", &net.ns(director), env!("CARGO_BIN_EXE_lbadm")])
        .args(["--admin", "127.0.0.1:9900", "list", "-c", "--json"])
        .output()
        .unwrap();
    serde_json::from_slice::<Vec<serde_json::Value>>(&output.stdout).map_or(0, |flows| flows.len() as u64)
}

/// What one client stream saw.
#[derive(Debug, Default)]
struct Stream {
    real: String,
    answers: usize,
    failed: Option<String>,
}

/// A TCP stream through the VIP: a byte every 50 ms, each echoed, until `stop`.
fn stream(stop: Arc<AtomicBool>) -> Stream {
    let mut seen = Stream::default();
    let vip: SocketAddr = format!("{VIP}:8080").parse().unwrap();
    let mut connection = match TcpStream::connect_timeout(&vip, Duration::from_secs(5)) {
        Ok(connection) => connection,
        Err(error) => {
            seen.failed = Some(format!("connect: {error}"));
            return seen;
        }
    };
    connection
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut greeting = String::new();
    if BufReader::new(connection.try_clone().unwrap())
        .read_line(&mut greeting)
        .is_err()
    {
        seen.failed = Some("no greeting".to_owned());
        return seen;
    }
    seen.real = greeting.split_whitespace().next().unwrap_or_default().to_owned();
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::SeqCst) {
        if let Err(error) = connection
            .write_all(b"x")
            .and_then(|()| connection.read_exact(&mut byte))
        {
            seen.failed = Some(format!("after {} answers: {error}", seen.answers));
            return seen;
        }
        seen.answers += 1;
        thread::sleep(Duration::from_millis(50));
    }
    seen
}

#[test]
fn directors_behind_ecmp_withdraw_first_and_moved_flows_keep_their_real() {
    if !root() {
        return;
    }
    if Command::new("bird").arg("--version").output().is_err() {
        skipped("the ECMP test needs BIRD (apt-get install bird2)");
        return;
    }
    let _turn = heavy_turn();
    let mut net = network();
    let _servers = [
        start_servers(&net.ns("r1"), "real1", "0.0.0.0"),
        start_servers(&net.ns("r2"), "real2", "0.0.0.0"),
    ];
    start_bird(&mut net, "rt", &example("bird-router.conf"));
    for (n, director) in DIRECTORS.iter().enumerate() {
        let config = example("bird-director.conf")
            .replace("router id 10.70.0.11;", &format!("router id 10.70.0.1{};", n + 1));
        start_bird(&mut net, director, &config);
        start_lbd(&mut net, n);
    }
    let announced = wait_for_hops(&net, 3, Duration::from_secs(30));
    println!("ECMP: the router has a next hop through each of the 3 directors after {announced:?}");
    // BIRD may install the route again while the last sessions settle: wait until it has
    // stayed the same for a second.
    let route = || {
        let output = Command::new("ip")
            .args(["-n", &net.ns("rt"), "route", "show", VIP])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let (mut last, mut since) = (route(), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        thread::sleep(Duration::from_millis(50));
        let now = route();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let streams = {
        let stop = Arc::clone(&stop);
        in_netns(&net.ns("cl"), move || {
            (0..60)
                .map(|_| {
                    let stop = Arc::clone(&stop);
                    thread::spawn(move || stream(stop))
                })
                .collect::<Vec<_>>()
        })
    };
    thread::sleep(Duration::from_secs(2));
    let carried: Vec<u64> = DIRECTORS
        .iter()
        .map(|director| flows_on(&net, director))
        .collect();
    println!("ECMP: entries in each director's table before: {carried:?}");

    assert!(
        carried[1] > 0 && carried[2] > 0,
        "ECMP spread the streams: {carried:?}"
    );

    // d2 stops: its VIP is withdrawn before it stops forwarding.
    let d2 = nix::unistd::Pid::from_raw(net.lbd[1].as_ref().unwrap().0.id() as i32);
    nix::sys::signal::kill(d2, nix::sys::signal::Signal::SIGTERM).unwrap();
    let withdrawn = wait_for_hops(&net, 2, Duration::from_secs(10));
    println!("ECMP: d2 stopped (SIGTERM): the router dropped its next hop after {withdrawn:?}");
    thread::sleep(Duration::from_secs(3));

    // d3 is killed: its route goes with its TUN device, and BIRD withdraws it.
    net.lbd[2] = None;
    let dropped = wait_for_hops(&net, 1, Duration::from_secs(10));
    println!("ECMP: d3 killed (SIGKILL): the router dropped its next hop after {dropped:?}");
    thread::sleep(Duration::from_secs(3));

    let after: Vec<u64> = DIRECTORS
        .iter()
        .map(|director| flows_on(&net, director))
        .collect();
    println!("ECMP: entries in each director's table at the end (d3's gone with it): {after:?}");
    stop.store(true, Ordering::SeqCst);
    let seen: Vec<Stream> = streams.into_iter().map(|stream| stream.join().unwrap()).collect();
    let survived = seen.iter().filter(|stream| stream.failed.is_none()).count();
    let reals: std::collections::BTreeMap<&str, usize> =
        seen.iter().fold(Default::default(), |mut counts, stream| {
            *counts.entry(stream.real.as_str()).or_default() += 1;
            counts
        });
    println!("ECMP: {survived}/60 streams went on through both (by real: {reals:?})");
    let broken: Vec<&Option<String>> = seen
        .iter()
        .map(|stream| &stream.failed)
        .filter(|failed| failed.is_some())
        .collect();
    assert_eq!(survived, 60, "streams that broke: {broken:?}");
    assert!(
        reals.len() == 2,
        "mh-port spread the streams over both reals: {reals:?}"
    );
    assert!(withdrawn < Duration::from_secs(2), "{withdrawn:?}");

    // d1 keeps announcing only while the VIP has a real that can take flows.
    let lbadm = |args: &[&str]| {
        let output = Command::new("ip")
            .args(["netns", "exec", &net.ns("d1"), env!("CARGO_BIN_EXE_lbadm")])
            .args(["--admin", "127.0.0.1:9900"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "lbadm {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let service = format!("{VIP}:8080");
    lbadm(&["drain-real", "-t", &service, "-r", "10.70.0.[21-22]:8080"]);
    let gone = wait_for_hops(&net, 0, Duration::from_secs(5));
    lbadm(&["edit-real", "-t", &service, "-r", "10.70.0.21:8080", "-w", "1"]);
    let back = wait_for_hops(&net, 1, Duration::from_secs(5));
    println!("ECMP: d1's reals drained: withdrawn after {gone:?}; one back: announced after {back:?}");
}

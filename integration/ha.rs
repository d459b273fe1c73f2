//! Director HA in network namespaces built from scratch: a client on the front bridge, two
//! directors (each the real `lbd` and Debian's keepalived) between the front and back bridges,
//! two real servers behind. The master dies; the backup takes the VIP over with the flows the
//! master sent it. Needs root and keepalived; without them the tests say why they skip. Every
//! process is killed and every namespace deleted at the end, pass or fail.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    lvs::{Running, in_netns, ip, root, start_servers, sysctl},
    netns::{self, delete_namespaces, spawn_logged, wait_or_show},
    support::*,
};

const VIP: &str = "192.168.77.100";

fn lbadm_binary() -> &'static str {
    env!("CARGO_BIN_EXE_lbadm")
}

/// How the pair forwards: LVS's nat, dr or tun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Nat,
    Dr,
    Tun,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Nat => "nat",
            Self::Dr => "dr",
            Self::Tun => "tun",
        }
    }

    /// The TCP and UDP ports of the VIP: nat maps 80 → 8080 and 53 → 5353, dr and tun keep
    /// the reals' ports.
    fn ports(self) -> (u16, u16) {
        match self {
            Self::Nat => (80, 53),
            Self::Dr | Self::Tun => (8080, 5353),
        }
    }
}

/// The namespaces and processes of one test; killed and deleted when dropped.
struct Pair {
    tag: String,
    mode: Mode,
    dir: tempfile::TempDir,
    /// lbd of d1 and d2, then keepalived of d1 and d2; killed first.
    processes: Vec<Option<Running>>,
    /// The reals' helpers (tun's decapsulators).
    helpers: Vec<Running>,
    /// keepalived adverts every 0.1 s instead of every second.
    fast: bool,
    /// The VIP and reals are IPv6 (nat only): the client and the directors' links have IPv6
    /// addresses beside their IPv4 ones, keepalived moves the reals' IPv6 gateway too.
    ipv6: bool,
}

/// The IPv6 VIP, the reals' IPv6 gateway (moved by keepalived) and the client's address.
const VIP6: &str = "fd00:77::100";
const GATEWAY6: &str = "fd00:10::1";
const CLIENT6: &str = "fd00:77::2";

impl Pair {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    /// The VIP the client's flows go to, `[address]:port` ready.
    fn vip(&self, port: u16) -> String {
        if self.ipv6 {
            format!("[{VIP6}]:{port}")
        } else {
            format!("{VIP}:{port}")
        }
    }

    /// The client's unspecified address to bind a UDP socket to.
    fn client_any(&self) -> &'static str {
        if self.ipv6 { "[::]:0" } else { "192.168.77.2:0" }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.processes.clear();
        self.helpers.clear();
        let names = |names: &[&str]| names.iter().map(|name| self.ns(name)).collect::<Vec<_>>();
        delete_namespaces(
            &names(&["cl", "d1", "d2", "r1", "r2", "sw"]),
            &names(&["d1", "d2"]),
        );
    }
}

/// Root and keepalived (without them the test says why it skips), and the test's turn
/// ([`heavy_turn`]): each HA test runs six namespaces and 70 flows.
fn prerequisites() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !root() {
        return None;
    }
    let keepalived = Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success() || !output.stderr.is_empty());
    if !keepalived {
        skipped("the HA tests need keepalived (apt-get install keepalived)");
        return None;
    }
    Some(heavy_turn())
}

/// Connects `namespace`'s interface `inside` to `bridge` of the switch namespace.
fn attach(pair: &Pair, namespace: &str, inside: &str, bridge: &str, port: &str) {
    let (sw, ns) = (pair.ns("sw"), pair.ns(namespace));
    ip(&format!(
        "-n {sw} link add {port} type veth peer name {inside} netns {ns}"
    ));
    ip(&format!("-n {sw} link set {port} master {bridge} up"));
    ip(&format!("-n {ns} link set {inside} up"));
}

/// client 192.168.77.2 — front bridge — d1 (.11 / 10.77.0.21), d2 (.12 / .22) — back bridge —
/// reals 10.77.0.11, .12, whose gateway 10.77.0.1 keepalived moves with the master.
fn topology() -> Pair {
    topology_for(Mode::Nat)
}

/// [`topology`], its reals ready for `mode`: for dr and tun the VIP on `lo` and no ARP answers
/// for it, and for tun lbd's IPIP decapsulator.
fn topology_for(mode: Mode) -> Pair {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let mut pair = Pair {
        tag: format!("h{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)),
        mode,
        dir: tempfile::tempdir().unwrap(),
        processes: Vec::new(),
        helpers: Vec::new(),
        fast: false,
        ipv6: false,
    };
    for name in ["sw", "cl", "d1", "d2", "r1", "r2"] {
        ip(&format!("netns add {}", pair.ns(name)));
        ip(&format!("-n {} link set lo up", pair.ns(name)));
    }
    let sw = pair.ns("sw");
    for bridge in ["front", "back"] {
        ip(&format!(
            "-n {sw} link add {bridge} type bridge stp_state 0 forward_delay 0"
        ));
        ip(&format!("-n {sw} link set {bridge} up"));
    }
    attach(&pair, "cl", "eth0", "front", "pcl");
    ip(&format!("-n {} addr add 192.168.77.2/24 dev eth0", pair.ns("cl")));
    for (n, director) in ["d1", "d2"].iter().enumerate() {
        attach(&pair, director, "f0", "front", &format!("p{director}f"));
        attach(&pair, director, "b0", "back", &format!("p{director}b"));
        let ns = pair.ns(director);
        ip(&format!("-n {ns} addr add 192.168.77.1{}/24 dev f0", n + 1));
        ip(&format!("-n {ns} addr add 10.77.0.2{}/24 dev b0", n + 1));
        sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1");
    }
    for (n, real) in ["r1", "r2"].iter().enumerate() {
        attach(&pair, real, "r0", "back", &format!("p{real}"));
        let ns = pair.ns(real);
        ip(&format!("-n {ns} addr add 10.77.0.1{}/24 dev r0", n + 1));
        ip(&format!("-n {ns} route add default via 10.77.0.1"));
        if mode == Mode::Nat {
            continue;
        }
        ip(&format!("-n {ns} addr add {VIP}/32 dev lo"));
        for key in ["all.arp_ignore", "r0.arp_ignore"] {
            sysctl(&ns, &format!("net.ipv4.conf.{key}"), "1");
        }
        for key in ["all.arp_announce", "r0.arp_announce"] {
            sysctl(&ns, &format!("net.ipv4.conf.{key}"), "2");
        }
        sysctl(&ns, "net.ipv4.conf.all.rp_filter", "0");
        if mode == Mode::Tun {
            let child = Command::new("ip")
                .args(["netns", "exec", &ns, lbd_binary(), "ipip-decap", "--vip", VIP])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            pair.helpers.push(Running(child));
            let deadline = Instant::now() + Duration::from_secs(10);
            while !Command::new("ip")
                .args(["-n", &ns, "link", "show", "ipipdecap0"])
                .output()
                .is_ok_and(|output| output.status.success())
            {
                assert!(Instant::now() < deadline, "ipip-decap did not start in {ns}");
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    pair
}

/// The nat [`topology`] with IPv6 beside IPv4: client fd00:77::2, directors fd00:77::11 and
/// ::12 on the front, fd00:10::21 and ::22 on the back, reals fd00:10::11 and ::12 whose
/// gateway fd00:10::1 keepalived moves with the master.
fn dual_stack_topology() -> Pair {
    let mut pair = topology_for(Mode::Nat);
    pair.ipv6 = true;
    ip(&format!(
        "-n {} addr add {CLIENT6}/64 dev eth0 nodad",
        pair.ns("cl")
    ));
    for (n, director) in ["d1", "d2"].iter().enumerate() {
        let ns = pair.ns(director);
        sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "0");
        ip(&format!("-n {ns} addr add fd00:77::1{}/64 dev f0 nodad", n + 1));
        ip(&format!("-n {ns} addr add fd00:10::2{}/64 dev b0 nodad", n + 1));
    }
    for (n, real) in ["r1", "r2"].iter().enumerate() {
        let ns = pair.ns(real);
        ip(&format!("-n {ns} addr add fd00:10::1{}/64 dev r0 nodad", n + 1));
        ip(&format!("-n {ns} -6 route add default via {GATEWAY6}"));
    }
    // Link-local addresses settle (duplicate address detection) before the test starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    for name in ["cl", "d1", "d2", "r1", "r2"] {
        let ns = pair.ns(name);
        while !Command::new("ip")
            .args(["-n", &ns, "-6", "addr", "show", "tentative"])
            .output()
            .is_ok_and(|output| output.stdout.is_empty())
        {
            assert!(Instant::now() < deadline, "IPv6 addresses stay tentative in {ns}");
            thread::sleep(Duration::from_millis(50));
        }
    }
    pair
}

/// How the directors of a failover test keep flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Flow sync to the multicast group.
    Sync,
    /// Flow sync to the other director (`peers`), with the HA channel: the master's
    /// services and a full dump for a director that returns.
    SyncPeers,
    /// Nothing: no sync, SYN-only flows.
    Nothing,
    /// No sync, but `sloppy_tcp` and the `mh` scheduler: a flow's next packet finds the same
    /// real on the new master.
    SloppyMh,
}

/// `config/ha.yaml` as the test's directors run it: the namespaces' interface names, the
/// FIFO in the test's directory, one worker; without `ha.sync` unless `keep` syncs.
fn lbd_config(pair: &Pair, director: &str, keep: Keep) -> String {
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/ha.yaml")).unwrap();
    let fifo = format!("{}/{director}.fifo", pair.dir.path().display());
    let mut config = example
        .replace("eth1", "b0")
        .replace("/run/lbd/keepalived.fifo", &fifo)
        .replace("  setup: auto", "  setup: auto\n  max_flows: 10000");
    if keep == Keep::SyncPeers {
        let other = if director == "d1" {
            "10.77.0.22"
        } else {
            "10.77.0.21"
        };
        config = config.replace("# peers: [10.77.0.22]", &format!("peers: [{other}]"));
    }
    if !matches!(keep, Keep::Sync | Keep::SyncPeers) {
        let start = config.find("  sync:").unwrap();
        let end = config.find("services:").unwrap();
        config.replace_range(start..end, "");
    }
    if pair.mode != Mode::Nat {
        let (tcp, udp) = pair.mode.ports();
        config = config
            .replace("forward: nat", &format!("forward: {}", pair.mode.name()))
            .replace(&format!("listen: {VIP}:80"), &format!("listen: {VIP}:{tcp}"))
            .replace(&format!("listen: {VIP}:53"), &format!("listen: {VIP}:{udp}"));
    }
    if pair.ipv6 {
        config = config
            .replace(&format!("listen: {VIP}:"), &format!("listen: '[{VIP6}]:"))
            .replace(":80\n", ":80'\n")
            .replace(":53\n", ":53'\n")
            .replace(
                "address: 10.77.0.[11-12]:8080",
                "address: '[fd00:10::[11-12]]:8080'",
            )
            .replace(
                "address: 10.77.0.[11-12]:5353",
                "address: '[fd00:10::[11-12]]:5353'",
            );
    }
    if keep == Keep::SloppyMh {
        config = config
            .replace("  setup: auto", "  setup: auto\n  sloppy_tcp: true")
            .replace("scheduler: rr", "scheduler: mh");
    }
    format!("workers: 1\ndrain_timeout: 1s\n{config}")
}

/// `config/keepalived-ha.conf` as the test's directors run it.
fn keepalived_config(pair: &Pair, director: &str, priority: u32) -> String {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/keepalived-ha.conf")).unwrap();
    let fifo = format!("{}/{director}.fifo", pair.dir.path().display());
    // track_process needs the kernel's process events, which a network namespace other than
    // the host's does not get ("process event listen - Connection refused"): the test's
    // keepalived goes without it, and sees a dead lbd by its check alone.
    let start = example.find("# A dead lbd is seen at once").unwrap();
    let end = example.find("# A wedged lbd").unwrap();
    let mut example = example.clone();
    example.replace_range(start..end, "");
    let advert = if pair.fast {
        "advert_int 0.1"
    } else {
        "advert_int 1"
    };
    example
        .replace("  track_process {\n    lbd_running\n  }\n", "")
        .replace("advert_int 1 ", &format!("{advert} "))
        .replace("router_id director1", &format!("router_id {director}"))
        .replace("/run/lbd/keepalived.fifo", &fifo)
        .replace("/usr/local/bin/lbadm", lbadm_binary())
        .replace("priority 150", &format!("priority {priority}"))
        .replace("interface eth0", "interface f0")
        .replace("dev eth1", "dev b0")
        .replace(
            "  track_script {",
            &if pair.ipv6 {
                // The reals' IPv6 gateway moves with the master too (another family than the
                // instance's adverts: keepalived takes it in the excluded block).
                format!("  virtual_ipaddress_excluded {{\n    {GATEWAY6}/64 dev b0\n  }}\n  track_script {{")
            } else {
                "  track_script {".to_owned()
            },
        )
}

/// Starts `command` in `director`'s namespace, its output to `log` in the test's directory.
fn spawn_in(pair: &Pair, director: &str, log: &str, command: &[&str]) -> Running {
    spawn_logged(&pair.ns(director), &pair.dir.path().join(log), command)
}

/// `lbadm status` in `director`'s namespace, or `None` while lbd does not answer.
fn status(pair: &Pair, director: &str) -> Option<String> {
    let output = Command::new("ip")
        .args(["netns", "exec", &pair.ns(director), lbadm_binary()])
        .args(["--admin", "127.0.0.1:9900", "status"])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn wait_for(what: &str, pair: &Pair, limit: Duration, done: impl FnMut() -> bool) {
    let logs = ["lbd-d1.log", "lbd-d2.log", "ka-d1.log", "ka-d2.log"];
    wait_or_show(what, limit, pair.dir.path(), &logs, done);
}

/// The number in `ha: …  synced flows: N` of a status.
fn synced_flows(status: &str) -> usize {
    status
        .lines()
        .find_map(|line| line.split("synced flows: ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// What one client flow saw.
#[derive(Debug, Default)]
struct Seen {
    /// The reals that answered, in order of first answer.
    reals: Vec<String>,
    /// The longest time without an answer, from the first one.
    largest_gap: Duration,
    /// Answers after the failover began.
    answers_after: usize,
    /// Why it ended early, if it did.
    failed: Option<String>,
}

/// A TCP stream through the VIP (`address:port`): a byte every 10 ms, each echoed.
fn tcp_stream(vip: String, stop: Arc<AtomicBool>, failover: Arc<std::sync::Mutex<Option<Instant>>>) -> Seen {
    let mut seen = Seen::default();
    let vip: SocketAddr = vip.parse().unwrap();
    let mut stream = match TcpStream::connect_timeout(&vip, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(error) => {
            seen.failed = Some(format!("connect: {error}"));
            return seen;
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut greeting = String::new();
    if BufReader::new(stream.try_clone().unwrap())
        .read_line(&mut greeting)
        .is_err()
    {
        seen.failed = Some("no greeting".to_owned());
        return seen;
    }
    seen.reals
        .push(greeting.split_whitespace().next().unwrap_or("").to_owned());
    let mut last = Instant::now();
    let mut byte = [0u8; 1];
    while !stop.load(Ordering::SeqCst) {
        if let Err(error) = stream.write_all(b"x").and_then(|()| stream.read_exact(&mut byte)) {
            seen.failed = Some(format!("after {:?}: {error}", last.elapsed()));
            return seen;
        }
        let now = Instant::now();
        seen.largest_gap = seen.largest_gap.max(now - last);
        last = now;
        if failover.lock().unwrap().is_some_and(|at| now > at) {
            seen.answers_after += 1;
        }
        thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// A UDP flow through the VIP (`address:port`) from its own port (bound to `any`): a datagram
/// every 50 ms, answered with the real's name.
fn udp_flow(
    (vip, any): (String, &'static str),
    stop: Arc<AtomicBool>,
    failover: Arc<std::sync::Mutex<Option<Instant>>>,
) -> Seen {
    let mut seen = Seen::default();
    let socket = UdpSocket::bind(any).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut last: Option<Instant> = None;
    let mut buffer = [0u8; 64];
    while !stop.load(Ordering::SeqCst) {
        let _ = socket.send_to(b"q", &vip);
        if let Ok(len) = socket.recv(&mut buffer) {
            let name = String::from_utf8_lossy(&buffer[..len]).into_owned();
            if !seen.reals.contains(&name) {
                seen.reals.push(name);
            }
            let now = Instant::now();
            if let Some(last) = last {
                seen.largest_gap = seen.largest_gap.max(now - last);
            }
            last = Some(now);
            if failover.lock().unwrap().is_some_and(|at| now > at) {
                seen.answers_after += 1;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    seen
}

/// New TCP connections to the VIP, one every 20 ms (each given 100 ms to be answered), until
/// `stop`: when each began and whether it was answered.
fn new_connections(vip: String, stop: Arc<AtomicBool>) -> Vec<(Instant, Option<Instant>)> {
    let vip: SocketAddr = vip.parse().unwrap();
    let mut attempts = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let answered = TcpStream::connect_timeout(&vip, Duration::from_millis(100))
            .ok()
            .map(|_| Instant::now());
        attempts.push((began, answered));
        thread::sleep(Duration::from_millis(20));
    }
    attempts
}

/// The new-flow outage the attempts of [`new_connections`] saw after `fault`: from the first
/// unanswered attempt that began after it to the answer of the first answered one after that
/// (zero when none went unanswered).
fn new_flow_outage(attempts: &[(Instant, Option<Instant>)], fault: Instant) -> Duration {
    let mut after = attempts.iter().skip_while(|(began, _)| *began < fault);
    let Some((first_failed, _)) = after.find(|(_, answered)| answered.is_none()) else {
        return Duration::ZERO;
    };
    after
        .find_map(|(_, answered)| *answered)
        .map_or(Duration::MAX, |answered| answered - *first_failed)
}

/// The MACs that answer an ARP request for the VIP from the client within a second.
fn arp_answers(pair: &Pair) -> Vec<String> {
    let script = format!(
        r#"
import socket, struct, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0))
mac = s.getsockname()[4]
me = socket.inet_aton("192.168.77.2"); vip = socket.inet_aton("{VIP}")
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + me + b"\0" * 6 + vip
s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)
s.settimeout(0.2); seen = set(); end = time.time() + 1
while time.time() < end:
    try:
        frame = s.recv(128)
    except socket.timeout:
        continue
    if frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02" and frame[28:32] == vip:
        seen.add(frame[22:28].hex(":"))
print("\n".join(sorted(seen)))
"#
    );
    let output = Command::new("ip")
        .args(["netns", "exec", &pair.ns("cl"), "python3", "-c", &script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn mac_of(pair: &Pair, director: &str) -> String {
    let output = Command::new("ip")
        .args(["-n", &pair.ns(director), "link", "show", "f0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_owned()
}

/// What a failover did to the client's flows.
struct Failover {
    takeover: Duration,
    survived: usize,
    largest_gap: Duration,
    /// How long new connections went unanswered.
    new_flow_outage: Duration,
    udp: Vec<Seen>,
    tcp_failures: Vec<String>,
}

impl Failover {
    /// Every TCP stream went on after the failover, and every UDP flow was answered after it
    /// by the real it had before.
    fn assert_every_flow_went_on(&self) {
        assert_eq!(
            self.survived, 50,
            "TCP streams that broke: {:?}",
            self.tcp_failures
        );
        for seen in &self.udp {
            assert_eq!(seen.reals.len(), 1, "a UDP flow kept its real: {seen:?}");
            assert!(
                seen.answers_after > 0,
                "a UDP flow was answered after the failover: {seen:?}"
            );
        }
    }
}

/// Starts `director`'s lbd with its config and waits until it answers.
fn start_lbd(pair: &mut Pair, director: &str, keep: Keep) -> Running {
    let config = pair.dir.path().join(format!("{director}.yaml"));
    std::fs::write(&config, lbd_config(pair, director, keep)).unwrap();
    let lbd = spawn_in(
        pair,
        director,
        &format!("lbd-{director}.log"),
        &[lbd_binary(), "-c", config.to_str().unwrap()],
    );
    wait_for(
        &format!("lbd answers in {director}"),
        pair,
        Duration::from_secs(10),
        || status(pair, director).is_some(),
    );
    lbd
}

/// Starts both directors (lbd, then keepalived), waits for d1 to be master, runs 50 TCP
/// streams and 20 UDP flows through it, kills its lbd and lets d2 take over.
fn failover(pair: &mut Pair, keep: Keep) -> Failover {
    failover_with(pair, keep, |_| {}, |_| {})
}

/// What happens to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Its lbd is killed (SIGKILL).
    KillLbd,
    /// Its link to the clients goes down (at the switch).
    LinkDown,
    /// Its keepalived is stopped (SIGTERM).
    StopKeepalived,
}

impl Fault {
    /// Does it to d1 (whose lbd is process 0 and keepalived process 2).
    fn strike(self, pair: &mut Pair) {
        match self {
            Self::KillLbd => {
                if let Some(Some(lbd)) = pair.processes.get_mut(0) {
                    let _ = lbd.0.kill();
                    let _ = lbd.0.wait();
                }
            }
            Self::LinkDown => ip(&format!("-n {} link set pd1f down", pair.ns("sw"))),
            Self::StopKeepalived => {
                if let Some(Some(keepalived)) = pair.processes.get_mut(2) {
                    let pid = nix::unistd::Pid::from_raw(keepalived.0.id() as i32);
                    let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
                    let _ = keepalived.0.wait();
                }
            }
        }
    }
}

/// [`failover`], with `before` run while d1 is master and the flows run, and `after` once d2
/// has taken over.
fn failover_with(
    pair: &mut Pair,
    keep: Keep,
    before: impl FnOnce(&mut Pair),
    after: impl FnOnce(&mut Pair),
) -> Failover {
    failover_by(pair, keep, Fault::KillLbd, before, after)
}

/// [`failover_with`], the master struck by `fault`.
fn failover_by(
    pair: &mut Pair,
    keep: Keep,
    fault: Fault,
    before: impl FnOnce(&mut Pair),
    after: impl FnOnce(&mut Pair),
) -> Failover {
    let any = if pair.ipv6 { "::" } else { "0.0.0.0" };
    let _stops = [
        start_servers(&pair.ns("r1"), "real1", any),
        start_servers(&pair.ns("r2"), "real2", any),
    ];
    for director in ["d1", "d2"] {
        let config = pair.dir.path().join(format!("{director}.yaml"));
        std::fs::write(&config, lbd_config(pair, director, keep)).unwrap();
        let lbd = spawn_in(
            pair,
            director,
            &format!("lbd-{director}.log"),
            &[lbd_binary(), "-c", config.to_str().unwrap()],
        );
        pair.processes.push(Some(lbd));
        wait_for(
            &format!("lbd answers in {director}"),
            pair,
            Duration::from_secs(10),
            || status(pair, director).is_some(),
        );
    }
    for (director, priority) in [("d1", 150), ("d2", 100)] {
        let config = pair.dir.path().join(format!("ka-{director}.conf"));
        std::fs::write(&config, keepalived_config(pair, director, priority)).unwrap();
        let dir = pair.dir.path().display().to_string();
        let keepalived = spawn_in(
            pair,
            director,
            &format!("ka-{director}.log"),
            &[
                "keepalived",
                "-n",
                "-l",
                "-P",
                "-f",
                config.to_str().unwrap(),
                "-p",
                &format!("{dir}/ka-{director}.pid"),
                "-r",
                &format!("{dir}/ka-{director}.vrrp.pid"),
                "-i",
                director,
            ],
        );
        pair.processes.push(Some(keepalived));
    }
    wait_for("d1 becomes master", pair, Duration::from_secs(15), || {
        status(pair, "d1").is_some_and(|text| text.contains("ha: master"))
    });
    assert!(status(pair, "d2").unwrap().contains("ha: backup"));
    if !pair.ipv6 {
        assert_eq!(
            arp_answers(pair),
            [mac_of(pair, "d1")],
            "only the master answers for the VIP"
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let failover = Arc::new(std::sync::Mutex::new(None));
    let (tcp_port, udp_port) = pair.mode.ports();
    let (tcp_vip, udp_vip, any) = (pair.vip(tcp_port), pair.vip(udp_port), pair.client_any());
    let flows = {
        let (stop, failover) = (Arc::clone(&stop), Arc::clone(&failover));
        in_netns(&pair.ns("cl"), move || {
            let mut flows = Vec::new();
            for _ in 0..50 {
                let (stop, failover, vip) = (Arc::clone(&stop), Arc::clone(&failover), tcp_vip.clone());
                flows.push(("tcp", thread::spawn(move || tcp_stream(vip, stop, failover))));
            }
            for _ in 0..20 {
                let (stop, failover, vip) = (Arc::clone(&stop), Arc::clone(&failover), udp_vip.clone());
                flows.push(("udp", thread::spawn(move || udp_flow((vip, any), stop, failover))));
            }
            flows
        })
    };
    if matches!(keep, Keep::Sync | Keep::SyncPeers) {
        wait_for(
            "the backup holds the master's 70 flows",
            pair,
            Duration::from_secs(15),
            || status(pair, "d2").is_some_and(|text| synced_flows(&text) >= 70),
        );
    } else {
        thread::sleep(Duration::from_secs(3));
    }

    // New connections from now on (not before: the backup must first hold the 70 flows, and
    // the prober's own flows would count among them).
    let prober = {
        let (stop, vip) = (Arc::clone(&stop), pair.vip(tcp_port));
        in_netns(&pair.ns("cl"), move || {
            thread::spawn(move || new_connections(vip, stop))
        })
    };
    thread::sleep(Duration::from_millis(200));
    before(pair);
    // The master is struck; d2 takes over.
    *failover.lock().unwrap() = Some(Instant::now());
    let killed = Instant::now();
    fault.strike(pair);
    wait_for("d2 becomes master", pair, Duration::from_secs(15), || {
        status(pair, "d2").is_some_and(|text| text.contains("ha: master"))
    });
    let takeover = killed.elapsed();
    after(pair);
    thread::sleep(Duration::from_secs(6));
    stop.store(true, Ordering::SeqCst);
    let master = if status(pair, "d1").is_some_and(|text| text.contains("ha: master")) {
        "d1"
    } else {
        "d2"
    };
    if pair.ipv6 {
        // The new master's unsolicited neighbour advertisements moved the client's entry.
        let output = Command::new("ip")
            .args(["-n", &pair.ns("cl"), "-6", "neigh", "show", VIP6])
            .output()
            .unwrap();
        let entry = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            entry.contains(&mac_of(pair, master)),
            "the client reaches the VIP at the master ({master}): {entry}"
        );
    } else {
        assert_eq!(
            arp_answers(pair),
            [mac_of(pair, master)],
            "only the master ({master}) answers for the VIP"
        );
    }
    let attempts = prober.join().unwrap();
    let results: Vec<(&str, Seen)> = flows
        .into_iter()
        .map(|(kind, flow)| (kind, flow.join().unwrap()))
        .collect();
    let largest_gap = results.iter().map(|(_, seen)| seen.largest_gap).max().unwrap();
    let (tcp, udp): (Vec<_>, Vec<_>) = results.into_iter().partition(|(kind, _)| *kind == "tcp");
    Failover {
        takeover,
        survived: tcp
            .iter()
            .filter(|(_, seen)| seen.failed.is_none() && seen.answers_after > 0)
            .count(),
        largest_gap,
        new_flow_outage: new_flow_outage(&attempts, killed),
        tcp_failures: tcp.iter().filter_map(|(_, seen)| seen.failed.clone()).collect(),
        udp: udp.into_iter().map(|(_, seen)| seen).collect(),
    }
}

/// The tests that only check that every flow went on: `fault` strikes the master of a pair
/// of `mode` directors keeping flows by `keep` (adverts every 0.1 s when `fast`); prints what
/// the client saw, under `label`.
fn every_flow_goes_on(label: &str, mode: Mode, keep: Keep, fault: Fault, fast: bool) -> Failover {
    let mut pair = topology_for(mode);
    pair.fast = fast;
    let report = failover_by(&mut pair, keep, fault, |_| {}, |_| {});
    println!(
        "HA {label}: d2 master {:?} after; {}/50 TCP streams survived; largest gap {:?}; new connections unanswered for {:?}",
        report.takeover, report.survived, report.largest_gap, report.new_flow_outage
    );
    report.assert_every_flow_went_on();
    report
}

#[test]
fn nat_flows_survive_a_master_killed_and_the_backup_answers_for_the_vip() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    let report = every_flow_goes_on(
        "nat failover, sync on",
        Mode::Nat,
        Keep::Sync,
        Fault::KillLbd,
        false,
    );
    assert!(
        report.largest_gap < Duration::from_secs(8),
        "largest gap {:?}",
        report.largest_gap
    );
}

/// The same over IPv6: 50 TCP streams and 20 UDP flows through an IPv6 nat VIP survive the
/// master's lbd being killed (their IPv6 entries synced), and the client follows the new
/// master through its unsolicited neighbour advertisements.
#[test]
fn ipv6_nat_flows_survive_a_master_killed() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    let mut pair = dual_stack_topology();
    let report = failover_by(&mut pair, Keep::Sync, Fault::KillLbd, |_| {}, |_| {});
    println!(
        "HA nat over IPv6 failover, sync on: d2 master {:?} after; {}/50 TCP streams survived; largest gap {:?}; new connections unanswered for {:?}",
        report.takeover, report.survived, report.largest_gap, report.new_flow_outage
    );
    report.assert_every_flow_went_on();
}

#[test]
fn without_flow_sync_established_nat_flows_do_not_survive() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    let mut pair = topology();
    let report = failover(&mut pair, Keep::Nothing);
    println!(
        "HA nat failover, sync off: d2 master {:?} after the kill; {}/50 TCP streams survived",
        report.takeover, report.survived
    );
    // The new master has no entry for them: their packets are not SYNs, and are dropped.
    assert_eq!(report.survived, 0);
}

#[test]
fn with_sloppy_tcp_and_mh_unsynced_nat_flows_find_their_real_on_the_new_master() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    every_flow_goes_on(
        "nat failover, sync off, sloppy_tcp + mh",
        Mode::Nat,
        Keep::SloppyMh,
        Fault::KillLbd,
        false,
    );
}

#[test]
fn proxy_mode_serves_new_connections_from_the_backup_once_keepalived_moves_the_vip() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    let mut pair = topology();
    let any = if pair.ipv6 { "::" } else { "0.0.0.0" };
    let _stops = [
        start_servers(&pair.ns("r1"), "real1", any),
        start_servers(&pair.ns("r2"), "real2", any),
    ];
    let dir = pair.dir.path().display().to_string();
    for (director, priority) in [("d1", 150), ("d2", 100)] {
        // Proxy mode: keepalived owns the VIP as a local address; lbd listens on both
        // directors (IP_FREEBIND) and serves wherever the VIP is.
        let config = pair.dir.path().join(format!("{director}.yaml"));
        std::fs::write(
            &config,
            format!(
                "workers: 1\ndrain_timeout: 1s\nadmin: {{ listen: '127.0.0.1:9900' }}\n\
                 ha: {{ notify_fifo: {dir}/{director}.fifo, instance: VI_1 }}\n\
                 services:\n  - {{ protocol: tcp, listen: '{VIP}:80', scheduler: rr, reals: [{{address: '10.77.0.11:8080'}}, {{address: '10.77.0.12:8080'}}] }}\n"
            ),
        )
        .unwrap();
        let lbd = spawn_in(
            &pair,
            director,
            &format!("lbd-{director}.log"),
            &[lbd_binary(), "-c", config.to_str().unwrap()],
        );
        pair.processes.push(Some(lbd));
        wait_for(
            &format!("lbd answers in {director}"),
            &pair,
            Duration::from_secs(10),
            || status(&pair, director).is_some(),
        );
        let keepalived_conf = pair.dir.path().join(format!("ka-{director}.conf"));
        let text = keepalived_config(&pair, director, priority)
            .replace("10.77.0.1/24 dev b0", &format!("{VIP}/24 dev f0"));
        std::fs::write(&keepalived_conf, text).unwrap();
        let keepalived = spawn_in(
            &pair,
            director,
            &format!("ka-{director}.log"),
            &[
                "keepalived",
                "-n",
                "-l",
                "-P",
                "-f",
                keepalived_conf.to_str().unwrap(),
                "-p",
                &format!("{dir}/ka-{director}.pid"),
                "-r",
                &format!("{dir}/ka-{director}.vrrp.pid"),
                "-i",
                director,
            ],
        );
        pair.processes.push(Some(keepalived));
    }
    wait_for("d1 becomes master", &pair, Duration::from_secs(15), || {
        status(&pair, "d1").is_some_and(|text| text.contains("ha: master"))
    });
    let connect = |pair: &Pair| {
        in_netns(&pair.ns("cl"), || {
            let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
            let mut stream = TcpStream::connect_timeout(&vip, Duration::from_millis(500)).ok()?;
            stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
            let mut greeting = [0u8; 5];
            stream.read_exact(&mut greeting).ok()?;
            Some(String::from_utf8_lossy(&greeting).into_owned())
        })
    };
    wait_for(
        "the VIP answers through d1",
        &pair,
        Duration::from_secs(10),
        || connect(&pair).is_some(),
    );
    // d1's lbd dies: keepalived's check fails, the VIP moves to d2, whose lbd already listens.
    let killed = Instant::now();
    if let Some(Some(lbd)) = pair.processes.get_mut(0) {
        let _ = lbd.0.kill();
        let _ = lbd.0.wait();
    }
    let mut last_failure = None;
    let mut served_after = 0;
    while killed.elapsed() < Duration::from_secs(10) {
        match connect(&pair) {
            Some(greeting) => {
                assert!(greeting.starts_with("real"), "{greeting}");
                if last_failure.is_some() || killed.elapsed() > Duration::from_secs(3) {
                    served_after += 1;
                }
            }
            None => last_failure = Some(killed.elapsed()),
        }
        thread::sleep(Duration::from_millis(50));
    }
    let outage = last_failure.unwrap_or_default();
    println!("HA proxy failover: new connections refused for {outage:?} after the kill");
    assert!(status(&pair, "d2").unwrap().contains("ha: master"));
    assert!(served_after > 10, "d2 served new connections");
    assert!(
        outage < Duration::from_secs(5),
        "new connections failed until {outage:?} after the kill"
    );
}

/// `lbadm ARGS` in `director`'s namespace: (exit code, stdout, stderr).
fn lbadm_in(pair: &Pair, director: &str, args: &[&str]) -> (i32, String, String) {
    netns::lbadm_in(&pair.ns(director), args)
}

/// The weight of real 10.77.0.11:8080 of the web service, as `director` lists it.
fn weight_of_first_real(pair: &Pair, director: &str) -> Option<u64> {
    let (_, stdout, _) = lbadm_in(pair, director, &["list", "--json"]);
    let services: serde_json::Value = serde_json::from_str(&stdout).ok()?;
    services
        .as_array()?
        .iter()
        .flat_map(|service| service["reals"].as_array().cloned().unwrap_or_default())
        .find(|real| real["address"] == "10.77.0.11:8080")?["weight"]
        .as_u64()
}

#[test]
fn with_peers_the_backup_takes_the_masters_changes_and_a_returning_master_its_table() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    let mut pair = topology();
    let report = failover_with(
        &mut pair,
        Keep::SyncPeers,
        |pair| {
            // A change on the master reaches the backup; the backup refuses changes.
            let (code, _, stderr) = lbadm_in(
                pair,
                "d1",
                &[
                    "edit-real",
                    "-t",
                    &format!("{VIP}:80"),
                    "-r",
                    "10.77.0.11:8080",
                    "-w",
                    "3",
                ],
            );
            assert_eq!(code, 0, "{stderr}");
            wait_for(
                "the backup takes the master's change",
                pair,
                Duration::from_secs(10),
                || weight_of_first_real(pair, "d2") == Some(3),
            );
            let (code, _, stderr) = lbadm_in(
                pair,
                "d2",
                &[
                    "edit-real",
                    "-t",
                    &format!("{VIP}:80"),
                    "-r",
                    "10.77.0.11:8080",
                    "-w",
                    "4",
                ],
            );
            assert_eq!(code, 1, "{stderr}");
            assert!(
                stderr.contains("backup of an HA pair") && stderr.contains("10.77.0.21"),
                "{stderr}"
            );
            let (code, _, stderr) = lbadm_in(
                pair,
                "d2",
                &[
                    "--force",
                    "edit-real",
                    "-t",
                    &format!("{VIP}:80"),
                    "-r",
                    "10.77.0.11:8080",
                    "-w",
                    "3",
                ],
            );
            assert_eq!(code, 0, "{stderr}");
        },
        |pair| {
            // d1's lbd comes back: it takes d2's table (and services) before keepalived lets
            // it take the VIP back (its check asks `lbadm status --ready`).
            let lbd = start_lbd(pair, "d1", Keep::SyncPeers);
            pair.processes[0] = Some(lbd);
            wait_for("d1 is master again", pair, Duration::from_secs(20), || {
                status(pair, "d1").is_some_and(|text| text.contains("ha: master"))
            });
            assert_eq!(weight_of_first_real(pair, "d1"), Some(3), "d1 took d2's services");
            assert!(status(pair, "d2").unwrap().contains("ha: backup"));
        },
    );
    println!(
        "HA nat failover and failback, sync to peers: d2 master {:?} after the kill; {}/50 TCP streams survived both; largest gap {:?}",
        report.takeover, report.survived, report.largest_gap
    );
    report.assert_every_flow_went_on();
}

#[test]
fn nat_flows_survive_the_masters_link_going_down() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    every_flow_goes_on(
        "nat failover, master's link down",
        Mode::Nat,
        Keep::Sync,
        Fault::LinkDown,
        false,
    );
}

#[test]
fn nat_flows_survive_the_masters_keepalived_stopped() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    every_flow_goes_on(
        "nat failover, master's keepalived stopped",
        Mode::Nat,
        Keep::Sync,
        Fault::StopKeepalived,
        false,
    );
}

#[test]
fn dr_flows_survive_a_master_killed() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    every_flow_goes_on(
        "dr failover, sync on",
        Mode::Dr,
        Keep::Sync,
        Fault::KillLbd,
        false,
    );
}

#[test]
fn tun_flows_survive_a_master_killed() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    every_flow_goes_on(
        "tun failover, sync on",
        Mode::Tun,
        Keep::Sync,
        Fault::KillLbd,
        false,
    );
}

#[test]
fn with_adverts_every_tenth_of_a_second_a_master_cut_off_costs_a_fraction_of_a_second() {
    let Some(_turn) = prerequisites() else {
        return;
    };
    let report = every_flow_goes_on(
        "nat failover, advert_int 0.1, master's link down",
        Mode::Nat,
        Keep::Sync,
        Fault::LinkDown,
        true,
    );
    assert!(
        report.largest_gap < Duration::from_secs(1),
        "largest gap {:?}",
        report.largest_gap
    );
    assert!(
        report.new_flow_outage < Duration::from_secs(1),
        "new connections unanswered for {:?}",
        report.new_flow_outage
    );
}

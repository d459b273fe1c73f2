//! Health checks against real backends on loopback: every check type, the state machine seen
//! from outside (rise, fall, dynamic weights, drain), passive detection, the sorry server,
//! reloads, and a hanging command killed at its timeout.

use std::{
    collections::HashMap,
    net::{Shutdown, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::support::*;

fn service_addr() -> SocketAddr {
    free_addr()
}

/// A one-service config whose service has the extra keys `service_keys` (e.g. a
/// `health_check:` line), indented as service keys.
fn checked(
    protocol: &str,
    listen: SocketAddr,
    scheduler: &str,
    reals: &[(SocketAddr, u32)],
    service_keys: &str,
) -> String {
    one_service(protocol, listen, scheduler, reals, "")
        .replace("    reals:\n", &format!("{service_keys}    reals:\n"))
}

/// Starts lbd with one `rr` TCP service over `reals` (weight 1 each) with the extra service
/// keys `service_keys`; returns the service address and lbd.
fn start_rr(reals: &[SocketAddr], service_keys: &str) -> (SocketAddr, Lbd) {
    let listen = service_addr();
    let reals: Vec<_> = reals.iter().map(|&real| (real, 1)).collect();
    let lbd = Lbd::start(&checked("tcp", listen, "rr", &reals, service_keys));
    (listen, lbd)
}

/// The log line fragment of a transition of `real`.
fn transition(real: SocketAddr, change: &str) -> String {
    format!("real server {real} of service svc: {change}")
}

/// Gives the control plane a moment to publish the snapshot that follows a logged change.
fn settle() {
    thread::sleep(Duration::from_millis(150));
}

/// When each request was answered, and by which backend (`None`: it failed).
type Answers = Arc<Mutex<Vec<(Instant, Option<String>)>>>;

/// Opens connections through `listen` one after another until stopped, recording which
/// backend answered each and how many failed.
struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Answers,
    thread: Option<thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(listen: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Answers = Arc::default();
        let (stopped, record) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let answer = std::panic::catch_unwind(|| {
                    let (name, stream) = connect_and_greet(listen);
                    stream.shutdown(Shutdown::Both).ok();
                    name
                })
                .ok();
                record.lock().unwrap().push((Instant::now(), answer));
                thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    /// Failed requests so far.
    fn failures(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, name)| name.is_none())
            .count()
    }

    /// Requests answered by `name` after `since`.
    fn answered_by(&self, name: &str, since: Instant) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, answer)| *at >= since && answer.as_deref() == Some(name))
            .count()
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Waits for the `count`th line with `needle` and returns how long after `since` it was seen.
fn time_to(lbd: &mut Lbd, needle: &str, count: usize, since: Instant) -> Duration {
    lbd.wait_for_log(needle, count);
    since.elapsed()
}

#[test]
fn tcp_check_drops_a_stopped_real_and_takes_it_back() {
    let a = TcpBackend::start("a");
    let b = TcpBackend::start("b");
    let mut c = TcpBackend::start("c");
    let (interval, timeout, rise, fall) = (500u64, 300u64, 2u64, 2u64);
    let (listen, mut lbd) = start_rr(
        &[a.address, b.address, c.address],
        &format!(
            "    health_check: {{ type: tcp, interval: {interval}ms, timeout: {timeout}ms, rise: {rise}, fall: {fall} }}\n"
        ),
    );
    let down = transition(c.address, "up -> down");
    let up = transition(c.address, "down -> up");

    // Without traffic, only the active checks can notice.
    let stopped = Instant::now();
    c.stop();
    let detection = time_to(&mut lbd, &format!("{down} (connection refused)"), 1, stopped);
    let restarted = Instant::now();
    c.restart();
    let recovery = time_to(&mut lbd, &format!("{up} (connected)"), 1, restarted);
    eprintln!("active checks only: detection {detection:?}, recovery {recovery:?}");
    let bound = Duration::from_millis(fall * interval + timeout + interval);
    assert!(
        detection <= bound,
        "detection took {detection:?} (bound {bound:?})"
    );
    assert!(
        recovery <= Duration::from_millis((rise + 1) * interval),
        "recovery took {recovery:?}"
    );

    // With traffic, failed connects count too, and no client request fails: the proxy
    // retries another real.
    settle();
    let traffic = Traffic::start(listen);
    thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    c.stop();
    // Failed connects from the traffic usually get there before the next check does.
    let detection = time_to(&mut lbd, &down, 2, stopped);
    settle();
    let failed_connects = lbd.log_count(&format!("real={} ", c.address));
    thread::sleep(Duration::from_millis(fall * interval + timeout));
    assert_eq!(
        lbd.log_count(&format!("real={} ", c.address)),
        failed_connects,
        "a flow was sent to the real after it was found down:\n{}",
        lbd.log_text()
    );
    let restarted = Instant::now();
    c.restart();
    let recovery = time_to(&mut lbd, &format!("{up} (connected)"), 2, restarted);
    settle();
    let back = Instant::now();
    thread::sleep(Duration::from_millis(300));
    eprintln!("with traffic: detection {detection:?}, recovery {recovery:?}");
    assert!(detection <= bound, "detection took {detection:?}");
    assert!(traffic.answered_by("c", back) > 0, "c gets flows again");
    assert!(traffic.total() > 50, "traffic ran ({} requests)", traffic.total());
    assert_eq!(traffic.failures(), 0, "no client request failed");
}

#[test]
fn http_check_judges_status_and_body() {
    let a = HttpBackend::start("a");
    let b = HttpBackend::start("b");
    a.set(200, "a: OK");
    b.set(200, "b: NOPE");
    let (listen, mut lbd) = start_rr(
        &[a.address, b.address],
        "    health_check: { type: http, path: /healthz, expect_status: 200-299, expect_body: OK, interval: 300ms, timeout: 300ms, rise: 1, fall: 1 }\n",
    );
    // b's port is open and it answers 200, but without the expected body.
    lbd.wait_for_log(
        &transition(b.address, "up -> down (HTTP 200, body lacks \"OK\")"),
        1,
    );
    settle();
    for _ in 0..6 {
        assert_eq!(http_get(listen), "a: OK");
    }
    b.set(200, "b: OK");
    lbd.wait_for_log(&transition(b.address, "down -> up (HTTP 200, body matches)"), 1);
    settle();
    let bodies: Vec<String> = (0..6).map(|_| http_get(listen)).collect();
    assert!(bodies.iter().any(|body| body == "b: OK"), "{bodies:?}");
    // A 500 on the check path takes it down although its port is open.
    b.set(500, "b: OK");
    lbd.wait_for_log(&transition(b.address, "up -> down (HTTP 500)"), 1);
    settle();
    for _ in 0..6 {
        assert_eq!(http_get(listen), "a: OK");
    }
}

#[test]
fn exec_check_exit_codes_set_state_and_weight() {
    let dir = tempfile::tempdir().unwrap();
    let backends = [
        TcpBackend::start("zero"),
        TcpBackend::start("one"),
        TcpBackend::start("seven"),
    ];
    for (backend, code) in backends.iter().zip([0, 1, 7]) {
        std::fs::write(
            dir.path().join(backend.address.port().to_string()),
            format!("{code}\n"),
        )
        .unwrap();
    }
    let listen = service_addr();
    let reals: Vec<_> = backends.iter().map(|backend| (backend.address, 1)).collect();
    let config = checked(
        "tcp",
        listen,
        "wrr",
        &reals,
        &format!(
            "    health_check: {{ type: exec, command: [/bin/sh, -c, 'exit $(cat {}/{{port}})'], interval: 300ms, timeout: 1s, rise: 1, fall: 1 }}\n",
            dir.path().display()
        ),
    );
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log(&transition(backends[1].address, "up -> down (exec exit 1)"), 1);
    lbd.wait_for_log(
        &transition(backends[2].address, "up -> up, weight 5 (exec exit 7)"),
        1,
    );
    settle();
    let counts = distribution(listen, 60);
    assert_eq!(
        counts,
        HashMap::from([("zero".to_owned(), 10), ("seven".to_owned(), 50)]),
        "weights 1 and 5, `one` down"
    );
}

#[test]
fn agent_check_sets_weight_drain_and_up() {
    // The agent answers on the real's own address, so each real needs an address of its own.
    // Two loopback IPs of this test's own: the same ports are free on both.
    let (home_a, home_b) = (free_addr(), free_addr());
    let (port, agent_port) = (home_a.port(), free_addr().port());
    let a = TcpBackend::start_at("a", SocketAddr::new(home_a.ip(), port));
    let b = TcpBackend::start_at("b", SocketAddr::new(home_b.ip(), port));
    let agent_a = Agent::start(SocketAddr::new(home_a.ip(), agent_port), "up");
    let _agent_b = Agent::start(SocketAddr::new(home_b.ip(), agent_port), "up");
    let listen = service_addr();
    let config = checked(
        "tcp",
        listen,
        "wrr",
        &[(a.address, 2), (b.address, 2)],
        &format!(
            "    health_check: {{ type: agent, agent_port: {agent_port}, interval: 200ms, timeout: 500ms, rise: 1, fall: 1 }}\n"
        ),
    );
    let mut lbd = Lbd::start(&config);
    let share = |n| distribution(listen, n);

    agent_a.set("50%");
    lbd.wait_for_log(&transition(a.address, "up -> up, weight 50% (agent: 50%)"), 1);
    settle();
    assert_eq!(
        share(30),
        HashMap::from([("a".to_owned(), 10), ("b".to_owned(), 20)])
    );

    let (_, mut kept) = connect_and_greet_at(listen, "a");
    agent_a.set("drain");
    lbd.wait_for_log(
        &transition(
            a.address,
            "up, weight 50% -> up, weight 50%, draining (agent: drain)",
        ),
        1,
    );
    settle();
    assert_eq!(share(10), HashMap::from([("b".to_owned(), 10)]));
    // A flow in progress on a draining real goes on.
    assert_eq!(echo(&mut kept, b"still here"), "still here");

    agent_a.set("up");
    lbd.wait_for_log(
        &transition(
            a.address,
            "up, weight 50%, draining -> up, weight 50% (agent: up)",
        ),
        1,
    );
    settle();
    assert_eq!(
        share(30),
        HashMap::from([("a".to_owned(), 10), ("b".to_owned(), 20)])
    );
}

/// Connects until the flow lands on `name` (at most 20 tries); returns the open stream.
fn connect_and_greet_at(listen: SocketAddr, name: &str) -> (String, std::net::TcpStream) {
    (0..20)
        .map(|_| connect_and_greet(listen))
        .find(|(greeted, _)| greeted == name)
        .unwrap_or_else(|| panic!("no flow reached {name}"))
}

#[test]
fn sorry_server_takes_flows_while_every_real_is_down() {
    let mut a = TcpBackend::start("a");
    let mut b = TcpBackend::start("b");
    let sorry = TcpBackend::start("sorry");
    let (listen, mut lbd) = start_rr(
        &[a.address, b.address],
        &format!(
            "    sorry_server: {}\n    health_check: {{ type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 1 }}\n",
            sorry.address
        ),
    );
    let counts = distribution(listen, 4);
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&2), Some(&2)));
    a.stop();
    b.stop();
    lbd.wait_for_log(&transition(a.address, "up -> down"), 1);
    lbd.wait_for_log(&transition(b.address, "up -> down"), 1);
    settle();
    assert_eq!(distribution(listen, 5), HashMap::from([("sorry".to_owned(), 5)]));
    b.restart();
    lbd.wait_for_log(&transition(b.address, "down -> up (connected)"), 1);
    settle();
    assert_eq!(distribution(listen, 5), HashMap::from([("b".to_owned(), 5)]));
}

#[test]
fn udp_check_detects_silence_and_port_unreachable() {
    let a = UdpBackend::start("a");
    let b = UdpBackend::start("b");
    let listen = free_addr();
    let config = checked(
        "udp",
        listen,
        "rr",
        &[(a.address, 1), (b.address, 1)],
        "    health_check: { type: udp, send: ping, expect: b, interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }\n",
    );
    // `expect: b`: a's replies ("a") do not contain it; b's do.
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log(&transition(a.address, "up -> down (reply lacks \"b\")"), 1);
    settle();
    for _ in 0..4 {
        assert_eq!(udp_ask(listen).as_deref(), Some("b"));
    }
    // b stops answering: down after `fall` silent checks; every flow is refused now.
    b.mute(true);
    lbd.wait_for_log(&transition(b.address, "up -> down (no reply within 200ms)"), 1);
    settle();
    assert_eq!(udp_ask(listen), None);
    b.mute(false);
    lbd.wait_for_log(&transition(b.address, "down -> up (reply received)"), 1);
    settle();
    assert_eq!(udp_ask(listen).as_deref(), Some("b"));
    // Its socket closes: ICMP port unreachable.
    b.stop();
    lbd.wait_for_log(&transition(b.address, "up -> down (ICMP port unreachable)"), 1);
}

#[test]
fn a_hanging_check_command_is_killed_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    let real = TcpBackend::start("real");
    let (_, mut lbd) = start_rr(
        &[real.address],
        &format!(
            "    health_check: {{ type: exec, command: [/bin/sh, -c, 'echo $$ >> {}; sleep 30; true'], interval: 3s, timeout: 300ms, rise: 1, fall: 1 }}\n",
            pids.display()
        ),
    );
    lbd.wait_for_log(
        &transition(real.address, "up -> down (exec killed after 300ms)"),
        1,
    );
    thread::sleep(Duration::from_millis(200));
    let groups: Vec<String> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(!groups.is_empty());
    // Neither the shell nor the `sleep` it started (same process group) is left.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the command's closing parenthesis: state, ppid, pgrp.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && groups.iter().any(|group| group == fields[2])
        })
        .collect();
    assert!(left.is_empty(), "processes of the check left: {left:?}");
}

#[test]
fn a_reload_keeps_verdicts_of_unchanged_checks() {
    let a = TcpBackend::start("a");
    let mut b = TcpBackend::start("b");
    b.stop();
    let c = TcpBackend::start("c");
    let listen = service_addr();
    let check = "    health_check: { type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 1 }\n";
    let config = |reals: &[(SocketAddr, u32)]| checked("tcp", listen, "rr", reals, check);
    let mut lbd = Lbd::start(&config(&[(a.address, 1), (b.address, 1)]));
    let b_down = transition(b.address, "up -> down");
    lbd.wait_for_log(&b_down, 1);
    // Add c: b keeps its verdict (no second `up -> down`: its checker was not restarted,
    // and it gets no flow in between); c gets a checker of its own.
    std::fs::write(
        lbd.config_path(),
        config(&[(a.address, 1), (b.address, 1), (c.address, 1)]),
    )
    .unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    let counts = distribution(listen, 6);
    assert_eq!(counts, HashMap::from([("a".to_owned(), 3), ("c".to_owned(), 3)]));
    thread::sleep(Duration::from_millis(600));
    assert_eq!(lbd.log_count(&b_down), 1, "{}", lbd.log_text());
    // A changed check starts afresh from `start` (up), so b is found down again.
    std::fs::write(
        lbd.config_path(),
        config(&[(a.address, 1), (b.address, 1), (c.address, 1)]).replace("rise: 1", "rise: 2"),
    )
    .unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log(&b_down, 2);
}

#[test]
fn a_thousand_reals_are_all_checked_within_an_interval() {
    // Nothing listens on 127.77.x.y:9, so every check is refused at once.
    let listen = service_addr();
    let config = checked(
        "tcp",
        listen,
        "wlc",
        &[],
        "    health_check: { type: tcp, interval: 1s, timeout: 500ms, rise: 1, fall: 1 }\n",
    )
    .replace(
        "    reals:\n",
        "    reals:\n      - address: 127.77.[0-3].[1-250]:9\n",
    );
    let started = Instant::now();
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("of service svc: up -> down (connection refused)", 1000);
    let elapsed = started.elapsed();
    eprintln!("1000 reals found down in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn failed_connects_from_traffic_take_a_real_down_between_checks() {
    let a = TcpBackend::start("a");
    let mut b = TcpBackend::start("b");
    // Checks are a minute apart: only the traffic can notice in time.
    let (listen, mut lbd) = start_rr(
        &[a.address, b.address],
        "    health_check: { type: tcp, interval: 60s, timeout: 1s, rise: 1, fall: 3 }\n",
    );
    b.stop();
    let stopped = Instant::now();
    // Each refused connect is retried on `a`, and counts toward b's `fall`.
    let counts = distribution(listen, 12);
    assert_eq!(counts, HashMap::from([("a".to_owned(), 12)]));
    let detection = time_to(&mut lbd, &transition(b.address, "up -> down"), 1, stopped);
    assert!(detection < Duration::from_secs(5), "{detection:?}");
    eprintln!("passive detection: {detection:?}");
}

/// What a real that comes back while another holds 30 long-lived flows gets of the next 40
/// new flows, opened 25 ms apart and kept open, with `wlc` and slow start over
/// `slow_start` (`None`: off); and the weights `lbd_real_weight` showed for it just after it
/// came back and once the window was over.
fn recovered_share(slow_start: Option<&str>) -> (usize, u64, u64) {
    let a = TcpBackend::start("a");
    let mut b = TcpBackend::start("b");
    let (listen, metrics) = (service_addr(), free_addr());
    let keys = match slow_start {
        Some(window) => format!("    slow_start: {window}\n"),
        None => String::new(),
    } + "    health_check: { type: tcp, interval: 100ms, timeout: 300ms, rise: 1, fall: 1 }\n";
    let config = checked("tcp", listen, "wlc", &[(a.address, 10), (b.address, 10)], &keys).replace(
        "services:\n",
        &format!("metrics: {{ listen: '{metrics}' }}\nservices:\n"),
    );
    let mut lbd = Lbd::start(&config);
    b.stop();
    lbd.wait_for_log(&transition(b.address, "up -> down"), 1);
    settle();
    let held: Vec<_> = (0..30).map(|_| connect_and_greet(listen)).collect();
    assert!(held.iter().all(|(name, _)| name == "a"));
    b.restart();
    lbd.wait_for_log(&transition(b.address, "down -> up"), 1);
    settle();
    let weight = || {
        let (_, page) = http_fetch(metrics, "GET", "/metrics", b"").unwrap();
        let needle = format!("lbd_real_weight{{service=\"svc\",real=\"{}\"}} ", b.address);
        page.lines()
            .find_map(|line| line.strip_prefix(&needle))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {needle} in /metrics"))
    };
    let early = weight();
    let mut new_flows = Vec::new();
    for _ in 0..40 {
        new_flows.push(connect_and_greet(listen));
        thread::sleep(Duration::from_millis(25));
    }
    let to_b = new_flows.iter().filter(|(name, _)| name == "b").count();
    if slow_start.is_some() {
        // The window (8 s) is over.
        thread::sleep(Duration::from_secs(8));
    }
    (to_b, early, weight())
}

/// Slow start: a real that comes back under load gets a share of new flows that grows over
/// the window (its weight from 1 to its own, as `lbd_real_weight` shows), instead of every new
/// flow until it has caught up, as `wlc` gives a real with no flows without it.
#[test]
fn slow_start_ramps_a_recovered_reals_share_instead_of_flooding_it() {
    let (flooded, weight_without, _) = recovered_share(None);
    let (ramped, early, late) = recovered_share(Some("8s"));
    eprintln!(
        "of 40 new flows in the first second after it came back, the recovered real got {flooded} without slow start and {ramped} with an 8 s slow start (weight {early} then {late})"
    );
    assert_eq!(
        weight_without, 10,
        "without slow start it comes back at its weight"
    );
    assert!(flooded >= 28, "without slow start wlc floods it: {flooded} of 40");
    assert!(early <= 3, "it starts from a sliver of its weight: {early}");
    assert_eq!(late, 10, "and has all of it once the window is over");
    assert!(
        ramped <= 20,
        "with slow start its share grows instead: {ramped} of 40"
    );
}

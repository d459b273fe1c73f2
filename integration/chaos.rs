//! Chaos: the real `lbd` driven the way an attacker or a careless operator would, each test
//! asserting that lbd stays up, that the other services keep answering and that no real is
//! wrongly marked down. Numbers are printed for the closing notes (`--nocapture`).

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::support::*;

/// A thread that connects to a TCP service every 20 ms and counts the connects that did not
/// get the backend's greeting, until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    tried: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Prober {
    fn start(service: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tried = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (halt, count, fail) = (Arc::clone(&stop), Arc::clone(&tried), Arc::clone(&failed));
        let thread = thread::spawn(move || {
            while !halt.load(Ordering::SeqCst) {
                count.fetch_add(1, Ordering::SeqCst);
                let greeted =
                    TcpStream::connect_timeout(&service, Duration::from_secs(2)).and_then(|mut stream| {
                        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let mut byte = [0u8; 1];
                        stream.read_exact(&mut byte)
                    });
                if greeted.is_err() {
                    fail.fetch_add(1, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            tried,
            failed,
            thread: Some(thread),
        }
    }

    /// Stops; returns (connects tried, connects failed).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        (
            self.tried.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }
}

/// A config with the admin API, `/metrics` and a health-checked or plain TCP service `web`.
fn web_config(
    workers: u8,
    admin: SocketAddr,
    metrics: SocketAddr,
    tcp: SocketAddr,
    real: SocketAddr,
    check: &str,
) -> String {
    format!(
        "workers: {workers}\nadmin: {{ listen: '{admin}' }}\nmetrics: {{ listen: '{metrics}' }}\nservices:\n  - name: web\n    protocol: tcp\n    listen: '{tcp}'\n{check}    reals: [{{address: '{real}'}}]\n"
    )
}

/// The value of one sample of a `/metrics` page.
fn sample(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
}

/// Sends `queries` DNS-like queries to `service`, each from a new socket (a new client port),
/// `rate` per second, and waits up to 2 s for each reply. Returns the queries left without one.
fn flood_new_ports(service: SocketAddr, rate: u32, queries: u32) -> u32 {
    let started = Instant::now();
    let mut pending: Vec<(UdpSocket, Instant)> = Vec::new();
    let (mut sent, mut lost) = (0u32, 0u32);
    let mut buffer = [0u8; 512];
    while sent < queries || !pending.is_empty() {
        let due = (started.elapsed().as_secs_f64() * f64::from(rate)) as u32;
        while sent < queries && sent < due {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.set_nonblocking(true).unwrap();
            socket.send_to(b"query", service).unwrap();
            pending.push((socket, Instant::now()));
            sent += 1;
        }
        pending.retain(|(socket, at)| {
            if socket.recv_from(&mut buffer).is_ok() {
                return false;
            }
            if at.elapsed() > Duration::from_secs(2) {
                lost += 1;
                return false;
            }
            true
        });
        thread::sleep(Duration::from_micros(300));
    }
    lost
}

#[test]
fn a_udp_flood_of_new_client_ports_beside_a_tcp_service() {
    let _turn = heavy_turn();
    let web = TcpBackend::start("web");
    let dns = UdpBackend::start("dns");
    let (tcp, udp, stateful, metrics) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = format!(
        "workers: 2\nmetrics: {{ listen: {metrics} }}\nservices:\n  - {{ name: web, protocol: tcp, listen: '{tcp}', reals: [{{address: '{}'}}] }}\n  - {{ name: dns, protocol: udp, listen: '{udp}', udp_responses: 1, reals: [{{address: '{}'}}] }}\n  - {{ name: stateful, protocol: udp, listen: '{stateful}', reals: [{{address: '{}'}}] }}\n",
        web.address, dns.address, dns.address
    );
    // The common default limit, which lbd cannot raise here: 1,024 descriptors.
    let mut lbd = Lbd::start_with_open_files(1024, &config);
    lbd.wait_for_log("metrics served", 1);
    let prober = Prober::start(tcp);

    // A DNS front door: 2,500 new client ports a second for 10 s, one reply each.
    let lost = flood_new_ports(udp, 2_500, 25_000);
    println!("udp_responses: 1: {lost} of 25000 queries lost");
    assert!(lost <= 25, "{lost} of 25,000 queries lost (at most 0.1 %)");

    // Sessions that linger (no udp_responses): the service is held at its bound, refusals
    // are counted, and the TCP service is not starved.
    let lingering = flood_new_ports(stateful, 2_500, 2_000);
    let page = http_fetch(metrics, "GET", "/metrics", b"").unwrap().1;
    let refused = sample(
        &page,
        "lbd_service_refused_total{service=\"stateful\",reason=\"sessions\"}",
    );
    println!("lingering sessions: {lingering} of 2000 unanswered, {refused} refused at the bound");
    assert!(refused > 0 && lingering >= u32::try_from(refused).unwrap() / 2);
    let (tried, failed) = prober.finish();
    println!("TCP beside it: {failed} of {tried} connects failed");
    assert_eq!(failed, 0, "the TCP service kept answering");
    assert_eq!(connect_and_greet(tcp).0, "web");
    let warnings = lbd.log_count("new udp session refused");
    assert!(
        (1..=2).contains(&warnings),
        "a warning line per worker and interval, not one per datagram:\n{}",
        lbd.log_text()
    );
}

#[test]
fn descriptor_exhaustion_refuses_new_flows_and_blames_no_real() {
    let _turn = heavy_turn();
    raise_own_open_files();
    let web = TcpBackend::start("web");
    let (tcp, admin, metrics) = (free_addr(), free_addr(), free_addr());
    let check = "    health_check: { type: tcp, interval: 200ms, timeout: 1s, rise: 1, fall: 2 }\n";
    let config = web_config(2, admin, metrics, tcp, web.address, check);
    let mut lbd = Lbd::start_with_open_files(1024, &config);
    lbd.wait_for_log("metrics served", 1);
    // Twice what 1,024 descriptors can hold (two per proxied connection).
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..800 {
        let Ok(mut stream) = TcpStream::connect_timeout(&tcp, Duration::from_secs(2)) else {
            refused += 1;
            continue;
        };
        stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut byte = [0u8; 1];
        match stream.read_exact(&mut byte) {
            Ok(()) => held.push(stream),
            Err(_) => refused += 1,
        }
    }
    println!("{} connections held, {refused} refused with a reset", held.len());
    assert!(held.len() >= 300, "{} held", held.len());
    assert!(refused > 0);
    // The control plane kept its reserve: admin, metrics and health checks work.
    let (status, _) = http_fetch(admin, "GET", "/v1/status", b"").unwrap();
    assert_eq!(status, 200);
    let page = http_fetch(metrics, "GET", "/metrics", b"").unwrap().1;
    assert!(
        sample(
            &page,
            "lbd_service_refused_total{service=\"web\",reason=\"descriptors\"}"
        ) > 0
    );
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        lbd.log_count("up -> down"),
        0,
        "no real marked down:\n{}",
        lbd.log_text()
    );
    drop(held);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        connect_and_greet(tcp).0,
        "web",
        "new flows are served once descriptors are free"
    );
}

#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    let _turn = heavy_turn();
    let web = TcpBackend::start("web");
    let tcp = free_addr();
    let config = format!(
        "workers: 1\nservices:\n  - {{ name: web, protocol: tcp, listen: '{tcp}', reals: [{{address: '{}'}}] }}\n",
        web.address
    );
    let lbd = Lbd::start_with_open_file_limits(1024, 4096, &config);
    assert!(
        lbd.log_text()
            .contains("open-file limit raised to the hard limit from=1024 to=4096"),
        "{}",
        lbd.log_text()
    );
    // 4,096 less the reserve (256) and one listener: the budget of proxied flows.
    assert!(
        lbd.log_text().contains("open_files=4096 proxy_descriptors=3839"),
        "{}",
        lbd.log_text()
    );
}

#[test]
fn half_open_admin_and_metrics_connections_are_bounded_and_timed_out() {
    let _turn = heavy_turn();
    raise_own_open_files();
    let web = TcpBackend::start("web");
    let (tcp, admin, metrics) = (free_addr(), free_addr(), free_addr());
    let config = web_config(1, admin, metrics, tcp, web.address, "");
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("metrics served", 1);
    let mut half_open = Vec::new();
    for endpoint in [admin, metrics] {
        for _ in 0..400 {
            if let Ok(mut stream) = TcpStream::connect(endpoint) {
                let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHo");
                half_open.push(stream);
            }
        }
    }
    // The data plane is untouched: its descriptors were never at stake.
    for _ in 0..20 {
        assert_eq!(connect_and_greet(tcp).0, "web");
    }
    // Every half-open connection is closed within the 10 s header timeout.
    let started = Instant::now();
    for stream in &mut half_open {
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
    }
    println!("800 half-open requests all closed after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(12));
    drop(half_open);
    let (status, page) = http_fetch(metrics, "GET", "/metrics", b"").unwrap();
    assert_eq!(status, 200);
    assert!(sample(&page, "lbd_http_connections_refused_total") > 0);
    assert_eq!(http_fetch(admin, "GET", "/v1/status", b"").unwrap().0, 200);
    drop(lbd);
}

#[test]
fn hostile_admin_bodies_are_refused_without_stalling_the_director() {
    let _turn = heavy_turn();
    let web = TcpBackend::start("web");
    let (tcp, admin, metrics) = (free_addr(), free_addr(), free_addr());
    let config = web_config(1, admin, metrics, tcp, web.address, "");
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("metrics served", 1);
    let deep = format!("{{\"services\": {}{}}}", "[".repeat(60_000), "]".repeat(60_000));
    let overflow = format!("persistence: {{ timeout: {} }}\n", "999999999999d".repeat(250));
    let long_fin = format!("{{ \"udp_timeout\": \"{}\" }}", "1d".repeat(200));
    let cases: [(&str, &str, &[u8], u16); 6] = [
        ("PUT", "/v1/services", deep.as_bytes(), 400),
        ("PATCH", "/v1/services/web", overflow.as_bytes(), 400),
        ("PATCH", "/v1/services/web", long_fin.as_bytes(), 400),
        ("POST", "/v1/services", b"\xff\xfe{{{not yaml", 400),
        (
            "POST",
            "/v1/services/web/reals",
            b"{address: '10.0.0.[1-99999999]'}",
            400,
        ),
        ("PUT", "/v1/services", &[b' '; 9 * 1024 * 1024], 413),
    ];
    let mut scrape_worst = Duration::ZERO;
    for (method, path, body, expected) in cases {
        let started = Instant::now();
        let scraper = thread::spawn(move || {
            let started = Instant::now();
            assert_eq!(http_fetch(metrics, "GET", "/metrics", b"").unwrap().0, 200);
            started.elapsed()
        });
        let (status, answer) = http_fetch(admin, method, path, body).unwrap();
        let took = started.elapsed();
        scrape_worst = scrape_worst.max(scraper.join().unwrap());
        println!(
            "{method} {path} ({} bytes): {status} in {took:?}: {answer}",
            body.len()
        );
        assert_eq!(status, expected, "{answer}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(answer.contains("\"error\""), "{answer}");
    }
    println!("slowest scrape meanwhile: {scrape_worst:?}");
    assert!(scrape_worst < Duration::from_millis(500));
    // Still up, nothing changed, still serving.
    assert_eq!(connect_and_greet(tcp).0, "web");
    let (_, services) = http_fetch(admin, "GET", "/v1/services", b"").unwrap();
    assert_eq!(services.matches("\"name\"").count(), 1, "{services}");
    // A large file is read and parsed off the control loop: scrapes go on meanwhile.
    let big = free_addr();
    let reals: String = (0..40_000)
        .map(|n| {
            format!(
                "      - {{ address: '10.{}.{}.{}:80', weight: 2 }}\n",
                100 + n / 62_500,
                n / 250 % 250,
                n % 250 + 1
            )
        })
        .collect();
    std::fs::write(
        lbd.config_path(),
        format!("{config}  - name: big\n    protocol: tcp\n    listen: '{big}'\n    reals:\n{reals}"),
    )
    .unwrap();
    lbd.signal(Signal::SIGHUP);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    while lbd.log_count("configuration reloaded") == 0 && started.elapsed() < Duration::from_secs(60) {
        let scrape = Instant::now();
        assert_eq!(http_fetch(metrics, "GET", "/v1/none", b"").unwrap().0, 404);
        slowest = slowest.max(scrape.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "reload of a {} KB file: {:?}; slowest request to /metrics' listener meanwhile: {slowest:?}",
        std::fs::metadata(lbd.config_path()).unwrap().len() / 1024,
        started.elapsed()
    );
    lbd.wait_for_log("configuration reloaded", 1);
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");
    assert_eq!(connect_and_greet(tcp).0, "web");
    let counts: HashMap<&str, usize> = [("panicked", lbd.log_count("panicked"))].into();
    assert_eq!(counts["panicked"], 0, "{}", lbd.log_text());
}

/// When each backend answered, and how many connects failed.
type Answered = (HashMap<String, Vec<Instant>>, u64);

/// Clients that open short connections in a loop (greeting, then close) until stopped, and
/// count which backend answered and how many connects failed.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Answered>>,
}

impl Load {
    fn start(service: SocketAddr, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();
                    let mut failed = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let greeted =
                            TcpStream::connect_timeout(&service, Duration::from_secs(3)).and_then(|stream| {
                                stream.set_read_timeout(Some(Duration::from_secs(3)))?;
                                let mut line = String::new();
                                std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line)?;
                                Ok(line.trim().to_owned())
                            });
                        match greeted {
                            Ok(name) if !name.is_empty() => {
                                seen.entry(name).or_default().push(Instant::now())
                            }
                            _ => failed += 1,
                        }
                        thread::sleep(Duration::from_millis(2));
                    }
                    (seen, failed)
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops; returns when each backend answered, and the connects that failed.
    fn finish(self) -> Answered {
        self.stop.store(true, Ordering::SeqCst);
        let mut seen: HashMap<String, Vec<Instant>> = HashMap::new();
        let mut failed = 0;
        for thread in self.threads {
            let (more, lost) = thread.join().unwrap();
            failed += lost;
            for (name, times) in more {
                seen.entry(name).or_default().extend(times);
            }
        }
        (seen, failed)
    }
}

#[test]
fn a_reload_and_lbadm_storm_under_load_drops_no_connection() {
    let _turn = heavy_turn();
    let (a, b, c) = (
        TcpBackend::start("a"),
        TcpBackend::start("b"),
        TcpBackend::start("c"),
    );
    let (web, admin) = (free_addr(), free_addr());
    let config = format!(
        "workers: 2\nadmin: {{ listen: '{admin}' }}\nservices:\n  - {{ name: web, protocol: tcp, listen: '{web}', scheduler: wlc, reals: [{{address: '{}'}}, {{address: '{}'}}] }}\n",
        a.address, b.address
    );
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("admin API listening", 1);
    let load = Load::start(web, 4);
    let admin = admin.to_string();
    let (web_text, c_text) = (web.to_string(), c.address.to_string());
    let started = Instant::now();
    let mut storms = 0;
    while started.elapsed() < Duration::from_secs(5) {
        lbd.signal(Signal::SIGHUP);
        for args in [
            vec!["add-real", "-t", &web_text, "-r", &c_text, "-w", "2"],
            vec!["edit-real", "-t", &web_text, "-r", &c_text, "-w", "5"],
            vec!["edit-service", "-t", &web_text, "-s", "rr"],
            vec!["del-real", "-t", &web_text, "-r", &c_text],
        ] {
            // A reload may have just put the table back: some of these are refused, none fails.
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_lbadm"))
                .arg("--admin")
                .arg(&admin)
                .args(&args)
                .output()
                .unwrap();
            assert!(
                matches!(output.status.code(), Some(0 | 1)),
                "{args:?}: {output:?}"
            );
        }
        storms += 1;
    }
    let (seen, failed) = load.finish();
    let served: usize = seen.values().map(Vec::len).sum();
    println!(
        "{storms} rounds of SIGHUP + 4 lbadm changes in 5 s: {served} connections served, {failed} failed"
    );
    assert_eq!(failed, 0, "every client connection was served");
    assert!(storms >= 10 && served > 1000, "{storms} storms, {served} served");
    lbd.wait_for_log("configuration reloaded", storms / 2);
    assert_eq!(lbd.log_count("panicked"), 0, "{}", lbd.log_text());
}

#[test]
fn a_real_killed_and_restarted_under_load_is_back_within_about_a_second() {
    let _turn = heavy_turn();
    let (mut a, b) = (TcpBackend::start("a"), TcpBackend::start("b"));
    let web = free_addr();
    let config = format!(
        "workers: 2\nservices:\n  - {{ name: web, protocol: tcp, listen: '{web}', scheduler: wlc, reals: [{{address: '{}'}}, {{address: '{}'}}] }}\n",
        a.address, b.address
    );
    let lbd = Lbd::start(&config);
    let load = Load::start(web, 4);
    thread::sleep(Duration::from_millis(500));
    a.stop();
    thread::sleep(Duration::from_millis(500));
    a.restart();
    let restarted = Instant::now();
    thread::sleep(Duration::from_millis(3_000));
    let (seen, failed) = load.finish();
    let back = seen["a"]
        .iter()
        .filter(|at| **at > restarted)
        .min()
        .map(|first| first.duration_since(restarted));
    println!(
        "a down 0.5 s under 4 clients: {failed} client connects failed; a back {back:?} after it restarted; served a {} / b {}",
        seen["a"].len(),
        seen["b"].len()
    );
    assert_eq!(failed, 0, "connects to the dead real were retried on the other");
    let back = back.expect("a gets connections again");
    assert!(back < Duration::from_millis(2_000), "back after {back:?}");
    assert!(lbd.log_count("connect to real server failed") >= 1);
}

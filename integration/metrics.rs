//! `/metrics` as Prometheus sees it: the counters equal the traffic sent, `promtool` accepts
//! the page, a real Prometheus scrapes it, and 1000 reals scrape quickly.

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::*;

/// GETs `path` from `address` over HTTP/1.1; returns the body.
fn http_get_path(address: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Sums the samples of `name` whose labels include every one of `labels`.
fn sum(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|label| rest.contains(label)))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Whether a tool is on PATH; in CI it must be (`.ci/run` installs it).
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing in CI; .ci/run installs Debian's `prometheus` package"
        );
        skipped(&format!("{name} is not installed (apt-get install prometheus)"));
    }
    found
}

struct Setup {
    lbd: Lbd,
    metrics: SocketAddr,
    tcp: SocketAddr,
    udp: SocketAddr,
    _backends: (TcpBackend, TcpBackend, UdpBackend),
}

fn setup(extra_reals: &str) -> Setup {
    let (a, b, u) = (
        TcpBackend::start("a"),
        TcpBackend::start("b"),
        UdpBackend::start("u"),
    );
    let metrics = free_addr();
    let tcp = free_addr();
    let udp = free_addr();
    let config = format!(
        "metrics: {{ listen: '{metrics}' }}\nworkers: 2\nservices:\n  - name: web\n    protocol: tcp\n    listen: {tcp}\n    scheduler: rr\n    reals:\n      - address: {}\n      - address: {}\n{extra_reals}  - name: dns\n    protocol: udp\n    listen: {udp}\n    reals:\n      - address: {}\n",
        a.address, b.address, u.address
    );
    let mut lbd = Lbd::start(&config);
    lbd.wait_for_log("metrics served at /metrics", 1);
    Setup {
        lbd,
        metrics,
        tcp,
        udp,
        _backends: (a, b, u),
    }
}

/// Scrapes until `ready` holds (counters settle as the last relays finish), at most 5 s.
fn scrape_until(metrics: SocketAddr, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = http_get_path(metrics, "/metrics");
        if ready(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn counters_equal_the_traffic_sent() {
    let s = setup("");
    // Every series exists before any traffic, at 0.
    let page = http_get_path(s.metrics, "/metrics");
    assert_eq!(page.matches("lbd_real_connections_total{").count(), 3, "{page}");
    assert_eq!(sum(&page, "lbd_service_connections_total", &[]), 0.0);

    let (flows, payload) = (10, [7u8; 100]);
    for _ in 0..flows {
        let (_, mut stream) = connect_and_greet(s.tcp);
        stream.write_all(&payload).unwrap();
        let mut back = [0u8; 100];
        stream.read_exact(&mut back).unwrap();
        stream.shutdown(Shutdown::Both).unwrap();
    }
    let datagrams = 7;
    for _ in 0..datagrams {
        assert_eq!(udp_ask(s.udp).as_deref(), Some("u"));
    }
    let web = "service=\"web\"";
    let dns = "service=\"dns\"";
    let expected_out = f64::from(flows) * (2.0 + 100.0); // greeting "a\n" or "b\n", then the echo
    let page = scrape_until(s.metrics, |page| {
        sum(page, "lbd_real_bytes_total", &[web, "direction=\"out\""]) == expected_out
            && sum(page, "lbd_real_connections_active", &[web]) == 0.0
    });
    assert_eq!(
        sum(&page, "lbd_service_connections_total", &[web, "protocol=\"tcp\""]),
        f64::from(flows)
    );
    assert_eq!(sum(&page, "lbd_real_connections_total", &[web]), f64::from(flows));
    assert_eq!(
        sum(&page, "lbd_real_bytes_total", &[web, "direction=\"in\""]),
        f64::from(flows) * 100.0
    );
    assert_eq!(
        sum(&page, "lbd_real_bytes_total", &[web, "direction=\"out\""]),
        expected_out
    );
    assert_eq!(
        sum(&page, "lbd_service_connections_total", &[dns, "protocol=\"udp\""]),
        f64::from(datagrams)
    );
    assert_eq!(
        sum(&page, "lbd_real_packets_total", &[dns, "direction=\"in\""]),
        f64::from(datagrams)
    );
    assert_eq!(
        sum(&page, "lbd_real_packets_total", &[dns, "direction=\"out\""]),
        f64::from(datagrams)
    );
    assert_eq!(
        sum(&page, "lbd_real_bytes_total", &[dns, "direction=\"in\""]),
        f64::from(datagrams) * 5.0
    );
    assert_eq!(
        sum(&page, "lbd_real_bytes_total", &[dns, "direction=\"out\""]),
        f64::from(datagrams)
    );
    assert_eq!(
        sum(&page, "lbd_flows", &["protocol=\"udp\""]),
        f64::from(datagrams),
        "UDP sessions live on"
    );
    assert_eq!(sum(&page, "lbd_real_up", &[web]), 2.0);
    assert_eq!(sum(&page, "lbd_build_info", &["version=\""]), 1.0);

    // A reload keeps the counters of reals that remain and drops the removed real's series.
    let mut lbd = s.lbd;
    let config = std::fs::read_to_string(lbd.config_path()).unwrap();
    let removed = config
        .lines()
        .filter(|line| line.trim_start().starts_with("- address:"))
        .nth(1)
        .unwrap()
        .to_owned();
    let removed_real = removed.trim_start().trim_start_matches("- address: ").to_owned();
    let kept_before = sum(&page, "lbd_real_connections_total", &[web])
        - sum(
            &page,
            "lbd_real_connections_total",
            &[&format!("real=\"{removed_real}\"")],
        );
    std::fs::write(lbd.config_path(), config.replace(&format!("{removed}\n"), "")).unwrap();
    lbd.signal(Signal::SIGHUP);
    lbd.wait_for_log("configuration reloaded", 1);
    let page = http_get_path(s.metrics, "/metrics");
    assert!(!page.contains(&format!("real=\"{removed_real}\"")), "{page}");
    assert_eq!(sum(&page, "lbd_real_connections_total", &[web]), kept_before);
    assert_eq!(
        sum(&page, "lbd_config_reloads_total", &["result=\"success\""]),
        1.0
    );
}

#[test]
fn promtool_accepts_the_page() {
    if !tool("promtool") {
        return;
    }
    let s = setup("");
    let _ = connect_and_greet(s.tcp);
    let page = http_get_path(s.metrics, "/metrics");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}\n{page}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_every_real() {
    if !tool("prometheus") {
        return;
    }
    let s = setup("");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lbd\n    static_configs:\n      - targets: ['{}']\n",
            s.metrics
        ),
    )
    .unwrap();
    let web = free_addr();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let reals: HashMap<String, f64> = loop {
        let answer =
            std::panic::catch_unwind(|| http_get_path(web, "/api/v1/query?query=lbd_real_connections_total"));
        if let Ok(body) = answer {
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            let results = json["data"]["result"].as_array().cloned().unwrap_or_default();
            if results.len() == 3 {
                break results
                    .iter()
                    .map(|series| {
                        (
                            series["metric"]["real"].as_str().unwrap().to_owned(),
                            series["value"][1].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect();
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape lbd within 60 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(reals.len(), 3, "{reals:?}");
}

#[test]
fn a_scrape_of_1000_reals_is_quick() {
    let s = setup("  - name: big\n    protocol: tcp\n    listen: 127.0.0.1:1\n    reals:\n      - address: 127.0.[1-4].[1-250]:80\n".replace("127.0.0.1:1", &free_addr().to_string()).as_str());
    let _ = &s.lbd;
    let started = Instant::now();
    let page = http_get_path(s.metrics, "/metrics");
    let first = started.elapsed();
    let started = Instant::now();
    for _ in 0..10 {
        http_get_path(s.metrics, "/metrics");
    }
    let each = started.elapsed() / 10;
    eprintln!(
        "scrape of 1003 reals: first {first:?}, then {each:?} each ({} bytes)",
        page.len()
    );
    assert_eq!(
        page.matches("lbd_real_connections_total{service=\"big\"").count(),
        1000
    );
    assert!(each < Duration::from_secs(1), "{each:?}");
}

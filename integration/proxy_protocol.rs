//! The PROXY protocol end to end, against real receivers: nginx (`listen … proxy_protocol`)
//! and HAProxy (`bind … accept-proxy`) behind lbd must answer and log the client's own
//! address, over IPv4 and IPv6, with health checks that send the header too; lbd behind HAProxy
//! (`send-proxy-v2`) takes the client from the header (`accept_proxy`), refusing sources it does
//! not trust and connections without a valid header; and UDP carries a version 2 header in
//! front of every datagram.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{
    ipv6::{REAL1, REAL2, VIP6, namespace},
    lvs::{in_netns, root},
    support::*,
};

/// A receiver (nginx or HAProxy) run from a config of the test's own, killed when dropped.
struct Receiver {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Receiver {
    /// nginx answering `nginx CLIENT PORT` (the PROXY header's client) on `address`, logging
    /// the same to its access log.
    fn nginx(netns: Option<&str>, address: SocketAddr) -> Option<Self> {
        if !installed("nginx") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().display().to_string();
        let config = format!(
            "master_process off;\ndaemon off;\npid {path}/nginx.pid;\nerror_log {path}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               log_format pp '$proxy_protocol_addr $proxy_protocol_port via $remote_addr \"$request\" $status';\n\
               access_log {path}/access.log pp;\n\
               client_body_temp_path {path}/body; proxy_temp_path {path}/proxy; fastcgi_temp_path {path}/fastcgi;\n\
               uwsgi_temp_path {path}/uwsgi; scgi_temp_path {path}/scgi;\n\
               server {{\n\
                 listen {address} proxy_protocol;\n\
                 location / {{ return 200 \"nginx $proxy_protocol_addr $proxy_protocol_port\\n\"; }}\n\
               }}\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
        let args = [
            "-p",
            &path,
            "-c",
            &format!("{path}/nginx.conf"),
            "-e",
            &format!("{path}/error.log"),
        ];
        let log = dir.path().join("access.log");
        Some(Self::run(netns, "nginx", &args, dir, log, address))
    }

    /// HAProxy answering `haproxy CLIENT PORT` on `address` (`accept-proxy`), logging each
    /// request with the client's address on its standard output.
    fn haproxy(netns: Option<&str>, address: SocketAddr) -> Option<Self> {
        if !installed("haproxy") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global\n  log stdout format raw local0\n\
             defaults\n  mode http\n  log global\n  option httplog\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind {address} accept-proxy\n\
             \x20 http-request return status 200 content-type text/plain lf-string \"haproxy %[src] %[src_port]\\n\"\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("stdout.log");
        let args = ["-db", "-f", path.to_str().unwrap()];
        Some(Self::run(netns, "haproxy", &args, dir, log, address))
    }

    /// HAProxy in TCP mode in front of `lbd` on `address`, sending it PROXY v2 headers.
    fn haproxy_in_front(address: SocketAddr, lbd: SocketAddr) -> Option<Self> {
        if !installed("haproxy") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend fe\n  bind {address}\n  default_backend lbd\n\
             backend lbd\n  server lbd {lbd} send-proxy-v2\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("stdout.log");
        let args = ["-db", "-f", path.to_str().unwrap()];
        Some(Self::run(None, "haproxy", &args, dir, log, address))
    }

    fn run(
        netns: Option<&str>,
        program: &str,
        args: &[&str],
        dir: tempfile::TempDir,
        log: PathBuf,
        address: SocketAddr,
    ) -> Self {
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        };
        let stdout = std::fs::File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let receiver = Self { child, dir, log };
        // Listening once a connection is taken.
        let deadline = Instant::now() + Duration::from_secs(10);
        let netns = netns.map(str::to_owned);
        while !reachable(netns.as_deref(), address) {
            assert!(
                Instant::now() < deadline,
                "{program} did not listen on {address}: {}",
                receiver.output()
            );
            thread::sleep(Duration::from_millis(50));
        }
        receiver
    }

    /// The receiver's log (nginx's access log, HAProxy's standard output).
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn output(&self) -> String {
        ["stdout.log", "stderr.log", "error.log"]
            .iter()
            .map(|name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(program: &str) -> bool {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|dir| std::path::Path::new(dir).join(program).exists());
    if !found {
        skipped(&format!("{program} is not installed (apt-get install {program})"));
    }
    found
}

fn reachable(netns: Option<&str>, address: SocketAddr) -> bool {
    let probe = move || TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok();
    match netns {
        Some(netns) => in_netns(netns, probe),
        None => probe(),
    }
}

/// A GET from `client` (port chosen by the kernel) to `service`: (the client's address, the
/// body).
fn get_from(client: IpAddr, service: SocketAddr) -> (SocketAddr, String) {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(service), socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(client, 0).into()).unwrap();
    socket
        .connect_timeout(&service.into(), Duration::from_secs(5))
        .unwrap();
    let mut stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let local = stream.local_addr().unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_owned());
    (
        local,
        body.unwrap_or_else(|| format!("no HTTP answer: {response:?}")),
    )
}

/// Through lbd to nginx (v1, the real's own setting) and HAProxy (v2, the service's), rr:
/// each answers with the client's own address and port and logs the address; the health
/// checks (http, sending the header) keep both up.
fn receivers_see_the_client(netns: Option<&str>, client: IpAddr, addresses: [SocketAddr; 3]) {
    let [listen, nginx_at, haproxy_at] = addresses;
    let (Some(nginx), Some(haproxy)) = (
        Receiver::nginx(netns, nginx_at),
        Receiver::haproxy(netns, haproxy_at),
    ) else {
        return;
    };
    let config = format!(
        "workers: 2\nservices:\n  - name: web\n    protocol: tcp\n    listen: '{listen}'\n    scheduler: rr\n    proxy_protocol: v2\n\
         \x20   health_check: {{ type: http, interval: 200ms, timeout: 1s, rise: 1, fall: 1 }}\n\
         \x20   reals:\n      - {{ address: '{nginx_at}', proxy_protocol: v1 }}\n      - {{ address: '{haproxy_at}' }}\n"
    );
    let _lbd = match netns {
        Some(netns) => Lbd::start_in(netns, &config),
        None => Lbd::start(&config),
    };
    // Several check rounds: a real whose check failed (no header, a broken one) would be down.
    thread::sleep(Duration::from_secs(1));
    let answers: Vec<(SocketAddr, String)> = (0..4)
        .map(|_| match netns {
            Some(netns) => in_netns(netns, move || get_from(client, listen)),
            None => get_from(client, listen),
        })
        .collect();
    for receiver in ["nginx", "haproxy"] {
        let mine: Vec<&(SocketAddr, String)> = answers
            .iter()
            .filter(|(_, body)| body.starts_with(receiver))
            .collect();
        assert_eq!(mine.len(), 2, "rr over two reals that stay up: {answers:?}");
        for (from, body) in mine {
            assert_eq!(
                *body,
                format!("{receiver} {} {}", from.ip(), from.port()),
                "{answers:?}"
            );
        }
    }
    let client_text = client.to_string();
    let nginx_log = nginx.log_text();
    assert!(
        nginx_log
            .lines()
            .filter(|line| line.starts_with(&format!("{client_text} ")))
            .count()
            == 2,
        "nginx logs the client's address for both requests: {nginx_log}"
    );
    let haproxy_log = haproxy.log_text();
    let logged = haproxy_log
        .lines()
        .filter(|line| line.contains(&client_text) && line.contains("GET / HTTP/1.1"))
        .count();
    assert_eq!(logged, 2, "HAProxy logs the client's address: {haproxy_log}");
}

#[test]
fn nginx_and_haproxy_behind_lbd_see_and_log_the_clients_address() {
    let client = free_addr().ip();
    receivers_see_the_client(None, client, [free_addr(), free_addr(), free_addr()]);
}

#[test]
fn nginx_and_haproxy_behind_lbd_see_the_clients_ipv6_address() {
    if !root() {
        return;
    }
    let namespace = namespace();
    let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);
    receivers_see_the_client(
        Some(&namespace.0),
        REAL2.parse().unwrap(),
        [at(VIP6, 80), at(REAL1, 8080), at(REAL1, 8081)],
    );
}

#[test]
fn behind_haproxy_lbd_takes_the_client_from_the_header_and_refuses_the_rest() {
    let (listen, untrusting, haproxy_at, nginx_at, metrics) =
        (free_addr(), free_addr(), free_addr(), free_addr(), free_addr());
    let Some(_nginx) = Receiver::nginx(None, nginx_at) else {
        return;
    };
    let config = format!(
        "workers: 2\nmetrics: {{ listen: '{metrics}' }}\nservices:\n\
         \x20 - {{ name: behind, protocol: tcp, listen: '{listen}', accept_proxy: true, accept_proxy_from: [127.0.0.0/8],\n\
         \x20     proxy_protocol: v1, reals: [{{ address: '{nginx_at}' }}] }}\n\
         \x20 - {{ name: untrusting, protocol: tcp, listen: '{untrusting}', accept_proxy: true, accept_proxy_from: ['10.0.0.0/8', 'fd00::/8'],\n\
         \x20     proxy_protocol: v1, reals: [{{ address: '{nginx_at}' }}] }}\n"
    );
    let lbd = Lbd::start(&config);
    let Some(_haproxy) = Receiver::haproxy_in_front(haproxy_at, listen) else {
        return;
    };
    // client → HAProxy (send-proxy-v2) → lbd (accept_proxy, then v1) → nginx.
    let client = free_addr().ip();
    let (from, body) = get_from(client, haproxy_at);
    assert_eq!(body, format!("nginx {client} {}", from.port()));

    // A header of the test's own, sent in two parts with a pause (read across segments).
    let mut stream = TcpStream::connect(listen).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"PROXY TCP4 198.51.100.7 ").unwrap();
    thread::sleep(Duration::from_millis(200));
    stream
        .write_all(
            format!(
                "{} 5555 {}\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                listen.ip(),
                listen.port()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(response.ends_with("nginx 198.51.100.7 5555\n"), "{response}");

    // No header: refused with a reset, the request never reaches nginx.
    let (status, body) = http_fetch(listen, "GET", "/", b"").unwrap_or((0, String::new()));
    assert_eq!(
        (status, body.as_str()),
        (0, ""),
        "a connection without a header is refused"
    );
    // A header from a source outside accept_proxy_from: refused.
    let mut stream = TcpStream::connect(untrusting).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(b"PROXY TCP4 198.51.100.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(response.is_empty(), "{}", String::from_utf8_lossy(&response));
    assert_eq!(
        metric_sample(
            metrics,
            "lbd_service_refused_total{service=\"behind\",reason=\"proxy_header\"}"
        ),
        1
    );
    assert_eq!(
        metric_sample(
            metrics,
            "lbd_service_refused_total{service=\"untrusting\",reason=\"untrusted_proxy\"}"
        ),
        1
    );
    assert!(
        lbd.log_text()
            .contains("a source outside accept_proxy_from connected")
    );
}

#[test]
fn udp_datagrams_each_carry_a_version_2_header_and_checks_send_local() {
    // A receiver that reads the header byte by byte: LOCAL + "ping" (a check) gets "pong";
    // a PROXY UDP4 header gets back the client it names and the payload.
    let real = UdpSocket::bind(free_addr()).unwrap();
    let real_at = real.local_addr().unwrap();
    thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((n, peer)) = real.recv_from(&mut buffer) {
            let datagram = &buffer[..n];
            let reply = if !datagram.starts_with(b"\r\n\r\n\0\r\nQUIT\n") {
                "no header".to_owned()
            } else if datagram[12] == 0x20 {
                if &datagram[16..] == b"ping" {
                    "pong".to_owned()
                } else {
                    "local".to_owned()
                }
            } else if datagram[12..16] == [0x21, 0x12, 0, 12] {
                let ip = IpAddr::from([datagram[16], datagram[17], datagram[18], datagram[19]]);
                let to = IpAddr::from([datagram[20], datagram[21], datagram[22], datagram[23]]);
                let port = u16::from_be_bytes([datagram[24], datagram[25]]);
                let to_port = u16::from_be_bytes([datagram[26], datagram[27]]);
                let payload = String::from_utf8_lossy(&datagram[28..]);
                format!("{ip}:{port} to {to}:{to_port} {payload}")
            } else {
                format!("unexpected header {:?}", &datagram[12..16])
            };
            let _ = real.send_to(reply.as_bytes(), peer);
        }
    });
    let (listen, metrics) = (free_addr(), free_addr());
    let config = format!(
        "workers: 1\nmetrics: {{ listen: '{metrics}' }}\nservices:\n  - name: dns\n    protocol: udp\n    listen: '{listen}'\n    proxy_protocol: v2\n\
         \x20   health_check: {{ type: udp, send: ping, expect: pong, interval: 100ms, rise: 1, fall: 1 }}\n\
         \x20   reals: [{{ address: '{real_at}' }}]\n"
    );
    let _lbd = Lbd::start(&config);
    thread::sleep(Duration::from_millis(600));
    assert_eq!(
        metric_sample(
            metrics,
            &format!("lbd_real_up{{service=\"dns\",real=\"{real_at}\"}}")
        ),
        1
    );
    let client = UdpSocket::bind(SocketAddr::new(free_addr().ip(), 0)).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let from = client.local_addr().unwrap();
    for payload in ["hello", "again"] {
        client.send_to(payload.as_bytes(), listen).unwrap();
        let mut buffer = [0u8; 2048];
        let (n, _) = client.recv_from(&mut buffer).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buffer[..n]),
            format!("{from} to {listen} {payload}")
        );
    }
}

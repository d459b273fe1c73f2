//! Test support: run the real `lbd` binary with a config, and small real backends.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The `lbd` binary under test.
pub fn lbd_binary() -> &'static str {
    env!("CARGO_BIN_EXE_lbd")
}

/// A loopback address no other process uses: an IP of 127/8 of this test process's own
/// (from its pid) and of this call's own (a counter), on a port free for TCP and UDP there.
/// Binding port 0 and releasing it races with every other process on 127.0.0.1; nothing else
/// binds these IPs, so the port stays free until lbd binds it.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let ip = std::net::Ipv4Addr::new(
        127,
        1 + ((pid >> 8) % 250) as u8,
        (pid & 0xff) as u8,
        1 + (n % 250) as u8,
    );
    loop {
        let tcp = TcpListener::bind((ip, 0)).unwrap();
        let address = tcp.local_addr().unwrap();
        if UdpSocket::bind(address).is_ok() {
            return address;
        }
    }
}

/// A running `lbd`, killed when dropped.
pub struct Lbd {
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    config_path: PathBuf,
}

impl Lbd {
    /// Writes `config` to a temporary file and starts `lbd --config` on it, waiting until it
    /// logs that it started.
    pub fn start(config: &str) -> Self {
        let mut lbd = Self::spawn(config);
        lbd.wait_for_log("lbd started", 1);
        lbd
    }

    /// Starts `lbd` without waiting.
    pub fn spawn(config: &str) -> Self {
        Self::spawn_in(None, config)
    }

    /// Starts `lbd` inside network namespace `netns` (through `ip netns exec`), waiting until
    /// it logs that it started.
    pub fn start_in(netns: &str, config: &str) -> Self {
        let mut lbd = Self::spawn_in(Some(netns), config);
        lbd.wait_for_log("lbd started", 1);
        lbd
    }

    /// Starts `lbd` with an open-file limit of `nofile` (soft and hard, as `ulimit -n`), waiting
    /// until it logs that it started.
    pub fn start_with_open_files(nofile: u32, config: &str) -> Self {
        Self::start_with_open_file_limits(nofile, nofile, config)
    }

    /// Starts `lbd` with soft and hard open-file limits, waiting until it logs that it started.
    pub fn start_with_open_file_limits(soft: u32, hard: u32, config: &str) -> Self {
        let mut lbd = Self::spawn_with(None, Some((soft, hard)), config);
        lbd.wait_for_log("lbd started", 1);
        lbd
    }

    /// Starts `lbd` inside network namespace `netns` without waiting.
    pub fn spawn_in_netns(netns: &str, config: &str) -> Self {
        Self::spawn_in(Some(netns), config)
    }

    fn spawn_in(netns: Option<&str>, config: &str) -> Self {
        Self::spawn_with(netns, None, config)
    }

    /// Starts `lbd ARGS… --config FILE`, waiting until it logs that it started.
    pub fn start_with_args(args: &[&str], config: &str) -> Self {
        let mut lbd = Self::spawn_full(None, None, args, config);
        lbd.wait_for_log("lbd started", 1);
        lbd
    }

    fn spawn_with(netns: Option<&str>, nofile: Option<(u32, u32)>, config: &str) -> Self {
        Self::spawn_full(netns, nofile, &[], config)
    }

    fn spawn_full(netns: Option<&str>, nofile: Option<(u32, u32)>, args: &[&str], config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("lbd.yaml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = match (netns, nofile) {
            (Some(netns), _) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, lbd_binary()]);
                command
            }
            (None, Some((soft, hard))) => {
                let mut command = Command::new("sh");
                command
                    .args([
                        "-c",
                        "ulimit -Sn \"$1\" && ulimit -Hn \"$2\" && exec \"$3\" \"$4\" \"$5\"",
                        "sh",
                    ])
                    .arg(soft.to_string())
                    .arg(hard.to_string())
                    .arg(lbd_binary());
                command
            }
            (None, None) => Command::new(lbd_binary()),
        };
        let mut child = command
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[lbd] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child: Some(child),
            log,
            _dir: dir,
            config_path,
        }
    }

    /// Path of the config file, to rewrite before a reload.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Waits until `needle` has appeared in at least `count` log lines.
    pub fn wait_for_log(&mut self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|line| line.contains(needle))
                .count();
            if seen >= count {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "lbd exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "lbd did not log {needle:?} within 10 s:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// How many log lines so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .count()
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.as_ref().unwrap().id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for lbd to exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                // Let the log reader catch the last lines.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lbd did not exit within {limit:?}:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `lbd` with `args` to completion: (exit code, stdout, stderr).
pub fn run_lbd(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(lbd_binary()).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A TCP backend that sends its name and a newline on accept, then echoes what it receives.
/// It can be stopped (new connects are refused; connections in progress go on) and started
/// again on the same address.
pub struct TcpBackend {
    /// Its address.
    pub address: SocketAddr,
    pub name: String,
    accepting: Option<(Arc<AtomicBool>, thread::JoinHandle<()>)>,
}

impl TcpBackend {
    pub fn start(name: &str) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap())
    }

    /// Starts on `address` (port 0: any free port).
    pub fn start_at(name: &str, address: SocketAddr) -> Self {
        let listener = TcpListener::bind(address).unwrap_or_else(|e| panic!("bind {address}: {e}"));
        let mut backend = Self {
            address: listener.local_addr().unwrap(),
            name: name.to_owned(),
            accepting: None,
        };
        backend.serve(listener);
        backend
    }

    fn serve(&mut self, listener: TcpListener) {
        let greeting = format!("{}\n", self.name);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let accepting = thread::spawn(move || {
            let serve_one = |mut stream: TcpStream| {
                let greeting = greeting.clone();
                thread::spawn(move || {
                    if stream.write_all(greeting.as_bytes()).is_err() {
                        return;
                    }
                    let mut buffer = [0u8; 16 * 1024];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            };
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if stopped.load(Ordering::SeqCst) {
                    // Serve what the kernel had already accepted, so that stopping refuses new
                    // connects but resets none that completed their handshake.
                    serve_one(stream);
                    let _ = listener.set_nonblocking(true);
                    while let Ok((queued, _)) = listener.accept() {
                        let _ = queued.set_nonblocking(false);
                        serve_one(queued);
                    }
                    return;
                }
                serve_one(stream);
            }
        });
        self.accepting = Some((stop, accepting));
    }

    /// Closes the listening socket: new connects are refused.
    pub fn stop(&mut self) {
        if let Some((stop, accepting)) = self.accepting.take() {
            stop.store(true, Ordering::SeqCst);
            // Wake the blocked accept so that the thread sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
            accepting.join().unwrap();
        }
    }

    /// Listens again on the same address.
    pub fn restart(&mut self) {
        assert!(self.accepting.is_none(), "{} is running", self.name);
        let listener = TcpListener::bind(self.address).unwrap();
        self.serve(listener);
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP backend: answers every request with `status` and `body` (both changeable while it
/// runs; the body defaults to its name), then closes the connection.
pub struct HttpBackend {
    pub address: SocketAddr,
    reply: Arc<Mutex<(u16, String)>>,
}

impl HttpBackend {
    pub fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new((200, name.to_owned())));
        let current = Arc::clone(&reply);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let current = Arc::clone(&current);
                thread::spawn(move || {
                    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let (status, body) = current.lock().unwrap().clone();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes());
                });
            }
        });
        Self { address, reply }
    }

    /// Changes what it answers.
    pub fn set(&self, status: u16, body: &str) {
        *self.reply.lock().unwrap() = (status, body.to_owned());
    }
}

/// GETs `/` through `service` and returns the body.
pub fn http_get(service: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&service, Duration::from_secs(5)).expect("connect to lbd");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("response through lbd");
    let (_, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response through lbd: {response:?}"));
    body.to_owned()
}

/// An HAProxy agent: answers every connection with its current line.
pub struct Agent {
    reply: Arc<Mutex<String>>,
}

impl Agent {
    pub fn start(address: SocketAddr, reply: &str) -> Self {
        let listener = TcpListener::bind(address).unwrap_or_else(|e| panic!("bind agent {address}: {e}"));
        let reply = Arc::new(Mutex::new(reply.to_owned()));
        let current = Arc::clone(&reply);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let line = format!("{}\n", current.lock().unwrap());
                let _ = stream.write_all(line.as_bytes());
            }
        });
        Self { reply }
    }

    /// Changes the line it answers.
    pub fn set(&self, reply: &str) {
        *self.reply.lock().unwrap() = reply.to_owned();
    }
}

/// Connects to `service` and returns the greeting line of the backend reached, with the open
/// stream.
pub fn connect_and_greet(service: SocketAddr) -> (String, TcpStream) {
    let stream = TcpStream::connect_timeout(&service, Duration::from_secs(5)).expect("connect to lbd");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting from backend");
    assert!(line.ends_with('\n'), "no greeting through lbd (got {line:?})");
    (line.trim_end().to_owned(), stream)
}

/// Opens `n` connections one after another and counts which backend answered each.
pub fn distribution(service: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let (name, stream) = connect_and_greet(service);
        stream.shutdown(Shutdown::Both).ok();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// A UDP backend that answers each datagram with its name. It can be muted (it reads but
/// does not answer) and stopped (its socket closes, so datagrams draw ICMP port unreachable).
pub struct UdpBackend {
    pub address: SocketAddr,
    muted: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
}

impl UdpBackend {
    pub fn start(name: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let name = name.to_owned();
        let muted = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(AtomicBool::new(false));
        let (mute, stop) = (Arc::clone(&muted), Arc::clone(&stopped));
        thread::spawn(move || {
            let mut buffer = [0u8; 2048];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = socket.recv_from(&mut buffer)
                    && !mute.load(Ordering::SeqCst)
                {
                    let _ = socket.send_to(name.as_bytes(), peer);
                }
            }
        });
        Self {
            address,
            muted,
            stopped,
        }
    }

    /// Stops or resumes answering.
    pub fn mute(&self, muted: bool) {
        self.muted.store(muted, Ordering::SeqCst);
    }

    /// Closes the socket (within 20 ms).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for UdpBackend {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

/// Sends one datagram to `service` from a new socket (a new flow) and returns the reply.
pub fn udp_ask(service: SocketAddr) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    socket.send_to(b"hello", service).unwrap();
    let mut buffer = [0u8; 2048];
    let (n, _) = socket.recv_from(&mut buffer).ok()?;
    Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
}

/// A config with one service and the given reals (`address`, `weight`).
pub fn one_service(
    protocol: &str,
    listen: SocketAddr,
    scheduler: &str,
    reals: &[(SocketAddr, u32)],
    extra: &str,
) -> String {
    let reals: String = reals
        .iter()
        .map(|(address, weight)| format!("      - address: {address}\n        weight: {weight}\n"))
        .collect();
    format!(
        "workers: 2\ndrain_timeout: 10s\n{extra}services:\n  - name: svc\n    protocol: {protocol}\n    listen: {listen}\n    scheduler: {scheduler}\n    reals:\n{reals}"
    )
}

/// Writes `text` on `stream` and reads back as many bytes (from an echoing backend).
pub fn echo(stream: &mut TcpStream, text: &[u8]) -> String {
    stream.write_all(text).unwrap();
    let mut buffer = vec![0u8; text.len()];
    stream.read_exact(&mut buffer).unwrap();
    String::from_utf8(buffer).unwrap()
}

/// Raises this test process's own open-file limit to its hard limit (tests that hold many
/// sockets at once).
pub fn raise_own_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Fetches `path` from an HTTP endpoint with a plain request (no keep-alive): (status, body).
pub fn http_fetch(
    address: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    http_exchange(&address.to_string(), &request)
}

/// Sends `request` as it is and reads the answer to the end: (status, body); status 0 when
/// the answer is not HTTP.
pub fn http_exchange(address: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Says, past the test harness's capture (so it shows in a plain `cargo test` run), that the
/// current test was skipped and why. A skipped test passes; this line is how a reader knows.
pub fn skipped(why: &str) {
    let test = thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A turn for a test that loads the machine or measures timing (the HA and chaos tests):
/// such tests run one at a time, so that one's load does not skew another's timing.
pub fn heavy_turn() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One sample (`name{labels}`) of lbd's `/metrics` at `metrics`.
pub fn metric_sample(metrics: SocketAddr, series: &str) -> u64 {
    let (_, page) = http_fetch(metrics, "GET", "/metrics", b"").unwrap();
    let needle = format!("{series} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

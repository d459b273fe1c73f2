//! Load generator for `bench/run`: what wrk and iperf3 do not cover.
//!
//! - `udp-echo --listen ADDR`: a UDP backend that echoes every datagram.
//! - `udp-flood --target ADDR [--clients N] [--window W] [--size B] [--seconds S]`: N client
//!   sockets keep W datagrams each in flight and count replies; prints `pps=<replies per s>`.
//! - `idle --target ADDR --count N`: opens N TCP connections, prints `ready`, and holds them
//!   until its standard input closes.
//! - `latency --target ADDR --rate R [--connections C] [--seconds S]`: open-loop HTTP/1.1 GETs
//!   on C keep-alive connections at R requests/s in all; latency is measured from each request's
//!   scheduled time (no coordinated omission); prints `p50_us=… p99_us=… p999_us=… sent=… ok=…`.

use std::{
    io::{self, BufRead},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use std::io::{Read, Write};

use tokio::net::{TcpStream, UdpSocket};

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        return Err(usage());
    };
    let flag = |name: &str| -> Option<&str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    };
    let number =
        |name: &str, default: u64| -> u64 { flag(name).and_then(|v| v.parse().ok()).unwrap_or(default) };
    let address = |name: &str| -> io::Result<SocketAddr> {
        flag(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{name} IP:PORT is required")))
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match mode.as_str() {
        "udp-echo" => runtime.block_on(udp_echo(address("--listen")?)),
        "udp-flood" => runtime.block_on(udp_flood(
            address("--target")?,
            number("--clients", 32) as usize,
            number("--window", 8) as usize,
            number("--size", 64) as usize,
            Duration::from_secs(number("--seconds", 3)),
        )),
        "idle" => runtime.block_on(idle(address("--target")?, number("--count", 10_000) as usize)),
        "latency" => latency(
            address("--target")?,
            number("--rate", 1000),
            number("--connections", 16) as usize,
            Duration::from_secs(number("--seconds", 5)),
        ),
        _ => Err(usage()),
    }
}

fn usage() -> io::Error {
    io::Error::other("usage: loadgen udp-echo|udp-flood|idle|latency [--flags]; see bench/README.md")
}

async fn udp_echo(listen: SocketAddr) -> io::Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let (n, peer) = socket.recv_from(&mut buffer).await?;
        let _ = socket.try_send_to(&buffer[..n], peer);
    }
}

async fn udp_flood(
    target: SocketAddr,
    clients: usize,
    window: usize,
    size: usize,
    length: Duration,
) -> io::Result<()> {
    let replies = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + length;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let local = if target.ip().is_loopback() {
            "127.0.0.1:0"
        } else {
            "0.0.0.0:0"
        };
        let socket = UdpSocket::bind(local).await?;
        socket.connect(target).await?;
        let replies = Arc::clone(&replies);
        tasks.push(tokio::task::spawn(async move {
            let payload = vec![7u8; size];
            let mut buffer = vec![0u8; 65_536];
            for _ in 0..window {
                let _ = socket.send(&payload).await;
            }
            loop {
                // A lost datagram must not stall the window: resend after a short wait.
                let received = tokio::time::timeout(Duration::from_millis(50), socket.recv(&mut buffer));
                match tokio::time::timeout_at(deadline, received).await {
                    Err(_) => return,
                    Ok(Ok(Ok(_))) => {
                        replies.fetch_add(1, Relaxed);
                    }
                    Ok(_) => {}
                }
                let _ = socket.send(&payload).await;
            }
        }));
    }
    let started = Instant::now();
    for task in tasks {
        let _ = task.await;
    }
    let pps = replies.load(Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("pps={pps:.0}");
    Ok(())
}

async fn idle(target: SocketAddr, count: usize) -> io::Result<()> {
    let mut held = Vec::with_capacity(count);
    for i in 0..count {
        match TcpStream::connect(target).await {
            Ok(stream) => held.push(stream),
            Err(error) => return Err(io::Error::other(format!("connection {i}: {error}"))),
        }
    }
    println!("ready {}", held.len());
    // Hold until the caller closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while io::stdin()
            .lock()
            .read_line(&mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            line.clear();
        }
    })
    .await
    .map_err(io::Error::other)?;
    Ok(())
}

/// Open-loop latency. One OS thread per connection with blocking I/O: `thread::sleep` wakes
/// within tens of microseconds, where tokio's timer wheel has a 1 ms resolution that would
/// dominate the measurement.
fn latency(target: SocketAddr, rate: u64, connections: usize, length: Duration) -> io::Result<()> {
    let per_connection = Duration::from_secs_f64(connections as f64 / rate as f64);
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + length;
    let mut threads = Vec::new();
    for c in 0..connections {
        let mut stream = std::net::TcpStream::connect(target)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        // Spread the connections' schedules evenly over one interval.
        let offset = per_connection.mul_f64(c as f64 / connections as f64);
        threads.push(std::thread::spawn(move || {
            let mut samples = Vec::new();
            let request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n";
            let mut buffer = vec![0u8; 16 * 1024];
            let mut scheduled = start + offset;
            let mut errors = 0u64;
            while scheduled < end {
                if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if stream.write_all(request).is_err() || read_response(&mut stream, &mut buffer).is_err() {
                    errors += 1;
                    break;
                }
                // From the scheduled time, so a slow answer also delays the next ones' numbers.
                samples.push(scheduled.elapsed().as_micros() as u64);
                scheduled += per_connection;
            }
            (samples, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for thread in threads {
        let (samples, failed) = thread
            .join()
            .map_err(|_| io::Error::other("a latency thread panicked"))?;
        all.extend(samples);
        errors += failed;
    }
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "p50_us={} p99_us={} p999_us={} sent={} ok={} errors={errors}",
        at(0.50),
        at(0.99),
        at(0.999),
        rate * length.as_secs(),
        all.len()
    );
    Ok(())
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(stream: &mut std::net::TcpStream, buffer: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buffer[filled..])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        let data = &buffer[..filled];
        if let Some(head_end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if filled >= head_end + 4 + length {
                return Ok(());
            }
        }
        if filled == buffer.len() {
            return Err(io::Error::other("response larger than the buffer"));
        }
    }
}

//! `lbd demo`: three HTTP backends on loopback, each answering with its own name, behind a
//! `wrr` service with HTTP health checks, so a newcomer sees the director balance without
//! writing a config.

use std::io::Write as _;
use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::{ConfigSource, StartError};

/// Backend weights of the demo service.
const WEIGHTS: [u32; 3] = [3, 2, 1];

/// Runs the demo until Ctrl-C, with the service on `listen`, the admin API on `admin` and
/// `/metrics` on `metrics`.
pub async fn run(listen: SocketAddr, admin: SocketAddr, metrics: SocketAddr) -> Result<(), StartError> {
    let mut backends = Vec::new();
    for (i, weight) in WEIGHTS.iter().enumerate() {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(StartError::Demo)?;
        let address = listener.local_addr().map_err(StartError::Demo)?;
        let name = format!("backend-{}", i + 1);
        tokio::spawn(serve_http(listener, name.clone()));
        backends.push((name, address, *weight));
    }
    let reals: String = backends
        .iter()
        .map(|(_, address, weight)| format!("      - address: {address}\n        weight: {weight}\n"))
        .collect();
    let text = format!(
        "admin: {{ listen: '{admin}' }}\nmetrics: {{ listen: '{metrics}' }}\nworkers: 1\ndrain_timeout: 2s\nservices:\n  - name: demo-web\n    protocol: tcp\n    listen: {listen}\n    scheduler: wrr\n    health_check: {{ type: http, path: /, expect_body: hello, interval: 2s }}\n    reals:\n{reals}"
    );
    let config = ConfigSource::Text {
        origin: "<demo>".to_owned(),
        text: text.clone(),
    };
    let parsed = config.load()?;
    // The demo still runs if nobody reads its help text (`lbd demo | head -1`).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "ulvs demo: a wrr service on {listen} in front of three HTTP backends on loopback\n"
    );
    for (name, address, weight) in &backends {
        let _ = writeln!(out, "  {name}  {address}  weight {weight}");
    }
    let _ = writeln!(
        out,
        "\nTry, in another terminal:\n\
         \x20 for i in $(seq 12); do curl -s http://{listen}/; done   # 6 : 4 : 2 across the backends\n\
         \x20 curl -s http://{listen}/ -H 'Connection: close'\n\
         \x20 lbadm --admin {admin} list -n                      # the table, as ipvsadm -L -n\n\
         \x20 lbadm --admin {admin} list --health               # health check verdicts\n\
         \x20 lbadm --admin {admin} drain-real -t {listen} -r {first}   # no new flows to backend-1\n\
         \x20 lbadm --admin {admin} reload   # reload (the demo's config is built in)\n\
         \x20 kill -TERM {pid}    # drain and exit (as Ctrl-C)\n\
         \nThe config it runs (pass your own with `lbd --config FILE`):\n\n{text}\n\
         \x20 curl -s http://{metrics}/metrics                # Prometheus metrics\n\
         Press Ctrl-C to stop.",
        pid = std::process::id(),
        first = backends[0].1,
    );
    drop(out);
    super::serve(config, parsed).await
}

/// A minimal HTTP/1.1 server that answers every request with its name (keep-alive aware).
pub async fn serve_http(listener: TcpListener, name: String) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(answer(stream, name.clone()));
    }
}

async fn answer(mut stream: TcpStream, name: String) -> io::Result<()> {
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&chunk[..n]);
        while let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            request.drain(..end + 4);
            let close = head.contains("connection: close");
            let body = format!("hello from {name}\n");
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{body}",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            stream.write_all(response.as_bytes()).await?;
            if close {
                return Ok(());
            }
        }
        if request.len() > 64 * 1024 {
            return Ok(());
        }
    }
}

//! The per-flow access log (`access_log:`): one line per finished proxied flow, in JSON or
//! logfmt, to a file or standard error. The data plane only hands a small fixed-size record
//! to a bounded queue (`try_send`: it never waits, and never wakes anyone); a thread of its
//! own takes the queue's records ten times a second, names the service, formats the lines and
//! writes them, buffered. When the queue is full the record is dropped and
//! counted (`lbd_access_log_dropped_total`), so a slow disk never slows the flows.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError},
    },
    time::{Duration, SystemTime},
};

use serde::Serialize;

use crate::{
    config::{AccessLogConfig, AccessLogFormat, AccessLogTarget, Protocol, ServiceKey},
    table::TableHandle,
};

/// Records queued for the writer at most.
const QUEUE: usize = 65_536;
/// How often the writer takes the queued records, writes them and flushes: lines appear
/// within this long of their flow's end.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// How a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowEnd {
    /// Both sides closed cleanly (a UDP session: its idle timeout or its replies).
    Closed,
    /// A side reset, or failed.
    Reset,
    /// No traffic for the idle timeout.
    Timeout,
    /// Killed (`lbadm kill-flows`, `on_down: shutdown`).
    Killed,
    /// Refused before it reached a real; the reason is `lbd_service_refused_total`'s label,
    /// or `unavailable` (no real could take it).
    Refused(&'static str),
}

impl FlowEnd {
    fn name(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Killed => "killed",
            Self::Refused(_) => "refused",
        }
    }

    fn reason(self) -> Option<&'static str> {
        match self {
            Self::Refused(reason) => Some(reason),
            _ => None,
        }
    }
}

/// One finished flow, as the data plane hands it over.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowRecord {
    /// The service.
    pub(crate) service: ServiceKey,
    /// The client (as scheduled: a PROXY header's, an IPv4 client of a dual-stack socket as
    /// IPv4).
    pub(crate) client: SocketAddr,
    /// The real it went to, if it got one.
    pub(crate) real: Option<SocketAddr>,
    /// Bytes from the client to the real.
    pub(crate) bytes_in: u64,
    /// Bytes from the real to the client.
    pub(crate) bytes_out: u64,
    /// How long it lasted.
    pub(crate) duration: Duration,
    /// How it ended.
    pub(crate) end: FlowEnd,
}

/// The data plane's end of the log: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub(crate) struct AccessLog(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    enabled: AtomicBool,
    queue: SyncSender<Message>,
    dropped: AtomicU64,
    written: AtomicU64,
}

enum Message {
    Flow(FlowRecord, SystemTime),
    /// New settings (or the same again: the file is reopened, for logrotate).
    Configure(Option<AccessLogConfig>),
}

impl AccessLog {
    /// Starts the writer thread (idle until configured). It names services from `table`.
    pub(crate) fn start(table: Arc<TableHandle>) -> io::Result<Self> {
        let (queue, receiver) = mpsc::sync_channel(QUEUE);
        let shared = Arc::new(Shared {
            enabled: AtomicBool::new(false),
            queue,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        let writer_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("lbd-access-log".to_owned())
            .spawn(move || write_loop(&receiver, &table, &writer_shared))?;
        Ok(Self(shared))
    }

    /// Applies `config` (none: stop logging); the file is (re)opened.
    pub(crate) fn configure(&self, config: Option<&AccessLogConfig>) {
        self.0.enabled.store(config.is_some(), Relaxed);
        // Waits for room: control-plane side, and the writer drains the queue continuously.
        let _ = self.0.queue.send(Message::Configure(config.cloned()));
    }

    /// Whether flows are logged now (the data plane skips building records otherwise).
    pub(crate) fn enabled(&self) -> bool {
        self.0.enabled.load(Relaxed)
    }

    /// Hands over a finished flow; dropped (and counted) when the queue is full.
    pub(crate) fn record(&self, record: FlowRecord) {
        if !self.enabled() {
            return;
        }
        match self.0.queue.try_send(Message::Flow(record, SystemTime::now())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.0.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Records dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.0.dropped.load(Relaxed)
    }

    /// Lines written so far.
    pub(crate) fn written(&self) -> u64 {
        self.0.written.load(Relaxed)
    }
}

/// The writer thread: every `FLUSH_EVERY` it takes what the queue holds, formats and writes
/// it, and flushes. It never waits on the queue itself, so handing over a record never has
/// to wake it (a wake-up per flow would cost the data plane a syscall and a context switch).
fn write_loop(receiver: &Receiver<Message>, table: &TableHandle, shared: &Shared) {
    let mut out: Option<(Box<dyn Write + Send>, AccessLogFormat)> = None;
    let mut line = Vec::with_capacity(512);
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let mut wrote = false;
        loop {
            let message = match receiver.try_recv() {
                Ok(message) => message,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            };
            match message {
                Message::Configure(config) => {
                    if let Some((mut writer, _)) = out.take() {
                        let _ = writer.flush();
                    }
                    out = config.and_then(|config| match open(&config.target) {
                        Ok(writer) => Some((writer, config.format)),
                        Err(error) => {
                            tracing::error!(%error, "cannot open the access log; flows are not logged");
                            None
                        }
                    });
                }
                Message::Flow(record, ended) => {
                    let Some((writer, format)) = out.as_mut() else {
                        continue;
                    };
                    let table = table.load();
                    let name = table
                        .service(&record.service)
                        .map_or("", |service| service.name());
                    line.clear();
                    format_line(&mut line, *format, &record, name, ended);
                    if writer.write_all(&line).is_ok() {
                        shared.written.fetch_add(1, Relaxed);
                        wrote = true;
                    }
                }
            }
        }
        if wrote && let Some((writer, _)) = out.as_mut() {
            let _ = writer.flush();
        }
    }
}

fn open(target: &AccessLogTarget) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Stderr => Box::new(BufWriter::new(io::stderr())),
        AccessLogTarget::File(path) => Box::new(BufWriter::with_capacity(
            64 * 1024,
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
    })
}

/// One line (with its newline) for `record` of the service named `service`, ended at `ended`.
fn format_line(
    out: &mut Vec<u8>,
    format: AccessLogFormat,
    record: &FlowRecord,
    service: &str,
    ended: SystemTime,
) {
    let time = humantime::format_rfc3339_millis(ended).to_string();
    let duration_ms = u64::try_from(record.duration.as_millis()).unwrap_or(u64::MAX);
    match format {
        AccessLogFormat::Json => {
            #[derive(Serialize)]
            struct Line<'a> {
                time: &'a str,
                service: &'a str,
                protocol: &'static str,
                client: SocketAddr,
                vip: SocketAddr,
                #[serde(skip_serializing_if = "Option::is_none")]
                real: Option<SocketAddr>,
                bytes_in: u64,
                bytes_out: u64,
                duration_ms: u64,
                end: &'static str,
                #[serde(skip_serializing_if = "Option::is_none")]
                reason: Option<&'static str>,
            }
            let line = Line {
                time: &time,
                service,
                protocol: protocol_name(record.service.protocol),
                client: record.client,
                vip: record.service.listen,
                real: record.real,
                bytes_in: record.bytes_in,
                bytes_out: record.bytes_out,
                duration_ms,
                end: record.end.name(),
                reason: record.end.reason(),
            };
            let _ = serde_json::to_writer(&mut *out, &line);
        }
        AccessLogFormat::Logfmt => {
            // Service names hold no quotes, spaces need them.
            let quoted = if service.contains(' ') {
                format!("\"{service}\"")
            } else {
                service.to_owned()
            };
            let _ = write!(
                out,
                "time={time} service={quoted} protocol={} client={} vip={}",
                protocol_name(record.service.protocol),
                record.client,
                record.service.listen
            );
            if let Some(real) = record.real {
                let _ = write!(out, " real={real}");
            }
            let _ = write!(
                out,
                " bytes_in={} bytes_out={} duration_ms={duration_ms} end={}",
                record.bytes_in,
                record.bytes_out,
                record.end.name()
            );
            if let Some(reason) = record.end.reason() {
                let _ = write!(out, " reason={reason}");
            }
        }
    }
    out.push(b'\n');
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(end: FlowEnd) -> FlowRecord {
        FlowRecord {
            service: ServiceKey {
                protocol: Protocol::Tcp,
                listen: "192.0.2.1:80".parse().unwrap(),
            },
            client: "198.51.100.7:40000".parse().unwrap(),
            real: (end == FlowEnd::Closed).then(|| "10.0.0.1:8080".parse().unwrap()),
            bytes_in: 120,
            bytes_out: 4_096,
            duration: Duration::from_millis(1_500),
            end,
        }
    }

    fn line(format: AccessLogFormat, end: FlowEnd, service: &str) -> String {
        let mut out = Vec::new();
        let ended = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_720_000_123);
        format_line(&mut out, format, &record(end), service, ended);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_carry_every_field() {
        let text = line(AccessLogFormat::Json, FlowEnd::Closed, "web");
        assert!(text.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["time"], "2025-12-03T00:00:00.123Z");
        assert_eq!(value["service"], "web");
        assert_eq!(value["client"], "198.51.100.7:40000");
        assert_eq!(value["vip"], "192.0.2.1:80");
        assert_eq!(value["real"], "10.0.0.1:8080");
        assert_eq!(
            (value["bytes_in"].as_u64(), value["bytes_out"].as_u64()),
            (Some(120), Some(4096))
        );
        assert_eq!(value["duration_ms"], 1500);
        assert_eq!(value["end"], "closed");
        assert!(value.get("reason").is_none());
        let refused: serde_json::Value =
            serde_json::from_str(&line(AccessLogFormat::Json, FlowEnd::Refused("denied"), "web")).unwrap();
        assert_eq!(
            (refused["end"].as_str(), refused["reason"].as_str()),
            (Some("refused"), Some("denied"))
        );
        assert!(refused.get("real").is_none());
    }

    #[test]
    fn logfmt_lines_are_key_value_pairs() {
        assert_eq!(
            line(AccessLogFormat::Logfmt, FlowEnd::Closed, "web"),
            "time=2025-12-03T00:00:00.123Z service=web protocol=tcp client=198.51.100.7:40000 \
             vip=192.0.2.1:80 real=10.0.0.1:8080 bytes_in=120 bytes_out=4096 duration_ms=1500 end=closed\n"
        );
        let text = line(AccessLogFormat::Logfmt, FlowEnd::Refused("source_rate"), "my web");
        assert!(
            text.contains("service=\"my web\"") && text.ends_with("end=refused reason=source_rate\n"),
            "{text}"
        );
    }
}

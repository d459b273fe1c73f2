//! Directors sharing their table through etcd, in network namespaces built from scratch: a
//! switch, a three-member etcd cluster (Debian's etcd), three directors running the real
//! `lbd`, a real server (which also runs `lbd register`) and a client. Needs root and etcd;
//! without them the tests say why they skip. Every process is killed and every namespace
//! deleted at the end, pass or fail.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
    sync::{
        Arc, Barrier,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::{
    lvs::{Running, in_netns, ip, root, start_servers},
    netns::{delete_namespaces, lbadm_in, run_in, spawn_logged, wait_or_show},
    support::*,
};

const VIP: &str = "10.66.0.100";
const DIRECTORS: [&str; 3] = ["d1", "d2", "d3"];
const MEMBERS: [&str; 3] = ["e1", "e2", "e3"];
const PREFIX: &str = "/ulvs/test";
const REAL: &str = "10.66.0.31";

fn lbadm_binary() -> &'static str {
    env!("CARGO_BIN_EXE_lbadm")
}

/// The namespaces and processes of one test; killed and deleted when dropped.
struct Farm {
    tag: String,
    dir: tempfile::TempDir,
    /// etcd members, by index in [`MEMBERS`].
    etcd: Vec<Option<Running>>,
    /// lbd of each director, by index in [`DIRECTORS`].
    lbd: Vec<Option<Running>>,
    /// `lbd register` processes.
    registrants: Vec<Option<Running>>,
}

impl Farm {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    /// etcd's client URLs, comma-separated.
    fn endpoints(&self) -> String {
        (0..MEMBERS.len())
            .map(|n| format!("http://10.66.0.{}:2379", 5 + n))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.registrants.clear();
        self.lbd.clear();
        self.etcd.clear();
        let names: Vec<String> = ["cl", "et", "d1", "d2", "d3", "r1", "sw"]
            .iter()
            .map(|name| self.ns(name))
            .collect();
        delete_namespaces(&names, &[]);
    }
}

/// Root and etcd (without them the test says why it skips), and the test's turn.
fn prerequisites() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !root() {
        return None;
    }
    if Command::new("etcd").arg("--version").output().is_err() {
        skipped("the cluster tests need etcd (apt-get install etcd-server)");
        return None;
    }
    Some(heavy_turn())
}

/// client 10.66.0.2 — switch — etcd 10.66.0.5-7, directors 10.66.0.21-23 (the VIP on each
/// one's `lo`), the real 10.66.0.31; the client reaches the VIP through d1.
fn farm() -> Farm {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let farm = Farm {
        tag: format!("c{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst)),
        dir: tempfile::tempdir().unwrap(),
        etcd: Vec::new(),
        lbd: Vec::new(),
        registrants: Vec::new(),
    };
    for name in ["sw", "cl", "et", "d1", "d2", "d3", "r1"] {
        ip(&format!("netns add {}", farm.ns(name)));
        ip(&format!("-n {} link set lo up", farm.ns(name)));
    }
    let sw = farm.ns("sw");
    ip(&format!(
        "-n {sw} link add br0 type bridge stp_state 0 forward_delay 0"
    ));
    ip(&format!("-n {sw} link set br0 up"));
    let mut addresses = vec![("cl", "10.66.0.2"), ("r1", REAL)];
    addresses.extend([("d1", "10.66.0.21"), ("d2", "10.66.0.22"), ("d3", "10.66.0.23")]);
    for (name, address) in &addresses {
        attach(&farm, name, address);
    }
    attach(&farm, "et", "10.66.0.5");
    for extra in ["10.66.0.6", "10.66.0.7"] {
        ip(&format!("-n {} addr add {extra}/24 dev eth0", farm.ns("et")));
    }
    for director in DIRECTORS {
        ip(&format!("-n {} addr add {VIP}/32 dev lo", farm.ns(director)));
    }
    ip(&format!("-n {} route add {VIP}/32 via 10.66.0.21", farm.ns("cl")));
    farm
}

fn attach(farm: &Farm, name: &str, address: &str) {
    let (sw, ns) = (farm.ns("sw"), farm.ns(name));
    let port = format!("p{name}");
    ip(&format!(
        "-n {sw} link add {port} type veth peer name eth0 netns {ns}"
    ));
    ip(&format!("-n {sw} link set {port} master br0 up"));
    ip(&format!("-n {ns} link set eth0 up"));
    ip(&format!("-n {ns} addr add {address}/24 dev eth0"));
}

fn spawn_in(farm: &Farm, namespace: &str, log: &str, command: &[&str]) -> Running {
    spawn_logged(&farm.ns(namespace), &farm.dir.path().join(log), command)
}

/// Starts etcd member `n` (a new cluster the first time, its data kept after that).
fn start_member(farm: &mut Farm, n: usize) {
    let name = MEMBERS[n];
    let me = format!("10.66.0.{}", 5 + n);
    let cluster: Vec<String> = MEMBERS
        .iter()
        .enumerate()
        .map(|(i, member)| format!("{member}=http://10.66.0.{}:2380", 5 + i))
        .collect();
    let data = farm.dir.path().join(format!("etcd-{name}"));
    let member = spawn_in(
        farm,
        "et",
        &format!("etcd-{name}.log"),
        &[
            "etcd",
            "--name",
            name,
            "--data-dir",
            data.to_str().unwrap(),
            "--listen-client-urls",
            &format!("http://{me}:2379"),
            "--advertise-client-urls",
            &format!("http://{me}:2379"),
            "--listen-peer-urls",
            &format!("http://{me}:2380"),
            "--initial-advertise-peer-urls",
            &format!("http://{me}:2380"),
            "--initial-cluster",
            &cluster.join(","),
            "--initial-cluster-token",
            &farm.tag,
        ],
    );
    if farm.etcd.len() <= n {
        farm.etcd.resize_with(n + 1, || None);
    }
    farm.etcd[n] = Some(member);
}

fn start_etcd(farm: &mut Farm) {
    for n in 0..MEMBERS.len() {
        start_member(farm, n);
    }
    wait_for("etcd has a leader", farm, Duration::from_secs(20), || {
        etcdctl(farm, &["endpoint", "health"]).0 == 0
    });
}

fn kill_member(farm: &mut Farm, n: usize) {
    farm.etcd[n] = None;
}

fn director_config(farm: &Farm, director: &str) -> String {
    format!(
        "admin: {{ listen: '0.0.0.0:9900', token_file: {dir}/token }}\nworkers: 1\ndrain_timeout: 1s\nstate_file: {dir}/state-{director}.yaml\n\
         cluster: {{ etcd: [{endpoints}], prefix: {PREFIX}, node: {director}, ttl: 3s }}\n",
        dir = farm.dir.path().display(),
        endpoints = farm
            .endpoints()
            .split(',')
            .map(|url| format!("'{url}'"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn start_director(farm: &mut Farm, n: usize) {
    let director = DIRECTORS[n];
    std::fs::write(farm.dir.path().join("token"), "cluster-test-token\n").unwrap();
    let config = farm.dir.path().join(format!("{director}.yaml"));
    std::fs::write(&config, director_config(farm, director)).unwrap();
    let lbd = spawn_in(
        farm,
        director,
        &format!("lbd-{director}.log"),
        &[lbd_binary(), "-c", config.to_str().unwrap()],
    );
    if farm.lbd.len() <= n {
        farm.lbd.resize_with(n + 1, || None);
    }
    farm.lbd[n] = Some(lbd);
    wait_for(
        &format!("lbd answers in {director}"),
        farm,
        Duration::from_secs(10),
        || lbadm(farm, director, &["status"]).0 == 0,
    );
}

fn start_directors(farm: &mut Farm) {
    for n in 0..DIRECTORS.len() {
        start_director(farm, n);
    }
    on_every_director(farm, "reaches etcd", Duration::from_secs(15), |director| {
        status(farm, director).is_some_and(|status| status["cluster"]["connected"] == true)
    });
}

/// Runs lbadm in `director`'s namespace: exit code, stdout, stderr.
fn lbadm(farm: &Farm, director: &str, args: &[&str]) -> (i32, String, String) {
    let token = farm.dir.path().join("token").display().to_string();
    let mut with_token = vec!["--token-file", token.as_str()];
    with_token.extend_from_slice(args);
    lbadm_in(&farm.ns(director), &with_token)
}

/// `etcdctl ARGS` against the farm's etcd, from its namespace.
fn etcdctl(farm: &Farm, args: &[&str]) -> (i32, String, String) {
    let endpoints = farm.endpoints();
    let mut command = vec![
        "env",
        "ETCDCTL_API=3",
        "etcdctl",
        "--endpoints",
        endpoints.as_str(),
    ];
    command.extend_from_slice(args);
    run_in(&farm.ns("et"), &command)
}

/// `lbadm edit-real` of the real of service `web` to `weight`, on `director`.
fn set_weight(farm: &Farm, director: &str, weight: &str) -> (i32, String, String) {
    lbadm(
        farm,
        director,
        &[
            "edit-real",
            "--service",
            "web",
            "-r",
            &format!("{REAL}:8080"),
            "-w",
            weight,
        ],
    )
}

fn status(farm: &Farm, director: &str) -> Option<serde_json::Value> {
    let (code, out, _) = lbadm(farm, director, &["status", "--json"]);
    (code == 0).then(|| serde_json::from_str(&out).ok()).flatten()
}

/// The reals of service `web` on `director` (address, weight, registered), or none while it
/// has no such service.
fn reals(farm: &Farm, director: &str) -> Option<Vec<(String, u64, bool)>> {
    let (code, out, _) = lbadm(farm, director, &["list", "--service", "web", "--json"]);
    let service: serde_json::Value = (code == 0).then(|| serde_json::from_str(&out).ok()).flatten()?;
    Some(
        service["reals"]
            .as_array()?
            .iter()
            .map(|real| {
                (
                    real["address"].as_str().unwrap_or_default().to_owned(),
                    real["configured_weight"].as_u64().unwrap_or_default(),
                    real["registered"].as_bool().unwrap_or_default(),
                )
            })
            .collect(),
    )
}

fn scheduler(farm: &Farm, director: &str) -> Option<String> {
    let (code, out, _) = lbadm(farm, director, &["list", "--service", "web", "--json"]);
    let service: serde_json::Value = (code == 0).then(|| serde_json::from_str(&out).ok()).flatten()?;
    service["scheduler"].as_str().map(str::to_owned)
}

fn wait_for(what: &str, farm: &Farm, limit: Duration, done: impl FnMut() -> bool) {
    let logs = ["lbd-d1.log", "lbd-d2.log", "lbd-d3.log", "etcd-e1.log"];
    wait_or_show(what, limit, farm.dir.path(), &logs, done);
}

/// Waits until `holds` for each director in turn (`what` names it in the failure).
fn on_every_director(farm: &Farm, what: &str, limit: Duration, mut holds: impl FnMut(&str) -> bool) {
    for director in DIRECTORS {
        wait_for(&format!("{director}: {what}"), farm, limit, || holds(director));
    }
}

/// The test's turn and a farm with etcd and the directors running and the table loaded;
/// `None` when the test skips.
fn running_farm() -> Option<(std::sync::MutexGuard<'static, ()>, Farm)> {
    let turn = prerequisites()?;
    let mut farm = farm();
    start_etcd(&mut farm);
    start_directors(&mut farm);
    load_table(&farm);
    Some((turn, farm))
}

/// Loads the table through d1: service `web` (proxy, rr) with the real's echo server.
fn load_table(farm: &Farm) {
    let table = farm.dir.path().join("table.yaml");
    std::fs::write(
        &table,
        format!(
            "services:\n  - {{ name: web, protocol: tcp, listen: '{VIP}:80', scheduler: rr, reals: [{{ address: '{REAL}:8080' }}] }}\n"
        ),
    )
    .unwrap();
    let (code, _, err) = lbadm(farm, "d1", &["restore", table.to_str().unwrap()]);
    assert_eq!(code, 0, "restore: {err}");
    on_every_director(farm, "has the table", Duration::from_secs(5), |director| {
        reals(farm, director).is_some_and(|reals| reals.len() == 1)
    });
}

/// When each director applied each table revision, from its log.
fn applied_at(farm: &Farm, director: &str) -> Vec<(i64, SystemTime)> {
    let text =
        std::fs::read_to_string(farm.dir.path().join(format!("lbd-{director}.log"))).unwrap_or_default();
    text.lines()
        .filter(|line| line.contains("the cluster's table applied"))
        .filter_map(|line| {
            let time = parse_rfc3339(line.split_whitespace().next()?)?;
            let revision = line
                .split("revision=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((revision, time))
        })
        .collect()
}

/// `2026-12-03T14:49:23.591958Z` (tracing's UTC timestamps) as a time.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    let nanos: u32 = format!("{fraction:0<9}")[..9].parse().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::new(u64::try_from(seconds).ok()?, nanos))
}

/// The `p`-th percentile of `values` (sorted here).
fn percentile(values: &mut [Duration], p: f64) -> Duration {
    values.sort();
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

#[test]
fn a_change_on_one_director_reaches_every_director_and_conflicting_changes_are_refused() {
    let Some((_turn, mut farm)) = running_farm() else {
        return;
    };
    let (code, out, _) = lbadm(&farm, "d2", &["directors"]);
    assert_eq!(code, 0);
    for director in DIRECTORS {
        assert!(out.contains(director), "{out}");
    }
    // `lbd --check` reads and checks the stored table.
    let check = Command::new("ip")
        .args(["netns", "exec", &farm.ns("d1"), lbd_binary(), "--check", "-c"])
        .arg(farm.dir.path().join("d1.yaml"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && printed.contains(&format!("1 service, 1 real in etcd under {PREFIX}")),
        "{printed}{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // A service written by hand that fails the config file's rules refuses the whole stored
    // table: every director keeps its own and says why; so does `lbd --check`.
    let etcdctl = |args: &[&str]| {
        let (code, _, err) = etcdctl(&farm, args);
        assert_eq!(code, 0, "etcdctl {args:?}: {err}");
    };
    let bad = format!("{PREFIX}/services/bad");
    etcdctl(&[
        "put",
        &bad,
        &format!("{{name: bad, protocol: tcp, listen: '{VIP}:80'}}"),
    ]);
    for director in DIRECTORS {
        wait_for(
            &format!("{director} refuses the stored table"),
            &farm,
            Duration::from_secs(5),
            || {
                status(&farm, director).is_some_and(|status| {
                    status["cluster"]["refused"]
                        .as_str()
                        .is_some_and(|why| why.contains("duplicate service"))
                })
            },
        );
        assert_eq!(
            reals(&farm, director).map(|reals| reals.len()),
            Some(1),
            "{director} kept its table"
        );
    }
    let check = Command::new("ip")
        .args(["netns", "exec", &farm.ns("d1"), lbd_binary(), "--check", "-c"])
        .arg(farm.dir.path().join("d1.yaml"))
        .output()
        .unwrap();
    let complaint = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{complaint}");
    assert!(complaint.contains("duplicate service"), "{complaint}");
    let (code, _, err) = lbadm(&farm, "d1", &["edit-service", "--service", "web", "-s", "wlc"]);
    assert!(code != 0 && err.contains("stored table is refused"), "{err}");
    etcdctl(&["del", &bad]);
    on_every_director(
        &farm,
        "takes the table again",
        Duration::from_secs(5),
        |director| status(&farm, director).is_some_and(|status| status["cluster"]["refused"].is_null()),
    );

    // 100 changes, made on each director in turn: when is each applied everywhere?
    let mut started = Vec::new();
    for n in 0..100 {
        let weight = (2 + n).to_string();
        let origin = DIRECTORS[n % 3];
        started.push(SystemTime::now());
        let (code, _, err) = set_weight(&farm, origin, &weight);
        assert_eq!(code, 0, "change {n} on {origin}: {err}");
    }
    on_every_director(&farm, "has the last change", Duration::from_secs(5), |director| {
        reals(&farm, director).is_some_and(|reals| reals[0].1 == 101)
    });
    let logs: Vec<Vec<(i64, SystemTime)>> = DIRECTORS
        .iter()
        .map(|director| applied_at(&farm, director))
        .collect();
    let last: Vec<i64> = logs[0]
        .iter()
        .rev()
        .take(100)
        .map(|(revision, _)| *revision)
        .rev()
        .collect();
    assert_eq!(last.len(), 100, "d1 applied every change");
    let mut delays: Vec<Duration> = last
        .iter()
        .zip(&started)
        .map(|(revision, started)| {
            logs.iter()
                .map(|log| {
                    let (_, at) = log
                        .iter()
                        .find(|(applied, _)| applied == revision)
                        .unwrap_or_else(|| panic!("revision {revision} applied on every director"));
                    at.duration_since(*started).unwrap_or_default()
                })
                .max()
                .unwrap()
        })
        .collect();
    let (p50, p99, max) = (
        percentile(&mut delays, 0.5),
        percentile(&mut delays, 0.99),
        *delays.iter().max().unwrap(),
    );
    println!(
        "cluster: 100 changes, from lbadm's start to applied on all three directors: p50 {p50:?}, p99 {p99:?}, max {max:?}"
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // Two directors change the same service at once: one wins, the other is refused (or, if
    // it already saw the first, goes after it); every director ends with the same table.
    let mut conflicts = 0;
    for round in 0..30 {
        let barrier = Arc::new(Barrier::new(2));
        let attempts: Vec<_> = [("d2", "wlc"), ("d3", "lc")]
            .into_iter()
            .map(|(director, scheduler)| {
                let (barrier, ns) = (Arc::clone(&barrier), farm.ns(director));
                let token = farm.dir.path().join("token").display().to_string();
                thread::spawn(move || {
                    barrier.wait();
                    let output = Command::new("ip")
                        .args(["netns", "exec", &ns, lbadm_binary(), "--admin", "127.0.0.1:9900"])
                        .args(["--token-file", &token])
                        .args(["edit-service", "--service", "web", "-s", scheduler])
                        .output()
                        .unwrap();
                    (
                        scheduler,
                        output.status.code(),
                        String::from_utf8_lossy(&output.stderr).into_owned(),
                    )
                })
            })
            .collect();
        let outcomes: Vec<_> = attempts
            .into_iter()
            .map(|attempt| attempt.join().unwrap())
            .collect();
        let refused: Vec<_> = outcomes.iter().filter(|(_, code, _)| *code != Some(0)).collect();
        assert!(refused.len() <= 1, "round {round}: both refused: {outcomes:?}");
        if let Some((_, _, message)) = refused.first() {
            assert!(
                message.contains("another change came first"),
                "round {round}: {message}"
            );
            conflicts += 1;
        }
        let winner = outcomes.iter().find(|(_, code, _)| *code == Some(0)).unwrap().0;
        wait_for(
            &format!("round {round}: every director has the same scheduler"),
            &farm,
            Duration::from_secs(5),
            || {
                let seen: Vec<Option<String>> = DIRECTORS
                    .iter()
                    .map(|director| scheduler(&farm, director))
                    .collect();
                seen.iter().all(|one| one == &seen[0])
                    && (refused.is_empty() || seen[0].as_deref() == Some(winner))
            },
        );
        // Back to rr for the next round.
        assert_eq!(
            lbadm(&farm, "d1", &["edit-service", "--service", "web", "-s", "rr"]).0,
            0
        );
        on_every_director(&farm, "rr again", Duration::from_secs(5), |director| {
            scheduler(&farm, director).as_deref() == Some("rr")
        });
        if conflicts >= 3 {
            break;
        }
    }
    println!("cluster: concurrent changes to one service: {conflicts} refused as conflicts");
    assert!(conflicts > 0, "no round raced (30 rounds)");

    // One lbadm, every director: identical answers once (clush -b), a director that does not
    // answer on its own, and the exit status says so.
    let every = |farm: &Farm| {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &farm.ns("cl"),
                lbadm_binary(),
                "-w",
                "10.66.0.[21-23]:9900",
            ])
            .arg("--token-file")
            .arg(farm.dir.path().join("token"))
            .args(["list", "-n"])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (code, text) = every(&farm);
    assert_eq!(code, Some(0), "{text}");
    let title = "10.66.0.[21-23]:9900 (3)";
    let rule = "-".repeat(title.len());
    assert!(text.starts_with(&format!("{rule}\n{title}\n{rule}\n")), "{text}");
    assert_eq!(text.matches("10.66.0.31:8080").count(), 1, "{text}");
    farm.lbd[2] = None;
    let (code, text) = every(&farm);
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("10.66.0.[21-22]:9900 (2)") && text.contains("10.66.0.23:9900 (1)"),
        "{text}"
    );
    assert!(
        text.contains("cannot reach the director at 10.66.0.23:9900"),
        "{text}"
    );
}

/// New TCP connections through the VIP (via d1) every 20 ms until `stop`: (answered, failed).
fn client_traffic(farm: &Farm, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, Vec<String>)> {
    in_netns(&farm.ns("cl"), move || {
        thread::spawn(move || {
            let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let outcome =
                    TcpStream::connect_timeout(&vip, Duration::from_secs(2)).and_then(|mut stream| {
                        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                        let mut greeting = String::new();
                        BufReader::new(stream.try_clone()?).read_line(&mut greeting)?;
                        stream.write_all(b"x")?;
                        Ok(greeting)
                    });
                match outcome {
                    Ok(greeting) if greeting.starts_with("real1") => answered += 1,
                    Ok(other) => failed.push(format!("answer {other:?}")),
                    Err(error) => failed.push(error.to_string()),
                }
                thread::sleep(Duration::from_millis(20));
            }
            (answered, failed)
        })
    })
}

#[test]
fn directors_keep_serving_through_an_etcd_outage_and_catch_up_after_it() {
    let Some((_turn, mut farm)) = running_farm() else {
        return;
    };
    let _servers = start_servers(&farm.ns("r1"), "real1", "0.0.0.0");
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = client_traffic(&farm, Arc::clone(&stop));

    // One member of three dies: changes still go through.
    kill_member(&mut farm, 2);
    let weight_is = |farm: &Farm, director: &str, weight: u64| {
        reals(farm, director).is_some_and(|reals| reals[0].1 == weight)
    };
    wait_for(
        "a change with one etcd member down",
        &farm,
        Duration::from_secs(15),
        || set_weight(&farm, "d2", "2").0 == 0,
    );
    on_every_director(
        &farm,
        "every director has it",
        Duration::from_secs(10),
        |director| weight_is(&farm, director, 2),
    );

    // Every member down: the directors keep their table and serve; changes are refused.
    kill_member(&mut farm, 0);
    kill_member(&mut farm, 1);
    on_every_director(&farm, "sees etcd gone", Duration::from_secs(15), |director| {
        status(&farm, director).is_some_and(|status| status["cluster"]["connected"] == false)
    });
    let (code, _, err) = set_weight(&farm, "d1", "3");
    assert_ne!(code, 0);
    assert!(err.contains("cannot be reached"), "{err}");
    let (_, text, _) = lbadm(&farm, "d1", &["status"]);
    assert!(text.contains("etcd: UNREACHABLE"), "{text}");
    // A director restarted during the outage starts from its state file.
    farm.lbd[2] = None;
    start_director(&mut farm, 2);
    assert!(
        weight_is(&farm, "d3", 2),
        "d3 restarted from its state file: {:?}",
        reals(&farm, "d3")
    );
    thread::sleep(Duration::from_secs(2));

    // etcd returns: every director reconnects; a change made while d3 is down reaches it when
    // it comes back.
    for n in 0..MEMBERS.len() {
        start_member(&mut farm, n);
    }
    on_every_director(&farm, "reconnects", Duration::from_secs(30), |director| {
        status(&farm, director).is_some_and(|status| status["cluster"]["connected"] == true)
    });
    farm.lbd[2] = None;
    wait_for(
        "a change after the outage",
        &farm,
        Duration::from_secs(10),
        || set_weight(&farm, "d1", "4").0 == 0,
    );
    start_director(&mut farm, 2);
    on_every_director(&farm, "caught up", Duration::from_secs(10), |director| {
        weight_is(&farm, director, 4)
    });
    stop.store(true, Ordering::SeqCst);
    let (answered, failed) = traffic.join().unwrap();
    println!(
        "cluster: through an etcd outage, {answered} connections answered by d1, {} failed",
        failed.len()
    );
    assert!(answered > 100, "{answered}");
    assert!(failed.is_empty(), "connections failed: {failed:?}");
}

#[test]
fn reals_that_register_themselves_come_and_go_with_their_registration() {
    let Some((_turn, mut farm)) = running_farm() else {
        return;
    };
    let endpoints = farm.endpoints();
    let ok = |n: usize| farm.dir.path().join(format!("ok-{n}"));
    for n in 0..20 {
        let address = format!("{REAL}:{}", 9000 + n);
        let mut command = vec![
            lbd_binary().to_owned(),
            "register".to_owned(),
            "--etcd".to_owned(),
            endpoints.clone(),
            "--prefix".to_owned(),
            PREFIX.to_owned(),
            "--service".to_owned(),
            "web".to_owned(),
            "--address".to_owned(),
            address,
            "--ttl".to_owned(),
            "3s".to_owned(),
        ];
        if n >= 18 {
            std::fs::write(ok(n), "").unwrap();
            command.extend(["--check".to_owned(), format!("test -e {}", ok(n).display())]);
        }
        let command: Vec<&str> = command.iter().map(String::as_str).collect();
        let registrant = spawn_in(&farm, "r1", &format!("register-{n}.log"), &command);
        farm.registrants.push(Some(registrant));
    }
    let registered = |farm: &Farm, director: &str| {
        reals(farm, director).map(|reals| reals.iter().filter(|(_, _, registered)| *registered).count())
    };
    on_every_director(
        &farm,
        "lists 20 registered reals",
        Duration::from_secs(15),
        |director| registered(&farm, director) == Some(20),
    );
    let (_, listing, _) = lbadm(&farm, "d2", &["list"]);
    assert_eq!(listing.matches(" REG").count(), 20, "{listing}");
    assert!(
        !lbadm(&farm, "d1", &["save"]).1.contains(":9000"),
        "save leaves registered reals out"
    );

    // Five registrants die without a word: their reals go from every director within the
    // TTL and a second.
    let killed = Instant::now();
    for n in 0..5 {
        farm.registrants[n] = None;
    }
    let mut gone_after = Vec::new();
    for director in DIRECTORS {
        wait_for(
            &format!("{director} drops 5 reals"),
            &farm,
            Duration::from_secs(10),
            || registered(&farm, director) == Some(15),
        );
        gone_after.push(killed.elapsed());
    }
    let slowest = *gone_after.iter().max().unwrap();
    println!("cluster: 5 registrants killed (TTL 3s): gone from the directors after {gone_after:?}");
    assert!(slowest <= Duration::from_secs(4), "{slowest:?}");

    // A failing check withdraws its real the same way; SIGTERM withdraws at once.
    let failed = Instant::now();
    std::fs::remove_file(ok(18)).unwrap();
    on_every_director(
        &farm,
        "drops the failing real",
        Duration::from_secs(10),
        |director| registered(&farm, director) == Some(14),
    );
    let check_gone = failed.elapsed();
    let stopped = Instant::now();
    let pid = nix::unistd::Pid::from_raw(farm.registrants[19].as_ref().unwrap().0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    on_every_director(
        &farm,
        "drops the stopped real",
        Duration::from_secs(10),
        |director| registered(&farm, director) == Some(13),
    );
    let withdrawn = stopped.elapsed();
    // The check passes again: the real comes back.
    std::fs::write(ok(18), "").unwrap();
    on_every_director(
        &farm,
        "takes the real back",
        Duration::from_secs(10),
        |director| registered(&farm, director) == Some(14),
    );
    println!("cluster: failing check withdrawn after {check_gone:?}; SIGTERM withdrawn after {withdrawn:?}");
    assert!(check_gone <= Duration::from_secs(4), "{check_gone:?}");
    assert!(
        stopped.elapsed() <= Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
}

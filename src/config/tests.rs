use std::time::Duration;

use super::*;

const MINIMAL: &str = "\
services:
  - protocol: tcp
    listen: 127.0.0.1:8080
    reals:
      - address: 127.0.0.1:[9001-9003]
";

fn error_of(source: &str) -> String {
    parse(source, "lbd.yaml").unwrap_err().to_string()
}

#[test]
fn minimal_config_gets_spec_defaults() {
    let config = parse(MINIMAL, "lbd.yaml").unwrap();
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.timeouts, Timeouts::default());
    assert_eq!(config.timeouts.tcp, Duration::from_secs(900));
    assert_eq!(config.workers, 0);
    assert!(config.admin.is_none() && config.metrics.is_none());
    let service = &config.services[0];
    assert_eq!(service.name, "tcp:127.0.0.1:8080");
    assert_eq!(service.scheduler, SchedulerKind::Wlc);
    assert_eq!(service.forward, ForwardMethod::Proxy);
    assert_eq!(service.reals.len(), 3);
    assert_eq!(service.reals[2].address.to_string(), "127.0.0.1:9003");
    assert_eq!(service.reals[0].weight, 1);
}

#[test]
fn proxy_protocol_keys_are_checked_against_the_service() {
    let service = |extra: &str| format!("services:\n  - protocol: tcp\n    listen: 192.0.2.1:80\n{extra}");
    let config = parse(
        &service(
            "    proxy_protocol: v2\n    accept_proxy: true\n    accept_proxy_from: [10.0.0.0/8, 'fd00::/8']\n    health_check: {type: http}\n    reals: [{address: '127.0.0.1:81'}, {address: '127.0.0.1:82', proxy_protocol: v1}, {address: '127.0.0.1:83', proxy_protocol: none}]\n",
        ),
        "lbd.yaml",
    )
    .unwrap();
    let service0 = &config.services[0];
    let versions: Vec<ProxyProtocol> = service0
        .reals
        .iter()
        .map(|real| real.proxy_protocol_in(service0))
        .collect();
    assert_eq!(
        versions,
        [ProxyProtocol::V2, ProxyProtocol::V1, ProxyProtocol::None]
    );
    assert!(service0.accept_proxy_from.contains("10.1.2.3".parse().unwrap()));
    let check = service0.health_check.as_ref().unwrap();
    assert!(check.sends_proxy(ProxyProtocol::V2) && !check.sends_proxy(ProxyProtocol::None));
    // A check on another port sends no header unless told to.
    let other_port = parse(
        &service("    proxy_protocol: v1\n    health_check: {type: tcp, port: 9}\n"),
        "t",
    )
    .unwrap();
    assert!(
        !other_port.services[0]
            .health_check
            .as_ref()
            .unwrap()
            .sends_proxy(ProxyProtocol::V1)
    );
    let cases = [
        ("    proxy_protocol: v3\n", "unknown variant `v3`"),
        (
            "    forward: nat\n    proxy_protocol: v2\n",
            "needs forward: proxy",
        ),
        (
            "    forward: dr\n    reals: [{address: '10.0.0.1', proxy_protocol: v1}]\n",
            "needs forward: proxy",
        ),
        ("    accept_proxy: true\n", "needs accept_proxy_from"),
        (
            "    accept_proxy_from: [10.0.0.0/8]\n",
            "only with accept_proxy: true",
        ),
        (
            "    accept_proxy: true\n    accept_proxy_from: [10.0.0.1/8]\n",
            "write the network, 10.0.0.0/8",
        ),
        (
            "    health_check: {type: tcp, send_proxy: true}\n",
            "the service has none",
        ),
        (
            "    proxy_protocol: v1\n    health_check: {type: tcp, send_proxy: true}\n    reals: [{address: '10.0.0.1', proxy_protocol: none}]\n",
            "10.0.0.1 has none",
        ),
        (
            "    proxy_protocol: v1\n    health_check: {type: exec, command: [true], send_proxy: true}\n",
            "applies to tcp, http and udp checks",
        ),
    ];
    for (extra, needle) in cases {
        let message = error_of(&service(extra));
        assert!(message.contains(needle), "{extra}: {message}");
    }
    let udp = |extra: &str| format!("services:\n  - protocol: udp\n    listen: 127.0.0.1:53\n{extra}");
    assert!(error_of(&udp("    proxy_protocol: v1\n")).contains("a udp service sends v2"));
    assert!(
        error_of(&udp(
            "    accept_proxy: true\n    accept_proxy_from: [10.0.0.0/8]\n"
        ))
        .contains("proxied tcp service")
    );
    assert!(parse(&udp("    proxy_protocol: v2\n"), "t").is_ok());
}

#[test]
fn packet_plane_services_need_what_their_forwarding_uses() {
    // nat, dr and tun need the dataplane section; dr its server interface; dr and tun keep ports.
    let message = error_of("services:\n  - protocol: tcp\n    listen: 192.0.2.1:80\n    forward: nat\n");
    assert!(message.contains("need a `dataplane:` section"), "{message}");
    let message =
        error_of("dataplane: {}\nservices:\n  - { protocol: tcp, listen: '192.0.2.1:80', forward: dr }\n");
    assert!(
        message.contains("forward dr needs `dataplane.server_interface`"),
        "{message}"
    );
    let message = error_of(
        "dataplane: { server_interface: eth1 }\nservices:\n  - { protocol: tcp, listen: '192.0.2.1:80', forward: tun, reals: [{address: '10.0.0.1:8080'}] }\n",
    );
    assert!(
        message.contains("the real's port must be the service's (80)"),
        "{message}"
    );
    assert!(
        parse(
            "dataplane: { tun: lbtun0 }\nservices:\n  - { protocol: tcp, listen: '192.0.2.1:80', forward: nat }\n",
            "x"
        )
        .is_ok()
    );
    // Health checks are supported; `type: none` is the same as none at all.
    assert!(
        parse(
            "services:\n  - { protocol: tcp, listen: '192.0.2.1:80', health_check: { type: tcp } }\n",
            "x"
        )
        .is_ok()
    );
    assert!(
        parse(
            "services:\n  - { protocol: tcp, listen: '127.0.0.1:80', health_check: { type: none } }\n",
            "x"
        )
        .is_ok()
    );
}

fn parse_unchecked(source: &str) -> Config {
    serde_yaml::from_str(source).unwrap()
}

#[test]
fn full_spec_example_parses() {
    let source = "\
admin:
  listen: 127.0.0.1:9900
metrics:
  listen: 127.0.0.1:9901
drain_timeout: 10s
timeouts: { tcp: 900s, tcp_fin: 2m, udp: 300s, connect: 500ms }
workers: 2
services:
  - name: web
    protocol: tcp
    listen: 192.168.77.100:80
    scheduler: sh
    scheduler_flags: [sh-port, sh-fallback]
    persistence: { timeout: 360s, netmask: 255.255.255.0 }
    sorry_server: 10.0.0.99:80
    health_check:
      type: http
      path: /healthz
      expect_status: \"200,204-299\"
      interval: 1s
    reals:
      - address: 10.0.0.[1-4]:8080
        weight: 3
        max_conns: 100
        min_conns: 50
      - address: 10.0.1.1
  - protocol: udp
    listen: 192.168.77.100:53
    one_packet: true
    reals: [{ address: '10.0.0.1:53' }]
";
    let config = parse_unchecked(source);
    assert!(validate(&config).is_ok());
    assert_eq!(config.timeouts.tcp_fin, Duration::from_secs(120));
    assert_eq!(config.timeouts.connect, Duration::from_millis(500));
    let web = &config.services[0];
    assert_eq!(web.persistence.unwrap().netmask.prefix, Some(24));
    assert_eq!(web.reals.len(), 5);
    assert_eq!(
        web.reals[4].address.to_string(),
        "10.0.1.1:80",
        "port defaults to the service's"
    );
    let Some(HealthCheckConfig {
        kind: HealthCheckKind::Http { expect_status, .. },
        ..
    }) = &web.health_check
    else {
        panic!("http check expected");
    };
    assert_eq!(expect_status, &[(200, 200), (204, 299)]);
    assert_eq!(config.services[1].name, "udp:192.168.77.100:53");
}

#[test]
fn unknown_key_names_key_line_and_column() {
    let message = error_of("services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    wieght: 3\n");
    assert!(message.starts_with("lbd.yaml:4:5: "), "{message}");
    assert!(message.contains("unknown field `wieght`"), "{message}");
}

#[test]
fn unknown_top_level_key() {
    let message = error_of("servics: []\n");
    assert!(message.starts_with("lbd.yaml:1:1: "), "{message}");
    assert!(message.contains("servics"), "{message}");
}

#[test]
fn bad_values_are_named_with_position() {
    let cases = [
        ("    listen: 127.0.0.1\n", "invalid address `127.0.0.1`"),
        ("    listen: 300.0.0.1:80\n", "invalid address `300.0.0.1:80`"),
        ("    listen: 127.0.0.1:0\n", "port 0"),
        ("    scheduler: fastest\n", "unknown variant `fastest`"),
        (
            "    scheduler_flags: [sh-port]\n",
            "`sh-port` applies only to scheduler `sh`",
        ),
        ("    scheduler_flags: [turbo]\n", "unknown variant `turbo`"),
        ("    forward: bridge\n", "unknown variant `bridge`"),
        ("    one_packet: true\n", "one_packet: only valid for udp"),
        ("    persistence: { netmask: 255.0.255.0 }\n", "not contiguous"),
        (
            "    health_check: { type: smtp }\n",
            "unknown health check type `smtp`",
        ),
        (
            "    health_check: { type: tcp, path: /x }\n",
            "`path` does not apply",
        ),
        ("    health_check: { type: exec }\n", "needs `command`"),
        (
            "    health_check: { type: tcp, interval: 2 }\n",
            "invalid duration `2`",
        ),
        (
            "    health_check: { type: http, expect_status: 700 }\n",
            "expect_status: `700`",
        ),
    ];
    for (line, needle) in cases {
        let source = format!("services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n{line}    reals: []\n")
            .replacen("    listen: 127.0.0.1:80\n    listen", "    listen", 1);
        let message = error_of(&source);
        assert!(message.contains(needle), "{line:?} → {message}");
        assert!(message.starts_with("lbd.yaml:"), "{message}");
    }
}

#[test]
fn weight_out_of_range() {
    let message = error_of(&MINIMAL.replace("9003]\n", "9003]\n        weight: 70000\n"));
    assert!(
        message.contains("weight 70000 is out of range 0..65535"),
        "{message}"
    );
    assert!(
        message.starts_with("lbd.yaml:5:9: services[0].reals[0]: "),
        "{message}"
    );
    let message = error_of(&MINIMAL.replace("9003]\n", "9003]\n        weight: -1\n"));
    assert!(message.contains("weight -1 is out of range"), "{message}");
}

#[test]
fn malformed_and_oversized_ranges() {
    let message = error_of(&MINIMAL.replace("[9001-9003]", "[9001-]"));
    assert!(
        message.contains("malformed range in `127.0.0.1:[9001-]`"),
        "{message}"
    );
    let message = error_of(&MINIMAL.replace("127.0.0.1:[9001-9003]", "10.[0-255].[0-255].[0-1]:80"));
    assert!(message.contains("more than the limit of 65536"), "{message}");
    let message = error_of(&MINIMAL.replace("127.0.0.1:[9001-9003]", "10.0.0.[1-300]:80"));
    assert!(
        message.contains("invalid real address `10.0.0.256:80`"),
        "{message}"
    );
}

#[test]
fn duplicate_real_within_a_service() {
    let message = error_of(&MINIMAL.replace(
        "      - address: 127.0.0.1:[9001-9003]\n",
        "      - address: 127.0.0.1:[9001-9003]\n      - address: 127.0.0.1:9002\n",
    ));
    assert!(
        message.contains("`127.0.0.1:9002` repeats real 127.0.0.1:9002 of service tcp:127.0.0.1:8080"),
        "{message}"
    );
    // The position is the repeated real's, not the service's.
    let line = MINIMAL.lines().count() + 1;
    assert!(message.contains(&format!(":{line}:")), "line {line}: {message}");
}

#[test]
fn errors_in_one_item_point_at_that_item() {
    for (text, expected) in [
        (
            "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    scheduler: wrr\n    scheduler_flags: [sh-port]\n",
            "t:5:23:",
        ),
        (
            "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    reals:\n      - address: 10.0.0.1:80\n      - address: 10.0.0.[3-1]:80\n",
            "t:6:18:",
        ),
        (
            "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    reals:\n      - address: 10.0.0.1:80\n      - address: 10.0.0.300:80\n",
            "t:6:18:",
        ),
    ] {
        let message = parse(text, "t").unwrap_err().to_string();
        assert!(message.starts_with(expected), "{expected}: {message}");
    }
}

#[test]
fn duplicate_service_is_located_at_the_second_listen() {
    let source = "\
services:
  - protocol: tcp
    listen: 127.0.0.1:8080
  - protocol: udp
    listen: 127.0.0.1:8080
  - protocol: tcp
    listen: 127.0.0.1:8080
";
    let message = error_of(source);
    assert!(message.starts_with("lbd.yaml:7:13: "), "{message}");
    assert!(
        message.contains("duplicate service tcp 127.0.0.1:8080"),
        "{message}"
    );
}

#[test]
fn duplicate_service_name() {
    let source = "\
services:
  - { name: web, protocol: tcp, listen: 127.0.0.1:8080 }
  - { name: web, protocol: tcp, listen: 127.0.0.1:8081 }
";
    let message = error_of(source);
    assert!(message.contains("duplicate service name `web`"), "{message}");
    assert!(message.starts_with("lbd.yaml:3:"), "{message}");
}

#[test]
fn every_ipvs_scheduler_is_accepted() {
    for name in [
        "rr", "wrr", "lc", "wlc", "sed", "nq", "lblc", "lblcr", "dh", "sh", "mh", "fo", "ovf", "twos",
    ] {
        let source =
            format!("services:\n  - {{ protocol: tcp, listen: '127.0.0.1:80', scheduler: {name} }}\n");
        assert_eq!(parse(&source, "x").unwrap().services[0].scheduler.name(), name);
    }
}

#[test]
fn an_mh_service_holds_at_most_its_table_size() {
    let source = "services:\n  - protocol: tcp\n    listen: 127.0.0.1:80\n    scheduler: mh\n    reals: [{address: '10.0.[0-15].[0-255]:80'}]\n";
    let message = error_of(source);
    assert!(
        message.contains("4096 reals, but an mh service holds at most 4093"),
        "{message}"
    );
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let message = error_of("admin: { listen: 0.0.0.0:9900 }\n");
    assert!(message.contains("admin.token_file is required"), "{message}");
    let config = parse_unchecked("admin: { listen: 0.0.0.0:9900, token_file: /etc/lbd/admin.token }\n");
    assert!(validate(&config).is_ok());
    let config = parse_unchecked("admin: { listen: 'unix:/run/lbd/admin.sock' }\n");
    assert_eq!(
        config.admin.unwrap().listen,
        AdminListen::Unix("/run/lbd/admin.sock".into())
    );
}

#[test]
fn syntax_error_and_empty_file() {
    let message = error_of("services: [\n");
    assert!(message.starts_with("lbd.yaml:"), "{message}");
    // Every key has a default, so an empty file is an empty table (services come via lbadm).
    assert!(parse("", "lbd.yaml").unwrap().services.is_empty());
}

#[test]
fn services_only_document() {
    let services = parse_services(
        "services:\n  - { protocol: udp, listen: '127.0.0.1:53' }\n",
        "<input>",
        &Config::default(),
    )
    .unwrap();
    assert_eq!(services.len(), 1);
    assert!(parse_services("workers: 1\n", "<input>", &Config::default()).is_err());
}

#[test]
fn services_are_checked_against_the_running_configuration() {
    // A nat service needs the running config's `dataplane:`; it is accepted with it (state
    // file, lbadm restore) and refused without it.
    let nat = "services:\n  - { protocol: tcp, listen: '192.0.2.1:80', forward: nat, reals: [{address: '10.0.0.1'}] }\n";
    let running = parse("dataplane: { tun: lbtun0, server_interface: br0 }\n", "lbd.yaml").unwrap();
    assert_eq!(parse_services(nat, "state", &running).unwrap().len(), 1);
    let error = parse_services(nat, "state", &Config::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("dataplane"), "{error}");
}

#[test]
fn names_that_read_as_another_services_key_are_refused() {
    let shadow = "services:\n  - { name: 'tcp:127.0.0.1:18480', protocol: tcp, listen: '127.0.0.1:80' }\n";
    let error = parse(shadow, "lbd.yaml").unwrap_err().to_string();
    assert!(error.contains("reads as another service"), "{error}");
    // Its own key is its default name, and may be written out.
    let own = "services:\n  - { name: 'TCP:127.0.0.1:80', protocol: tcp, listen: '127.0.0.1:80' }\n";
    assert!(parse(own, "lbd.yaml").is_ok());
}

#[test]
fn combinations_that_cannot_work_are_refused() {
    let dataplane = "dataplane: { tun: lbtun0, server_interface: br0 }\n";
    for (service, expected) in [
        (
            "{ protocol: tcp, listen: '[2001:db8::1]:80', forward: nat, reals: [{address: '10.0.0.1'}] }",
            "not of the VIP 2001:db8::1's address family",
        ),
        (
            "{ protocol: tcp, listen: '192.0.2.1:80', forward: dr, reals: [{address: '[2001:db8::5]:80'}] }",
            "only forward: tun carries one family inside the other",
        ),
        (
            "{ protocol: tcp, listen: '[fe80::1]:80', forward: dr }",
            "link-local",
        ),
        (
            "{ protocol: udp, listen: '0.0.0.0:53', forward: nat }",
            "cannot be a VIP of forward nat",
        ),
        (
            "{ protocol: tcp, listen: '[2001:db8::1]:80', forward: tun, ipv6_only: false }",
            "ipv6_only: false applies to proxied services",
        ),
        (
            "{ protocol: tcp, listen: '192.0.2.1:80', reals: [{address: '10.0.0.1', forward: nat}] }",
            "either proxied or forwards packets",
        ),
        (
            "{ protocol: tcp, listen: '192.0.2.1:80', forward: nat, reals: [{address: '10.0.0.1', forward: proxy}] }",
            "only choose among nat, dr and tun",
        ),
    ] {
        let error = parse(&format!("{dataplane}services:\n  - {service}\n"), "lbd.yaml")
            .unwrap_err()
            .to_string();
        assert!(error.contains(expected), "{service}: {error}");
    }
}

#[test]
fn every_duration_key_is_bounded() {
    for (text, expected) in [
        ("timeouts: { tcp_fin: 31d }\n", "timeouts.tcp_fin"),
        ("timeouts: { tcp: 0s }\n", "timeouts.tcp"),
        ("drain_timeout: 2d\n", "drain_timeout"),
        (
            "services:\n  - { protocol: tcp, listen: '127.0.0.1:80', persistence: { timeout: 999d } }\n",
            "persistence.timeout",
        ),
        (
            "services:\n  - { protocol: tcp, listen: '127.0.0.1:80', health_check: { type: tcp, interval: 2d } }\n",
            "interval",
        ),
    ] {
        let error = parse(text, "lbd.yaml").unwrap_err().to_string();
        assert!(error.contains("out of range"), "{text}: {error}");
        assert!(
            error.contains(expected) || error.contains("lbd.yaml:"),
            "{text}: {error}"
        );
    }
    let huge = format!("timeouts: {{ tcp: {} }}\n", "999999999999d".repeat(250));
    assert!(
        parse(&huge, "lbd.yaml")
            .unwrap_err()
            .to_string()
            .contains("100 years")
    );
}

#[test]
fn deep_or_huge_documents_are_refused_before_parsing() {
    let deep = format!("{{\"services\": {}{}}}", "[".repeat(60_000), "]".repeat(60_000));
    let started = std::time::Instant::now();
    let error = parse(&deep, "body").unwrap_err().to_string();
    assert!(error.contains("nested deeper than 64"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // Brackets in quoted strings and comments do not count; a quote inside a plain scalar
    // opens nothing.
    let fine = format!(
        "# {}\nservices: []\nx: \"{}\\\" {}\"\ny: '{}'\n",
        "[".repeat(100),
        "[".repeat(100),
        "{".repeat(100),
        "[".repeat(100)
    );
    assert!(check_shape(fine.as_bytes()).is_ok());
    let sneaky = format!("a: don't\nb: {}", "[".repeat(100));
    assert!(check_shape(sneaky.as_bytes()).is_err());
    assert!(check_shape(&vec![b' '; MAX_DOCUMENT_BYTES + 1]).is_err());
}

#[test]
fn with_a_cluster_the_services_are_not_in_the_file() {
    let cluster = "cluster: { etcd: ['http://127.0.0.1:2379'], prefix: /ulvs/web, node: d1 }\n";
    let config = parse(cluster, "lbd.yaml").unwrap();
    let settings = config.cluster.as_ref().unwrap();
    assert_eq!(
        (settings.node.as_str(), settings.ttl),
        ("d1", std::time::Duration::from_secs(5))
    );
    let both = format!("{cluster}services:\n  - {{ protocol: tcp, listen: '127.0.0.1:80' }}\n");
    let message = error_of(&both);
    assert!(
        message.contains("lives in etcd under /ulvs/web/services/"),
        "{message}"
    );
    assert!(message.starts_with("lbd.yaml:2:"), "{message}");
    // The services the cluster holds are checked as the running configuration's.
    assert_eq!(
        parse_services(
            "services:\n  - { protocol: tcp, listen: '127.0.0.1:80' }\n",
            "etcd",
            &config
        )
        .unwrap()
        .len(),
        1
    );
    let message = error_of("cluster: { etcd: ['https://h:2379'], prefix: /u, node: d1 }\n");
    assert!(message.contains("TLS"), "{message}");
}

#[test]
fn ipv6_only_is_for_ipv6_listen_addresses_and_is_saved_when_off() {
    let dual = parse(
        "services:\n  - { protocol: tcp, listen: '[::]:80', ipv6_only: false, reals: [{address: '[2001:db8::[1-2]]:8080'}, {address: '10.0.0.1:8080'}] }\n",
        "lbd.yaml",
    )
    .unwrap();
    let service = &dual.services[0];
    assert!(!service.ipv6_only);
    let reals: Vec<String> = service
        .reals
        .iter()
        .map(|real| real.address.to_string())
        .collect();
    assert_eq!(
        reals,
        ["[2001:db8::1]:8080", "[2001:db8::2]:8080", "10.0.0.1:8080"]
    );
    let saved = services_yaml(&dual.services);
    assert!(saved.contains("ipv6_only: false"), "{saved}");
    assert_eq!(
        parse_services(&saved, "saved", &Config::default()).unwrap(),
        dual.services
    );
    // The default is on, and is not written.
    let v6 = parse(
        "services:\n  - { protocol: udp, listen: '[2001:db8::100]:53' }\n",
        "lbd.yaml",
    )
    .unwrap();
    assert!(v6.services[0].ipv6_only);
    assert!(!services_yaml(&v6.services).contains("ipv6_only"));
    let message = error_of("services:\n  - { protocol: tcp, listen: '10.0.0.100:80', ipv6_only: false }\n");
    assert!(
        message.contains("ipv6_only: false applies to an IPv6 listen address"),
        "{message}"
    );
}

#[test]
fn via_vip_checks_need_dr_or_tun_reals_and_the_services_port() {
    let service = |forward: &str, check: &str| {
        format!(
            "dataplane: {{ server_interface: br0 }}\nservices:\n  - {{ protocol: tcp, listen: '192.0.2.1:80', forward: {forward}, health_check: {check}, reals: [{{address: '10.0.0.1'}}] }}\n"
        )
    };
    assert!(parse(&service("dr", "{type: http, via_vip: true}"), "t").is_ok());
    assert!(parse(&service("tun", "{type: tcp, via_vip: true}"), "t").is_ok());
    for (forward, check, needle) in [
        ("nat", "{type: tcp, via_vip: true}", "this service has none"),
        ("dr", "{type: tcp, via_vip: true, port: 81}", "leave `port` out"),
        (
            "dr",
            "{type: agent, agent_port: 9, via_vip: true}",
            "applies to tcp and http checks",
        ),
    ] {
        let message = error_of(&service(forward, check));
        assert!(message.contains(needle), "{check}: {message}");
    }
}

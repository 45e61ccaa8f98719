//! Configuration loading as an operator meets it: files, `SUPERMQ_*` overrides, and the one-line
//! error that names the file or variable, the key and the problem.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use supermq::config::*;

/// A file under the system temp directory, removed when dropped. Names are unique per process
/// and call, so tests run in parallel without a tempfile crate.
struct TempFile(PathBuf);

impl TempFile {
    fn new(contents: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "supermq-config-test-{}-{}.conf",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/appserver.conf")
}

/// Loads `contents` as a file with `vars` as the environment.
fn load_text(contents: &str, vars: &[(&str, &str)]) -> (TempFile, Result<Config, ConfigError>) {
    let file = TempFile::new(contents);
    let result = load_from(Some(file.path()), env(vars));
    (file, result)
}

/// The error message for `contents` + `vars`, checked to be a single line.
fn error(contents: &str, vars: &[(&str, &str)]) -> (String, String) {
    let (file, result) = load_text(contents, vars);
    let message = result.unwrap_err().to_string();
    assert!(!message.contains('\n'), "not one line: {message:?}");
    (file.name(), message)
}

/// Asserts that `contents` is rejected with exactly `{file}: {expected}`.
fn assert_file_error(contents: &str, expected: &str) {
    let (file, message) = error(contents, &[]);
    assert_eq!(message, format!("{file}: {expected}"), "for {contents:?}");
}

/// Asserts that `contents` loads.
fn assert_ok(contents: &str) -> Config {
    let (_file, result) = load_text(contents, &[]);
    result.unwrap_or_else(|e| panic!("{contents:?} was rejected: {e}"))
}

#[test]
fn no_file_gives_the_defaults() {
    let config = load_from(None, env(&[])).unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.mqtt.tcp, "0.0.0.0:1883");
    assert_eq!(config.log.level, "info");
    assert!(!config.node.name.is_empty());
    config.validate().unwrap();
}

#[test]
fn empty_file_gives_the_defaults() {
    assert_eq!(assert_ok(""), Config::default());
    assert_eq!(
        assert_ok("# nothing\n[mqtt]\n[limits]\n"),
        Config::default()
    );
}

#[test]
fn shipped_file_is_exactly_the_defaults() {
    // node.name stays commented out in the file, so both sides use the host name.
    let config = load_from(Some(&shipped()), env(&[])).unwrap();
    assert_eq!(config, Config::default());
}

#[test]
fn shipped_file_documents_every_key() {
    let text = std::fs::read_to_string(shipped()).unwrap();
    // (section, key) for every `key = ` line, commented out or not.
    let mut documented = Vec::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let line = line.trim_start_matches('#').trim();
        if let Some((key, _)) = line.split_once(" = ")
            && !key.contains(' ')
        {
            documented.push((section.clone(), key.to_string()));
        }
    }
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                documented.contains(&(section.clone(), key.clone())),
                "config/appserver.conf does not document {section}.{key}"
            );
        }
    }
}

#[test]
fn file_values_are_used() {
    let config = assert_ok(
        "[node]\nname = \"n1\"\n[mqtt]\nws = \"127.0.0.1:8083\"\n[limits]\nmax_inflight = 7\n\
         [cluster]\nroutes = [\"a:1\", \"b:2\"]\n[log]\nlevel = \"supermq=debug,warn\"\n",
    );
    assert_eq!(config.node.name, "n1");
    assert_eq!(config.mqtt.tcp, "0.0.0.0:1883");
    assert_eq!(config.mqtt.ws, "127.0.0.1:8083");
    assert_eq!(config.limits.max_inflight, 7);
    assert_eq!(config.limits.max_queued_messages, 1000);
    assert_eq!(config.cluster.routes, ["a:1", "b:2"]);
    assert_eq!(config.log.level, "supermq=debug,warn");
}

#[test]
fn env_overrides_a_string() {
    let config = load_from(None, env(&[("SUPERMQ_NODE_NAME", "node2")])).unwrap();
    assert_eq!(config.node.name, "node2");
}

#[test]
fn env_overrides_an_integer() {
    let vars = [
        ("SUPERMQ_LIMITS_MAX_INFLIGHT", "10"),
        ("SUPERMQ_LIMITS_MAX_SESSION_EXPIRY_SECS", " 60 "),
    ];
    let config = load_from(None, env(&vars)).unwrap();
    assert_eq!(config.limits.max_inflight, 10);
    assert_eq!(config.limits.max_session_expiry_secs, 60);
}

#[test]
fn env_overrides_a_list() {
    let vars = [("SUPERMQ_CLUSTER_ROUTES", "node1:9999, node3:9999")];
    let config = load_from(None, env(&vars)).unwrap();
    assert_eq!(config.cluster.routes, ["node1:9999", "node3:9999"]);

    // An empty value empties a list that the file set.
    let (_file, result) = load_text(
        "[cluster]\nroutes = [\"x:1\"]\n",
        &[("SUPERMQ_CLUSTER_ROUTES", "")],
    );
    assert!(result.unwrap().cluster.routes.is_empty());
}

#[test]
fn env_wins_over_the_file() {
    let (_file, result) = load_text(
        "[node]\nname = \"from-file\"\n[limits]\nmax_inflight = 5\nmax_subscriptions = 9\n",
        &[
            ("SUPERMQ_NODE_NAME", "from-env"),
            ("SUPERMQ_LIMITS_MAX_INFLIGHT", "6"),
        ],
    );
    let config = result.unwrap();
    assert_eq!(config.node.name, "from-env");
    assert_eq!(config.limits.max_inflight, 6);
    // A key the environment does not name keeps the file's value.
    assert_eq!(config.limits.max_subscriptions, 9);
}

#[test]
fn env_without_the_prefix_is_ignored() {
    let vars = [
        ("PATH", "/bin"),
        ("SUPERMQX_NODE_NAME", "x"),
        ("supermq_node_name", "x"),
    ];
    assert_eq!(load_from(None, env(&vars)).unwrap(), Config::default());
}

#[test]
fn unknown_key_in_a_section() {
    assert_file_error(
        "[mqtt]\ntpc = \"0.0.0.0:1883\"\n",
        "unknown key \"mqtt.tpc\" (the keys in [mqtt] are tcp, tls, ws, wss)",
    );
    // A dotted key is the same key.
    let (_, message) = error("limits.max_inflght = 3\n", &[]);
    assert!(
        message.contains("unknown key \"limits.max_inflght\""),
        "{message}"
    );
    // A table inside a section is an unknown key too.
    let (_, message) = error("[mqtt.extra]\na = 1\n", &[]);
    assert!(message.contains("unknown key \"mqtt.extra\""), "{message}");
}

#[test]
fn unknown_section() {
    assert_file_error(
        "[mqttt]\ntcp = \"0.0.0.0:1883\"\n",
        "unknown section \"mqttt\" (the sections are auth, cluster, http, limits, log, mqtt, node, storage, sys, tls)",
    );
    // A top-level key is not a section either.
    let (_, message) = error("tcp = \"0.0.0.0:1883\"\n", &[]);
    assert!(message.contains("unknown section \"tcp\""), "{message}");
}

#[test]
fn section_that_is_not_a_table() {
    assert_file_error(
        "mqtt = 1883\n",
        "mqtt: expected a table ([mqtt]), found an integer",
    );
}

#[test]
fn unknown_supermq_variable() {
    let message = load_from(None, env(&[("SUPERMQ_MQTT_TPC", "0.0.0.0:1")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "SUPERMQ_MQTT_TPC: names no configuration key \
         (the keys in [mqtt] are tcp, tls, ws, wss, as SUPERMQ_MQTT_<KEY>)"
    );
    for var in [
        "SUPERMQ_MQT_TCP",
        "SUPERMQ_NODE",
        "SUPERMQ_",
        "SUPERMQ_node_name",
    ] {
        let message = load_from(None, env(&[(var, "x")])).unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("{var}: names no configuration key (")),
            "{message}"
        );
    }
    // Even with a file, the variable is what the message names.
    let (_, message) = error("", &[("SUPERMQ_LIMITS_MAX_INFLIGH", "1")]);
    assert!(
        message.starts_with("SUPERMQ_LIMITS_MAX_INFLIGH: "),
        "{message}"
    );
}

#[test]
fn wrong_type_in_the_file() {
    assert_file_error(
        "[limits]\nmax_inflight = \"10\"\n",
        "limits.max_inflight: expected an integer, found a string",
    );
    assert_file_error(
        "[mqtt]\ntcp = 1883\n",
        "mqtt.tcp: expected a string, found an integer",
    );
    assert_file_error(
        "[cluster]\nroutes = \"a:1\"\n",
        "cluster.routes: expected an array, found a string",
    );
    assert_file_error(
        "[log]\nlevel = 1.5\n",
        "log.level: expected a string, found a float",
    );
    let (file, message) = error("[cluster]\nroutes = [1]\n", &[]);
    assert!(
        message.starts_with(&format!("{file}: cluster.routes: invalid type: integer")),
        "{message}"
    );
}

#[test]
fn integer_out_of_its_type_range() {
    assert_file_error(
        "[limits]\nmax_inflight = 70000\n",
        "limits.max_inflight: must be between 0 and 65535, found 70000",
    );
    assert_file_error(
        "[limits]\nmax_session_expiry_secs = -1\n",
        "limits.max_session_expiry_secs: must be between 0 and 4294967295, found -1",
    );
    let (_, message) = error("[limits]\nmax_connections = -5\n", &[]);
    assert!(
        message.contains("limits.max_connections: must be between 0 and "),
        "{message}"
    );
}

#[test]
fn invalid_env_values_name_the_variable_and_the_key() {
    let message = load_from(None, env(&[("SUPERMQ_LIMITS_MAX_INFLIGHT", "ten")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "SUPERMQ_LIMITS_MAX_INFLIGHT: limits.max_inflight: expected an integer, found \"ten\""
    );
    let message = load_from(None, env(&[("SUPERMQ_LIMITS_MAX_INFLIGHT", "70000")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "SUPERMQ_LIMITS_MAX_INFLIGHT: limits.max_inflight: must be between 0 and 65535, found 70000"
    );
    // Validation blames the variable, not the file, when the variable set the value.
    let (_, message) = error(
        "[mqtt]\ntcp = \"0.0.0.0:1883\"\n",
        &[("SUPERMQ_MQTT_TCP", "nowhere")],
    );
    assert!(
        message.starts_with("SUPERMQ_MQTT_TCP: mqtt.tcp: \"nowhere\" is not an IP address"),
        "{message}"
    );
}

#[test]
fn toml_syntax_error_gives_line_and_column() {
    let (file, message) = error("[mqtt]\ntcp = \"0.0.0.0:1883\"\ntcp = \"x\"\n", &[]);
    assert_eq!(
        message,
        format!("{file}:3:1: duplicate key (invalid TOML in line \"tcp = \\\"x\\\"\")")
    );
    let (file, message) = error("[limits]\nmax_inflight = \n", &[]);
    assert!(message.starts_with(&format!("{file}:2:")), "{message}");
    assert!(message.contains("max_inflight ="), "{message}");
}

#[test]
fn unreadable_file_is_named() {
    let path = std::env::temp_dir().join("supermq-config-test-does-not-exist.conf");
    let message = load_from(Some(&path), env(&[])).unwrap_err().to_string();
    assert_eq!(
        message,
        format!(
            "{}: cannot read: No such file or directory (os error 2)",
            path.display()
        )
    );
    // A directory is not a configuration file either.
    let dir = std::env::temp_dir();
    let message = load_from(Some(&dir), env(&[])).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: cannot read: ", dir.display())),
        "{message}"
    );
}

#[test]
fn listener_addresses_must_be_ip_and_port() {
    for key in ["tcp", "tls", "ws", "wss"] {
        let (file, message) = error(&format!("[mqtt]\n{key} = \"localhost:1883\"\n"), &[]);
        assert!(
            message.starts_with(&format!(
                "{file}: mqtt.{key}: \"localhost:1883\" is not an IP address and port"
            )),
            "{message}"
        );
    }
    assert_ok("[mqtt]\ntcp = \"[::1]:1883\"\n");
}

#[test]
fn at_least_one_listener() {
    assert_file_error(
        "[mqtt]\ntcp = \"\"\n",
        "mqtt.tcp: no listener is set: mqtt.tcp, mqtt.tls, mqtt.ws and mqtt.wss are all empty",
    );
    let config = assert_ok("[mqtt]\ntcp = \"\"\nws = \"0.0.0.0:8083\"\n");
    assert_eq!(config.mqtt.tcp, "");
}

#[test]
fn tls_listeners_need_cert_and_key() {
    assert_file_error(
        "[mqtt]\ntls = \"0.0.0.0:8883\"\n",
        "mqtt.tls: needs tls.cert and tls.key to be set",
    );
    let cert = TempFile::new("not parsed here");
    assert_file_error(
        &format!(
            "[mqtt]\nwss = \"0.0.0.0:8084\"\n[tls]\ncert = {:?}\n",
            cert.name()
        ),
        "mqtt.wss: needs tls.key to be set",
    );
    let key = TempFile::new("not parsed here");
    let config = assert_ok(&format!(
        "[mqtt]\ntls = \"0.0.0.0:8883\"\nwss = \"0.0.0.0:8084\"\n\
         [tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        cert.name(),
        key.name(),
        cert.name()
    ));
    assert_eq!(config.tls.key, key.name());
}

#[test]
fn tls_files_must_be_readable() {
    let readable = TempFile::new("x");
    let missing = std::env::temp_dir().join("supermq-config-test-missing.pem");
    let missing = missing.display().to_string();
    for key in ["cert", "key", "client_ca"] {
        let mut tls = String::from("[tls]\n");
        for other in ["cert", "key", "client_ca"] {
            let file = if other == key {
                missing.clone()
            } else {
                readable.name()
            };
            tls.push_str(&format!("{other} = {file:?}\n"));
        }
        assert_file_error(
            &tls,
            &format!("tls.{key}: cannot read {missing:?}: No such file or directory (os error 2)"),
        );
    }
    // A directory opens but cannot be read.
    let dir = std::env::temp_dir().display().to_string();
    assert_file_error(
        &format!("[tls]\ncert = {dir:?}\n"),
        &format!("tls.cert: cannot read {dir:?}: Is a directory (os error 21)"),
    );
}

#[test]
fn limits_are_checked_with_the_key_named() {
    // (key, largest rejected, smallest accepted)
    let lower = [
        ("max_connections", 0, 1),
        ("max_packet_size", 15, 16),
        ("max_connect_size", 127, 128),
        ("connect_timeout_secs", 0, 1),
        ("max_pending_connections", 0, 1),
        ("max_inflight", 0, 1),
        ("max_queued_messages", 0, 1),
        ("max_topic_length", 0, 1),
        ("max_topic_levels", 0, 1),
        ("max_subscriptions", 0, 1),
        ("max_client_id_length", 22, 23),
    ];
    for (key, rejected, accepted) in lower {
        let (file, message) = error(&format!("[limits]\n{key} = {rejected}\n"), &[]);
        assert!(
            message.starts_with(&format!("{file}: limits.{key}: must be ")),
            "{message}"
        );
        assert!(message.contains(&format!("found {rejected}")), "{message}");
        assert_ok(&format!("[limits]\n{key} = {accepted}\n"));
    }
    assert_file_error(
        "[limits]\nmax_packet_size = 268435456\n",
        "limits.max_packet_size: must be between 16 and 268435455, found 268435456",
    );
    assert_ok("[limits]\nmax_packet_size = 268435455\n");
    assert_file_error(
        "[limits]\nmax_connect_size = 268435456\n",
        "limits.max_connect_size: must be between 128 and 268435455, found 268435456",
    );
    assert_file_error(
        "[limits]\nmax_topic_length = 65536\n",
        "limits.max_topic_length: must be between 1 and 65535, found 65536",
    );
    assert_ok("[limits]\nmax_topic_length = 65535\n");
    assert_file_error(
        "[limits]\nmax_client_id_length = 22\n",
        "limits.max_client_id_length: must be at least 23, found 22: \
         MQTT servers must accept 23-byte client ids",
    );
    assert_file_error(
        "[limits]\nmax_connect_rate_per_ip = 1000001\n",
        "limits.max_connect_rate_per_ip: must be between 0 and 1000000, found 1000001",
    );
    assert_ok("[limits]\nmax_connect_rate_per_ip = 1000000\n");
    // Zero is meaningful where the file says so.
    assert_ok("[limits]\nmax_keep_alive = 0\nmax_topic_aliases = 0\nmax_retained_messages = 0\n");
}

#[test]
fn admission_limits_default_to_a_pending_cap_and_no_per_ip_limits() {
    let limits = assert_ok("").limits;
    assert_eq!(limits.max_pending_connections, 10_000);
    assert_eq!(limits.max_connect_size, 65_536);
    assert_eq!(limits.max_connections_per_ip, 0, "off");
    assert_eq!(limits.max_connect_rate_per_ip, 0, "off");
    let config = load_from(
        None,
        env(&[
            ("SUPERMQ_LIMITS_MAX_PENDING_CONNECTIONS", "50"),
            ("SUPERMQ_LIMITS_MAX_CONNECTIONS_PER_IP", "20"),
            ("SUPERMQ_LIMITS_MAX_CONNECT_RATE_PER_IP", "5"),
        ]),
    )
    .unwrap();
    assert_eq!(config.limits.max_pending_connections, 50);
    assert_eq!(config.limits.max_connections_per_ip, 20);
    assert_eq!(config.limits.max_connect_rate_per_ip, 5);
    let (_, message) = error("", &[("SUPERMQ_LIMITS_MAX_PENDING_CONNECTIONS", "0")]);
    assert_eq!(
        message,
        "SUPERMQ_LIMITS_MAX_PENDING_CONNECTIONS: limits.max_pending_connections: must be at \
         least 1, found 0"
    );
}

#[test]
fn node_name_must_be_a_word() {
    assert_file_error("[node]\nname = \"\"\n", "node.name: must not be empty");
    assert_file_error(
        "[node]\nname = \"node 1\"\n",
        "node.name: \"node 1\" contains whitespace",
    );
    let message = load_from(None, env(&[("SUPERMQ_NODE_NAME", "a\tb")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        "SUPERMQ_NODE_NAME: node.name: \"a\\tb\" contains whitespace"
    );
}

/// Names and addresses are held to what peers accept in a handshake, so a node never sends
/// one its peers refuse.
#[test]
fn node_names_and_route_addresses_are_what_peers_accept() {
    let long = "n".repeat(256);
    assert_file_error(
        &format!("[node]\nname = \"{long}\"\n"),
        &format!("node.name: \"{long}\" is longer than 255 bytes"),
    );
    assert_ok(&format!("[node]\nname = \"{}\"\n", "n".repeat(255)));
    assert_file_error(
        "[node]\nname = \"a\\u0007b\"\n",
        "node.name: \"a\\u{7}b\" contains a control character",
    );
    assert_file_error(
        &format!("[cluster]\nname = \"{long}\"\n"),
        "cluster.name: is 256 bytes long; peers accept at most 255",
    );
    assert_file_error(
        "[cluster]\nroutes = [\":1\"]\n",
        "cluster.routes: \":1\" is not a HOST:PORT address",
    );
    let address = format!("{}:1", "h".repeat(258));
    assert_file_error(
        &format!("[cluster]\nadvertise = \"{address}\"\n"),
        &format!("cluster.advertise: \"{address}\" is longer than 259 bytes"),
    );
}

#[test]
fn pending_routes_are_bounded() {
    assert_eq!(Config::default().cluster.max_pending_routes, 64);
    assert_file_error(
        "[cluster]\nmax_pending_routes = 0\n",
        "cluster.max_pending_routes: must be at least 1, found 0",
    );
    assert_eq!(
        assert_ok("[cluster]\nmax_pending_routes = 1\n")
            .cluster
            .max_pending_routes,
        1
    );
}

#[test]
fn a_cluster_needs_a_secret_of_16_characters() {
    let listen = "[cluster]\nlisten = \"127.0.0.1:9999\"\n";
    // Not set anywhere, so no file or variable to blame: the key alone.
    assert_eq!(
        error(listen, &[]).1,
        "cluster.secret: must be set when cluster.listen is: every node needs the same secret \
         of at least 16 characters (for example `openssl rand -hex 32`)",
    );
    let (file, message) = error(&format!("{listen}secret = \"fifteen-chars-x\"\n"), &[]);
    assert!(
        message.starts_with(&format!("{file}: cluster.secret: is 15 characters long")),
        "{message}"
    );
    // Characters, not bytes: 8 two-byte characters are 8.
    let (_, message) = error(&format!("{listen}secret = \"éééééééé\"\n"), &[]);
    assert!(message.contains("is 8 characters long"), "{message}");
    // From the environment, the variable is blamed.
    let (_, message) = error(listen, &[("SUPERMQ_CLUSTER_SECRET", "short")]);
    assert!(
        message.starts_with("SUPERMQ_CLUSTER_SECRET: cluster.secret:"),
        "{message}"
    );
    let config = assert_ok(&format!("{listen}secret = \"sixteen-chars-xx\"\n"));
    assert_eq!(config.cluster.secret, "sixteen-chars-xx");
    // No cluster, no secret needed.
    assert_ok("[cluster]\nsecret = \"\"\n");
}

#[test]
fn route_tls_needs_all_three_files_and_names_the_missing_one() {
    let file = TempFile::new("not parsed here");
    let name = file.name();
    for (given, missing) in [
        (vec!["tls_cert"], "tls_key"),
        (vec!["tls_cert", "tls_key"], "tls_ca"),
        (vec!["tls_key", "tls_ca"], "tls_cert"),
        (vec!["tls_ca"], "tls_cert"),
    ] {
        let mut text = String::from("[cluster]\n");
        for key in &given {
            text.push_str(&format!("{key} = {name:?}\n"));
        }
        let (_, message) = error(&text, &[]);
        assert!(
            message.contains(&format!(
                "cluster.{missing}: must be set too, as cluster.{} is",
                given[0]
            )),
            "{given:?}: {message}"
        );
    }
    let missing = std::env::temp_dir().join("supermq-config-test-missing-route.pem");
    let missing = missing.display().to_string();
    assert_file_error(
        &format!("[cluster]\ntls_cert = {name:?}\ntls_key = {missing:?}\ntls_ca = {name:?}\n"),
        &format!(
            "cluster.tls_key: cannot read {missing:?}: No such file or directory (os error 2)"
        ),
    );
    let config = assert_ok(&format!(
        "[cluster]\ntls_cert = {name:?}\ntls_key = {name:?}\ntls_ca = {name:?}\n"
    ));
    assert_eq!(config.cluster.tls_ca, name);
}

#[test]
fn log_level_must_be_a_tracing_filter() {
    let (file, message) = error("[log]\nlevel = \"supermq=loud\"\n", &[]);
    assert!(
        message.starts_with(&format!(
            "{file}: log.level: \"supermq=loud\" is not a tracing filter: "
        )),
        "{message}"
    );
    assert_file_error(
        "[log]\nlevel = \" \"\n",
        "log.level: must not be empty (for example \"info\")",
    );
    assert_ok("[log]\nlevel = \"warn,supermq::broker=trace\"\n");
}

#[test]
fn log_format_is_text_or_json() {
    assert_eq!(Config::default().log.format, "text");
    assert_eq!(assert_ok("[log]\nformat = \"json\"\n").log.format, "json");
    assert_file_error(
        "[log]\nformat = \"xml\"\n",
        "log.format: \"xml\" is not one of \"text\", \"json\"",
    );
    let (_, message) = error("", &[("SUPERMQ_LOG_FORMAT", "JSON")]);
    assert_eq!(
        message,
        "SUPERMQ_LOG_FORMAT: log.format: \"JSON\" is not one of \"text\", \"json\""
    );
}

#[test]
fn sys_interval_is_at_most_a_day_and_0_turns_it_off() {
    assert_eq!(Config::default().sys.interval_secs, 10);
    assert_eq!(assert_ok("[sys]\ninterval_secs = 0\n").sys.interval_secs, 0);
    assert_eq!(
        assert_ok("[sys]\ninterval_secs = 86400\n")
            .sys
            .interval_secs,
        86400
    );
    assert_file_error(
        "[sys]\ninterval_secs = 86401\n",
        "sys.interval_secs: must be between 0 and 86400, found 86401",
    );
    let config = load_from(None, env(&[("SUPERMQ_SYS_INTERVAL_SECS", "1")])).unwrap();
    assert_eq!(config.sys.interval_secs, 1);
}

#[test]
fn validate_on_a_config_built_in_code_names_only_the_key() {
    let mut config = Config::default();
    config.limits.max_inflight = 0;
    assert_eq!(
        config.validate().unwrap_err().to_string(),
        "limits.max_inflight: must be at least 1, found 0"
    );
}

#[test]
fn error_messages_are_one_line_even_for_multi_line_input() {
    // A value with a newline is quoted, not printed raw.
    let (_, message) = error("[mqtt]\ntcp = \"\\n0.0.0.0:1\"\n", &[]);
    assert!(message.contains("mqtt.tcp: \"\\n0.0.0.0:1\""), "{message}");
    let (_, message) = error("[mqtt]\ntcp = \"0.0.0.0:1883\n", &[]);
    assert!(message.contains(":2:"), "{message}");
}

#[test]
fn env_names_follow_the_section_and_key() {
    assert_eq!(
        env_name("limits", "max_inflight"),
        "SUPERMQ_LIMITS_MAX_INFLIGHT"
    );
}

#[test]
fn the_local_cluster_files_are_valid_and_seed_node1_only() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster");
    for (i, name) in ["node1", "node2", "node3"].iter().enumerate() {
        let file = dir.join(format!("{name}.conf"));
        // The secret comes from cluster.sh, through the environment: none is shipped.
        let error = load_from(Some(&file), env(&[])).unwrap_err().to_string();
        assert!(error.contains("cluster.secret: must be set"), "{error}");
        let secret = [("SUPERMQ_CLUSTER_SECRET", "a-secret-of-32-characters-012345")];
        let config = load_from(Some(&file), env(&secret)).unwrap();
        assert_eq!(config.node.name, *name);
        assert_eq!(config.cluster.listen, format!("127.0.0.1:999{}", i + 1));
        let seeds: Vec<String> = if i == 0 {
            vec![]
        } else {
            vec!["127.0.0.1:9991".to_string()]
        };
        assert_eq!(config.cluster.routes, seeds);
    }
}

#[test]
fn auth_files_must_be_readable_and_the_rate_bounded() {
    let missing = std::env::temp_dir().join("supermq-config-test-missing.acl");
    let missing = missing.display().to_string();
    for key in ["password_file", "acl_file"] {
        assert_file_error(
            &format!("[auth]\n{key} = {missing:?}\n"),
            &format!("auth.{key}: cannot read {missing:?}: No such file or directory (os error 2)"),
        );
    }
    assert_file_error(
        "[auth]\nfailed_auth_per_ip_per_sec = 2000000\n",
        "auth.failed_auth_per_ip_per_sec: must be between 0 and 1000000, found 2000000",
    );
    let (_, message) = error("", &[("SUPERMQ_AUTH_ALLOW_ANONYMOUS", "maybe")]);
    assert!(
        message.starts_with("SUPERMQ_AUTH_ALLOW_ANONYMOUS: auth.allow_anonymous"),
        "{message}"
    );
    let readable = TempFile::new("topic read #\n");
    let config = assert_ok(&format!(
        "[auth]\nallow_anonymous = false\nacl_file = {:?}\n",
        readable.name()
    ));
    assert!(!config.auth.allow_anonymous);
    assert_eq!(config.auth.failed_auth_per_ip_per_sec, 2);
}

#[test]
fn certificate_names_need_a_client_ca() {
    assert_file_error(
        "[tls]\nuse_identity_as_username = true\n",
        "tls.use_identity_as_username: needs tls.client_ca: without client certificates there is no identity to use",
    );
}

#[test]
fn the_admin_api_answers_anyone_only_on_loopback() {
    let (_, message) = error("[http]\nlisten = \"0.0.0.0:11883\"\n", &[]);
    assert!(message.contains("http.listen"), "{message}");
    assert!(message.contains("api_keys"), "{message}");
    let (_, message) = error("", &[("SUPERMQ_HTTP_LISTEN", "10.1.2.3:80")]);
    assert!(message.contains("http.listen"), "{message}");
    let (_, message) = error("[http]\nlisten = \"nowhere\"\n", &[]);
    assert!(message.contains("http.listen"), "{message}");
    let (_, result) = load_text("[http]\nlisten = \"[::1]:11883\"\n", &[]);
    assert!(result.is_ok(), "loopback needs no key");
    let (_, result) = load_text("[http]\nlisten = \"\"\n", &[]);
    assert_eq!(result.expect("off").http.listen, "");
}

#[test]
fn malformed_api_keys_stop_start_up_naming_the_key() {
    for keys in [
        r#"["nohash"]"#,
        r#"["a:root:$7$101$abc$def"]"#,
        r#"["a:admin:not-a-hash"]"#,
    ] {
        let (_, message) = error(&format!("[http]\napi_keys = {keys}\n"), &[]);
        assert!(message.contains("http.api_keys"), "{keys}: {message}");
    }
}

#[test]
fn a_list_from_the_environment_may_be_a_toml_array_for_items_with_commas() {
    let key = "k:viewer:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let (_, result) = load_text("", &[("SUPERMQ_HTTP_API_KEYS", &format!("[\"{key}\"]"))]);
    let config = result.expect("loads");
    assert_eq!(config.http.api_keys, [key]);
    let (_, message) = error("", &[("SUPERMQ_HTTP_API_KEYS", "[not toml")]);
    assert!(message.contains("SUPERMQ_HTTP_API_KEYS"), "{message}");
}

#[test]
fn worker_threads_are_the_setting_or_one_per_core_but_one() {
    let (_, set) = load_text("[node]\nthreads = 3\n", &[]);
    assert_eq!(set.expect("valid").node.worker_threads(), 3);
    let (_, default) = load_text("", &[]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        default.expect("valid").node.worker_threads(),
        cores.saturating_sub(1).max(1),
        "{cores} cores"
    );
}

//! The options of `serve`: names, precedence, defaults, help.

use super::*;
use clap::Parser;

#[derive(Parser)]
struct T {
    #[command(flatten)]
    a: ServeArgs,
}

#[test]
fn flags_win_over_the_file_and_the_file_over_defaults() {
    let dir = std::env::temp_dir().join(format!("sb-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9999\"\nmax_connections = 7\nping_interval = 0\napi_key = \"k\"\nmax_messages_per_second = 30\n",
    )
    .unwrap();
    let t = T::parse_from([
        "x",
        "--config",
        file.to_str().unwrap(),
        "--max-connections",
        "9",
    ]);
    let s = settings(t.a).unwrap();
    assert_eq!(s.listen.port(), 9999);
    assert_eq!(s.config.limits.max_connections, 9);
    assert_eq!(s.config.heartbeat.ping_interval, None);
    assert_eq!(s.config.api_keys, ["k"]);
    assert_eq!(s.config.limits.max_connections_per_ip, 1000);
    assert_eq!(s.config.limits.max_messages_per_second, 30);
    assert_eq!(s.config.limits.max_bytes_per_second, 0);

    std::fs::write(&file, "max_conections = 7\n").unwrap();
    let t = T::parse_from(["x", "--config", file.to_str().unwrap()]);
    let err = format!("{:#}", settings(t.a).err().unwrap());
    assert!(err.contains("unknown field `max_conections`"), "{err}");
}

/// Item 13: every option has one name: `--some-option`, `SWITCHBOARD_SOME_OPTION` and
/// `some_option` in the file (only --config itself is not a file key).
#[test]
fn every_option_has_one_name_across_flag_environment_and_file() {
    use clap::CommandFactory;
    let cmd = T::command();
    let mut checked = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "help" {
            continue;
        }
        let key = long.replace('-', "_");
        let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
        assert_eq!(
            env,
            format!("SWITCHBOARD_{}", key.to_ascii_uppercase()),
            "--{long}"
        );
        if long == "config" {
            continue;
        }
        // A wrong value is fine here; an unknown key is not.
        let err = toml::from_str::<FileConfig>(&format!("{key} = []\n"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!err.contains("unknown field"), "--{long}: {err}");
        checked += 1;
    }
    assert!(checked > 20, "{checked}");
}

/// One source of defaults: `serve` with no options runs `ServerConfig::default()` (but
/// for io_uring, which it turns on where it works), permessage-deflate included.
#[test]
fn serve_without_options_runs_the_library_defaults() {
    let s = settings(T::parse_from(["x"]).a).unwrap();
    assert_eq!(s.config.clone().io_uring(false), ServerConfig::default());
    assert!(s.config.ws.deflate.is_some() && s.config.echo.deflate.is_some());
    // An empty config file changes nothing either.
    let dir = std::env::temp_dir().join(format!("sb-cfg-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("empty.toml");
    std::fs::write(&file, "").unwrap();
    let s = settings(T::parse_from(["x", "--config", file.to_str().unwrap()]).a).unwrap();
    assert_eq!(s.config.io_uring(false), ServerConfig::default());
}

/// Each option lands in its setting, and the deflate options build on the library's.
#[test]
fn options_land_in_their_settings() {
    let s = settings(
        T::parse_from([
            "x",
            "--max-message-size",
            "1000",
            "--echo-max-message-size",
            "2000",
            "--idle-timeout",
            "0",
            "--slow-consumer",
            "drop-oldest",
            "--history-size",
            "3",
            "--history-ttl",
            "90s",
            "--deflate-window-bits",
            "10",
            "--max-messages-per-second",
            "50",
            "--max-bytes-per-second",
            "65536",
            "--max-new-connections-per-second-per-ip",
            "20",
        ])
        .a,
    )
    .unwrap();
    let c = s.config;
    assert_eq!((c.ws.max_message_size, c.ws.max_frame_size), (1000, 1000));
    assert_eq!(c.ws.max_write_buffer, 4 << 20);
    assert_eq!(c.echo.max_message_size, 2000);
    assert_eq!(c.heartbeat.idle_timeout, None);
    assert_eq!(c.outbox.policy, SlowConsumerPolicy::DropOldest);
    assert_eq!(c.hub.history_size, 3);
    assert_eq!(c.hub.history_ttl, Duration::from_secs(90));
    let l = c.limits;
    assert_eq!(
        (
            l.max_messages_per_second,
            l.max_bytes_per_second,
            l.max_new_connections_per_second_per_ip
        ),
        (50, 65536, 20)
    );
    let d = c.ws.deflate.unwrap();
    assert_eq!(
        (d.server_max_window_bits, d.client_max_window_bits),
        (10, 10)
    );
    assert_eq!(d.threshold, DEFLATE_THRESHOLD);
    assert!(d.server_no_context_takeover);
    assert_eq!(c.echo.deflate, Some(d));

    let c = settings(T::parse_from(["x", "--deflate-context-takeover"]).a)
        .unwrap()
        .config;
    let d = c.ws.deflate.unwrap();
    assert!(!d.server_no_context_takeover && !d.client_no_context_takeover);
    assert_eq!(d.threshold, DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER);
    let c = settings(T::parse_from(["x", "--deflate", "off"]).a)
        .unwrap()
        .config;
    assert_eq!((c.ws.deflate, c.echo.deflate), (None, None));
    assert!(c.http2.enabled, "HTTP/2 is on by default");
    let c = settings(T::parse_from(["x", "--no-http2"]).a)
        .unwrap()
        .config;
    assert!(!c.http2.enabled);
    let c = settings(T::parse_from(["x", "--no-http2", "false"]).a)
        .unwrap()
        .config;
    assert!(c.http2.enabled);
}

/// `--help` shows the library's default of every server option, and no option's help
/// writes one of its own.
#[test]
fn help_shows_the_library_defaults() {
    use clap::CommandFactory;
    let mut cmd = T::command().term_width(1000);
    let help = cmd.render_long_help().to_string();
    let c = ServerConfig::default();
    for shown in [
        format!("[default: {}]", c.ws.max_message_size),
        format!("[default: {}]", c.limits.max_connections),
        "[default: 30s]".to_string(),
        "[default: 1h]".to_string(),
        "[default: on]".to_string(),
        "[default: 5m]".to_string(),
        format!("[default: {}]", c.hub.history_size),
        format!("[default: {DEFLATE_THRESHOLD}; {DEFLATE_THRESHOLD_WITH_CONTEXT_TAKEOVER} with context takeover]"),
    ] {
        assert!(help.contains(&shown), "{shown} missing in\n{help}");
    }
    let mut with_default = 0;
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let text = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string);
        let text = text.unwrap_or_default();
        assert!(!text.is_empty(), "--{id} has no help");
        let shown = text.matches("[default: ").count();
        match library_default(id) {
            Some(d) => {
                assert!(text.ends_with(&format!("[default: {d}]")), "--{id}: {text}");
                assert_eq!(shown, 1, "--{id}: {text}");
                with_default += 1;
            }
            None => assert!(shown <= 1, "--{id}: {text}"),
        }
    }
    assert_eq!(with_default, 27, "every server setting has its option");
}

/// Zero-config `serve` uses io_uring where it works (and says which transport in the
/// log); `--io-uring false` forces epoll. Huge pages are off unless asked for.
#[test]
fn io_uring_is_the_default_where_it_works_and_false_turns_it_off() {
    let s = settings(T::parse_from(["x"]).a).unwrap();
    #[cfg(target_os = "linux")]
    assert_eq!(
        s.config.io_uring,
        switchboard_server::check_transport(&ServerConfig::default().io_uring(true)).is_ok(),
        "{}",
        s.transport
    );
    assert_eq!(s.transport.starts_with("io_uring"), s.config.io_uring);
    assert!(!s.huge_pages);

    let s = settings(T::parse_from(["x", "--io-uring", "false", "--huge-pages"]).a).unwrap();
    assert!(!s.config.io_uring);
    assert_eq!(s.transport, "epoll (io_uring turned off)");
    assert!(s.huge_pages);
}

/// `--engine` and `--redis-url`: memory by default; redis on the default URL or the one
/// given; a URL without `--engine redis`, or one that is not a Redis URL, is a mistake that
/// says what to write.
#[test]
fn the_engine_is_memory_unless_redis_is_asked_for() {
    let engine = |args: &[&str]| {
        let mut all = vec!["x", "--io-uring", "false"];
        all.extend_from_slice(args);
        settings(T::parse_from(all).a).map(|s| s.engine)
    };
    assert_eq!(engine(&[]).unwrap(), EngineChoice::Memory);
    assert_eq!(
        engine(&["--engine", "redis"]).unwrap(),
        EngineChoice::Redis(DEFAULT_REDIS_URL.into())
    );
    assert_eq!(
        engine(&[
            "--engine",
            "redis",
            "--redis-url",
            "redis://10.0.0.2:6380/1"
        ])
        .unwrap(),
        EngineChoice::Redis("redis://10.0.0.2:6380/1".into())
    );
    let err = format!("{:#}", engine(&["--redis-url", "redis://h/0"]).unwrap_err());
    assert!(err.contains("add --engine redis"), "{err}");
    let err = format!(
        "{:#}",
        engine(&["--engine", "redis", "--redis-url", "h:6379"]).unwrap_err()
    );
    assert!(err.contains("write redis://HOST:PORT/DB"), "{err}");

    let dir = std::env::temp_dir().join(format!("sb-engine-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "engine = \"redis\"\nredis_url = \"redis://r:1/0\"\n").unwrap();
    assert_eq!(
        engine(&["--config", file.to_str().unwrap()]).unwrap(),
        EngineChoice::Redis("redis://r:1/0".into())
    );
    std::fs::write(&file, "engine = \"nats\"\n").unwrap();
    let err = format!(
        "{:#}",
        engine(&["--config", file.to_str().unwrap()]).unwrap_err()
    );
    assert!(err.contains("not one of memory, redis"), "{err}");
}

/// `[topics]` and `[namespaces.NAME]` (file only) land in `ServerConfig::namespaces`, next
/// to the top-level history bounds every namespace starts from; help says they are
/// file-only.
#[test]
fn namespaces_come_from_the_file() {
    use switchboard_server::{NamespaceRules, Namespaces, PublishRule, SubscribeRule};
    let dir = std::env::temp_dir().join(format!("sb-cfg-ns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ns.toml");
    std::fs::write(
        &file,
        "history_size = 7\n[topics]\npublish = \"subscribers\"\n[namespaces.private]\nsubscribe = \"authenticated\"\njoin_leave = true\nhistory_ttl = \"1m\"\n",
    )
    .unwrap();
    let s = settings(T::parse_from(["x", "--config", file.to_str().unwrap()]).a).unwrap();
    let want = Namespaces::default()
        .topics(NamespaceRules::open().publish(PublishRule::Subscribers))
        .namespace(
            "private",
            NamespaceRules::closed()
                .subscribe(SubscribeRule::Authenticated)
                .join_leave(true)
                .history_ttl(Duration::from_secs(60)),
        );
    assert_eq!(s.config.namespaces, want);
    assert_eq!(s.config.hub.history_size, 7);

    std::fs::write(&file, "[namespaces.private]\npublish = \"everyone\"\n").unwrap();
    let t = T::parse_from(["x", "--config", file.to_str().unwrap()]);
    let err = format!("{:#}", settings(t.a).err().unwrap());
    assert!(
        err.contains("publish = \"everyone\": write \"nobody\""),
        "{err}"
    );

    use clap::CommandFactory;
    let help = T::command().render_long_help().to_string();
    assert!(help.contains("Namespaces (file only, no flags)"), "{help}");
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sb-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

fn settings_of(args: &[&str]) -> anyhow::Result<Settings> {
    let mut all = vec!["x", "--io-uring", "false"];
    all.extend_from_slice(args);
    settings(T::parse_from(all).a)
}

/// Several API keys: the flag repeated or comma-separated, or a list in the file (a single
/// string still works); flags win over the file.
#[test]
fn several_api_keys_from_flags_or_the_file() {
    let keys = |args: &[&str]| settings_of(args).unwrap().config.api_keys;
    assert_eq!(keys(&["--api-key", "a", "--api-key", "b"]), ["a", "b"]);
    assert_eq!(keys(&["--api-key", "a,b"]), ["a", "b"]);
    assert!(keys(&[]).is_empty());
    let file = temp_config("keys.toml", "api_key = [\"f1\", \"f2\"]\n");
    let f = file.to_str().unwrap();
    assert_eq!(keys(&["--config", f]), ["f1", "f2"]);
    assert_eq!(keys(&["--config", f, "--api-key", "flag"]), ["flag"]);
    let one = temp_config("key.toml", "api_key = \"only\"\n");
    assert_eq!(keys(&["--config", one.to_str().unwrap()]), ["only"]);
}

/// The JWT options land in the JWT settings, from flags or the file; without a key there
/// are none (the zero-config server stays as it was).
#[test]
fn jwt_options_land_in_their_settings() {
    let s = settings_of(&[]).unwrap();
    assert_eq!(s.jwt, None);
    let jwt = settings_of(&[
        "--jwt-hmac-secret",
        "old,new",
        "--jwt-public-key",
        "/k/rsa.pem",
        "--jwt-public-key",
        "/k/ec.pem",
        "--jwks",
        "https://auth.example/jwks.json",
        "--jwks-refresh",
        "1m",
        "--jwks-ca-file",
        "/k/ca.pem",
        "--jwt-algorithm",
        "RS256",
        "--jwt-algorithm",
        "ES256",
        "--allow-anonymous",
    ])
    .unwrap()
    .jwt
    .unwrap();
    assert_eq!(jwt.hmac_secrets, ["old", "new"]);
    assert_eq!(
        jwt.public_keys,
        [PathBuf::from("/k/rsa.pem"), PathBuf::from("/k/ec.pem")]
    );
    assert_eq!(jwt.jwks.as_deref(), Some("https://auth.example/jwks.json"));
    assert_eq!(jwt.jwks_refresh, Some(Duration::from_secs(60)));
    assert_eq!(jwt.jwks_ca_file, Some(PathBuf::from("/k/ca.pem")));
    assert_eq!(jwt.algorithms, ["RS256", "ES256"]);
    assert!(jwt.allow_anonymous);
    assert_eq!(
        jwt.summary(),
        "2 HMAC secrets, 2 public keys, JWKS https://auth.example/jwks.json, algorithms RS256, ES256"
    );
    assert!(!format!("{jwt:?}").contains("old"), "{jwt:?}");

    let file = temp_config(
        "jwt.toml",
        "jwt_hmac_secret = \"file-secret\"\njwt_public_key = \"/k/one.pem\"\n\
         jwks = \"/k/jwks.json\"\njwks_refresh = \"30s\"\njwt_algorithm = [\"HS256\"]\n\
         allow_anonymous = true\n",
    );
    let f = file.to_str().unwrap();
    let jwt = settings_of(&["--config", f]).unwrap().jwt.unwrap();
    assert_eq!(jwt.hmac_secrets, ["file-secret"]);
    assert_eq!(jwt.public_keys, [PathBuf::from("/k/one.pem")]);
    assert_eq!(jwt.jwks.as_deref(), Some("/k/jwks.json"));
    assert_eq!(jwt.jwks_refresh, Some(Duration::from_secs(30)));
    assert_eq!(jwt.algorithms, ["HS256"]);
    assert!(jwt.allow_anonymous);
    let jwt = settings_of(&[
        "--config",
        f,
        "--jwt-hmac-secret",
        "flag",
        "--allow-anonymous",
        "false",
    ])
    .unwrap()
    .jwt
    .unwrap();
    assert_eq!(jwt.hmac_secrets, ["flag"]);
    assert!(!jwt.allow_anonymous);
}

/// JWT options that need a key (or a JWKS) without one are mistakes that say what to add.
#[test]
fn jwt_options_without_their_key_say_what_to_add() {
    let err = |args: &[&str]| format!("{:#}", settings_of(args).err().unwrap());
    let e = err(&["--allow-anonymous"]);
    assert!(
        e.starts_with("--allow-anonymous needs a key") && e.contains("add --jwt-hmac-secret"),
        "{e}"
    );
    let e = err(&["--jwt-algorithm", "HS256"]);
    assert!(
        e.contains("add --jwt-hmac-secret, --jwt-public-key or --jwks"),
        "{e}"
    );
    let e = err(&["--jwt-hmac-secret", "s", "--jwks-refresh", "1m"]);
    assert!(e.contains("add --jwks URL_OR_FILE"), "{e}");
    let e = err(&["--jwt-hmac-secret", "s", "--jwks-ca-file", "/ca.pem"]);
    assert!(e.contains("add --jwks URL_OR_FILE"), "{e}");
    let e = err(&["--jwks", "/j.json", "--jwks-refresh", "0"]);
    assert!(e.contains("--jwks-refresh must be more than 0"), "{e}");
    let file = temp_config(
        "alg.toml",
        "jwt_hmac_secret = \"s\"\njwt_algorithm = \"none\"\n",
    );
    let e = err(&["--config", file.to_str().unwrap()]);
    assert!(
        e.contains("jwt_algorithm \"none\" is not one of HS256"),
        "{e}"
    );
    // Without any of them, an empty secret is no secret.
    assert_eq!(settings_of(&["--jwt-hmac-secret", ""]).unwrap().jwt, None);
}

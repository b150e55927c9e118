//! The proxy handshakes against scripted proxies: what we send (CONNECT with basic auth,
//! SOCKS5 with the host name for remote DNS), what each answer becomes (the tunnel, or an
//! error that says what the proxy said), and that nothing past the answer is read.

use std::future::Future;
use std::time::Duration;

use switchboard_tokio::proxy::{Proxy, ProxyError, ProxyStep};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(5);

/// A proxy on 127.0.0.1 that runs `script` on its first connection; its port.
async fn scripted<F, Fut>(script: F) -> u16
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        script(tcp).await;
    });
    port
}

/// Reads an HTTP request head.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

/// A scripted HTTP proxy that checks the request with `check` and answers `answer`.
async fn http_proxy(check: fn(&str), answer: &'static [u8]) -> u16 {
    scripted(move |mut tcp| async move {
        let head = read_head(&mut tcp).await;
        check(&head);
        tcp.write_all(answer).await.unwrap();
        // Keep the connection open a while: the client decides.
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await
}

async fn tunnel_err(url: &str, host: &str) -> ProxyError {
    let proxy = Proxy::parse(url).unwrap();
    match proxy.tunnel(host, 9000, PATIENCE).await {
        Ok(_) => panic!("{url}: tunnel opened"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn connect_sends_basic_auth_and_leaves_the_tunnel_bytes_alone() {
    let port = http_proxy(
        |head| {
            assert!(
                head.starts_with("CONNECT example.test:9000 HTTP/1.1\r\n"),
                "{head}"
            );
            assert!(head.contains("\r\nHost: example.test:9000\r\n"), "{head}");
            // alice:s@cret
            assert!(
                head.contains("\r\nProxy-Authorization: Basic YWxpY2U6c0BjcmV0\r\n"),
                "{head}"
            );
        },
        b"HTTP/1.1 200 Connection established\r\nVia: test\r\n\r\nfrom the server",
    )
    .await;
    let proxy = Proxy::parse(&format!("http://alice:s%40cret@127.0.0.1:{port}")).unwrap();
    let (mut tcp, info) = proxy.tunnel("example.test", 9000, PATIENCE).await.unwrap();
    let mut rest = vec![0u8; 15];
    tcp.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, b"from the server");
    let lines: Vec<_> = info
        .lines
        .iter()
        .map(|l| (l.to_proxy, l.text.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (true, "CONNECT example.test:9000 HTTP/1.1"),
            (false, "HTTP/1.1 200 Connection established")
        ]
    );
    let shown = format!("{info:?}");
    assert!(
        !shown.contains("YWxpY2U6c0BjcmV0") && !shown.contains("s@cret"),
        "{shown}"
    );
}

#[tokio::test]
async fn connect_brackets_ipv6_targets() {
    let port = http_proxy(
        |head| {
            assert!(
                head.starts_with("CONNECT [::1]:9000 HTTP/1.1\r\n"),
                "{head}"
            )
        },
        b"HTTP/1.0 200 OK\r\n\r\n",
    )
    .await;
    let proxy = Proxy::parse(&format!("127.0.0.1:{port}")).unwrap();
    proxy.tunnel("::1", 9000, PATIENCE).await.unwrap();
}

#[tokio::test]
async fn a_refusal_shows_the_status_line() {
    let port = http_proxy(
        |_| {},
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n",
    )
    .await;
    let e = tunnel_err(&format!("http://127.0.0.1:{port}"), "example.test").await;
    assert!(
        matches!(e, ProxyError::Refused { status: 403, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(r#"answered "HTTP/1.1 403 Forbidden""#),
        "{msg}"
    );
    assert!(msg.contains("CONNECT example.test:9000"), "{msg}");
}

#[tokio::test]
async fn a_407_says_where_the_credentials_go() {
    let answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"corp\"\r\n\r\n";
    let port = http_proxy(
        |head| assert!(!head.contains("Proxy-Authorization")),
        answer,
    )
    .await;
    let e = tunnel_err(&format!("http://127.0.0.1:{port}"), "example.test").await;
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            ProxyError::AuthRequired {
                sent_credentials: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("user:password") && msg.contains("Basic realm=\"corp\""),
        "{msg}"
    );
    let port = http_proxy(|head| assert!(head.contains("Proxy-Authorization")), answer).await;
    let e = tunnel_err(
        &format!("http://bob:wrong@127.0.0.1:{port}"),
        "example.test",
    )
    .await;
    assert!(
        e.to_string().contains("refused the user and password"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "{e}");
}

#[tokio::test]
async fn answers_that_are_not_http_or_too_long_are_errors() {
    let port = http_proxy(|_| {}, b"SSH-2.0-OpenSSH_9.2\r\n\r\n").await;
    let e = tunnel_err(&format!("127.0.0.1:{port}"), "h").await;
    assert!(
        e.to_string().contains("not HTTP") && e.to_string().contains("SSH-2.0"),
        "{e}"
    );
    let port = http_proxy(|_| {}, b"\x05\x00").await;
    let e = tunnel_err(&format!("127.0.0.1:{port}"), "h").await;
    assert!(e.to_string().contains("socks5://"), "{e}");
    let port = scripted(|mut tcp| async move {
        read_head(&mut tcp).await;
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        while long.len() < 10_000 {
            long.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let _ = tcp.write_all(&long).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let e = tunnel_err(&format!("127.0.0.1:{port}"), "h").await;
    assert!(matches!(e, ProxyError::BadAnswer { .. }), "{e:?}");
    let port = scripted(|mut tcp| async move {
        read_head(&mut tcp).await;
        let _ = tcp.write_all(b"HTTP/1.1 200 OK\r\n").await;
    })
    .await;
    let e = tunnel_err(&format!("127.0.0.1:{port}"), "h").await;
    assert!(matches!(e, ProxyError::Closed { .. }), "{e:?}");
}

#[tokio::test]
async fn a_silent_proxy_times_out_in_the_handshake_step() {
    let port = scripted(|tcp| async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(tcp);
    })
    .await;
    let proxy = Proxy::parse(&format!("127.0.0.1:{port}")).unwrap();
    let t0 = std::time::Instant::now();
    let e = proxy
        .tunnel("h", 1, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(
            e,
            ProxyError::Timeout {
                step: ProxyStep::Handshake,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("proxy handshake"), "{e}");
}

/// A scripted SOCKS5 proxy: expects `greeting` (and `auth`), answers `method` (and
/// `auth_status`), expects `request`, answers `reply`.
struct Socks {
    greeting: &'static [u8],
    method: u8,
    auth: Option<&'static [u8]>,
    auth_status: u8,
    request: Vec<u8>,
    reply: Vec<u8>,
}

async fn socks_proxy(s: Socks) -> u16 {
    scripted(move |mut tcp| async move {
        let mut got = vec![0u8; s.greeting.len()];
        tcp.read_exact(&mut got).await.unwrap();
        assert_eq!(got, s.greeting);
        tcp.write_all(&[5, s.method]).await.unwrap();
        if s.method == 0xff {
            return;
        }
        if let Some(auth) = s.auth {
            let mut got = vec![0u8; auth.len()];
            tcp.read_exact(&mut got).await.unwrap();
            assert_eq!(got, auth);
            tcp.write_all(&[1, s.auth_status]).await.unwrap();
            if s.auth_status != 0 {
                return;
            }
        }
        let mut got = vec![0u8; s.request.len()];
        tcp.read_exact(&mut got).await.unwrap();
        assert_eq!(got, s.request);
        tcp.write_all(&s.reply).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await
}

/// `CONNECT example.test:9000` by name (ATYP 3).
fn by_name() -> Vec<u8> {
    let mut r = vec![5, 1, 0, 3, 12];
    r.extend_from_slice(b"example.test");
    r.extend_from_slice(&9000u16.to_be_bytes());
    r
}

#[tokio::test]
async fn socks5_sends_the_host_name_and_authenticates() {
    let mut reply = vec![5, 0, 0, 1, 127, 0, 0, 1, 0x30, 0x39];
    reply.extend_from_slice(b"from the server");
    let port = socks_proxy(Socks {
        greeting: &[5, 2, 0, 2],
        method: 2,
        auth: Some(b"\x01\x05alice\x06secret"),
        auth_status: 0,
        request: by_name(),
        reply,
    })
    .await;
    let proxy = Proxy::parse(&format!("socks5://alice:secret@127.0.0.1:{port}")).unwrap();
    let (mut tcp, info) = proxy.tunnel("example.test", 9000, PATIENCE).await.unwrap();
    let mut rest = vec![0u8; 15];
    tcp.read_exact(&mut rest).await.unwrap();
    assert_eq!(rest, b"from the server");
    let last = info.lines.last().unwrap();
    assert_eq!(last.text, "SOCKS5 succeeded, bound to 127.0.0.1:12345");
    assert!(info
        .lines
        .iter()
        .any(|l| l.text.contains("resolved by the proxy")));
    assert!(!format!("{info:?}").contains("secret"));
}

#[tokio::test]
async fn socks5_sends_addresses_as_addresses() {
    let mut request = vec![5, 1, 0, 4];
    request.extend_from_slice(&"::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    request.extend_from_slice(&9000u16.to_be_bytes());
    let mut reply = vec![5, 0, 0, 3, 4];
    reply.extend_from_slice(b"bndh\x00\x50");
    let port = socks_proxy(Socks {
        greeting: &[5, 1, 0],
        method: 0,
        auth: None,
        auth_status: 0,
        request,
        reply,
    })
    .await;
    let proxy = Proxy::parse(&format!("socks5h://127.0.0.1:{port}")).unwrap();
    let (_, info) = proxy.tunnel("::1", 9000, PATIENCE).await.unwrap();
    assert_eq!(
        info.lines.last().unwrap().text,
        "SOCKS5 succeeded, bound to bndh:80"
    );
}

#[tokio::test]
async fn socks5_reply_codes_are_named() {
    for (code, meaning) in [
        (1, "general SOCKS server failure"),
        (2, "connection not allowed by ruleset"),
        (3, "network unreachable"),
        (4, "host unreachable"),
        (5, "connection refused"),
        (6, "TTL expired"),
        (7, "command not supported"),
        (8, "address type not supported"),
        (0x42, "unassigned"),
    ] {
        let port = socks_proxy(Socks {
            greeting: &[5, 1, 0],
            method: 0,
            auth: None,
            auth_status: 0,
            request: by_name(),
            reply: vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0],
        })
        .await;
        let e = tunnel_err(&format!("socks5://127.0.0.1:{port}"), "example.test").await;
        assert!(
            matches!(e, ProxyError::SocksReply { code: c, .. } if c == code),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(meaning) && msg.contains("example.test:9000"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn socks5_auth_refusals_say_what_to_do() {
    let port = socks_proxy(Socks {
        greeting: &[5, 1, 0],
        method: 0xff,
        auth: None,
        auth_status: 0,
        request: vec![],
        reply: vec![],
    })
    .await;
    let e = tunnel_err(&format!("socks5://127.0.0.1:{port}"), "example.test").await;
    assert!(
        matches!(e, ProxyError::SocksNoAcceptableMethod { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("socks5://user:password@"), "{e}");
    let port = socks_proxy(Socks {
        greeting: &[5, 2, 0, 2],
        method: 2,
        auth: Some(b"\x01\x01u\x01p"),
        auth_status: 1,
        request: vec![],
        reply: vec![],
    })
    .await;
    let e = tunnel_err(&format!("socks5://u:p@127.0.0.1:{port}"), "example.test").await;
    assert!(
        matches!(e, ProxyError::SocksAuthFailed { status: 1, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("refused the user name and password"),
        "{e}"
    );
}

#[tokio::test]
async fn socks5_to_an_http_proxy_says_so() {
    let port = scripted(|mut tcp| async move {
        let mut b = [0u8; 3];
        let _ = tcp.read_exact(&mut b).await;
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    })
    .await;
    let e = tunnel_err(&format!("socks5://127.0.0.1:{port}"), "h").await;
    assert!(e.to_string().contains("use http://"), "{e}");
}

#[tokio::test]
async fn unusable_targets_and_credentials_are_refused_before_sending() {
    let proxy = Proxy::parse("socks5://127.0.0.1:1").unwrap();
    let long = "a".repeat(256);
    for host in ["bad host", "x\r\nInjected: yes", ""] {
        let e = proxy.tunnel(host, 1, PATIENCE).await.unwrap_err();
        assert!(
            matches!(e, ProxyError::Unsupported { .. }),
            "{host:?}: {e:?}"
        );
    }
    // Checked after connecting, before anything is sent.
    let port = scripted(|tcp| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(tcp);
    })
    .await;
    let proxy = Proxy::parse(&format!("socks5://127.0.0.1:{port}")).unwrap();
    let e = proxy.tunnel(&long, 1, PATIENCE).await.unwrap_err();
    assert!(e.to_string().contains("255"), "{e}");
}

#[tokio::test]
async fn a_proxy_that_is_not_there_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = tunnel_err(&format!("127.0.0.1:{port}"), "h").await;
    assert!(matches!(e, ProxyError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot connect to the proxy"), "{e}");
}

/// Random answers never panic and never hang past the timeout: they open a tunnel or fail.
#[tokio::test]
async fn random_answers_are_errors_not_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..200 {
        let len = (next() % 64) as usize;
        let mut answer: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Half of them start like a plausible answer.
        if i % 2 == 0 {
            let prefix: &[u8] = if i % 4 == 0 { b"HTTP/1.1 " } else { &[5, 0, 5] };
            answer.splice(0..0, prefix.iter().copied());
        }
        let port = scripted(move |mut tcp| async move {
            let mut b = [0u8; 512];
            let _ = tcp.read(&mut b).await;
            let _ = tcp.write_all(&answer).await;
        })
        .await;
        let scheme = if i % 3 == 0 { "socks5" } else { "http" };
        let proxy = Proxy::parse(&format!("{scheme}://127.0.0.1:{port}")).unwrap();
        let _ = proxy.tunnel("h", 1, Duration::from_millis(500)).await;
    }
}

//! Rate limits per client: messages and bytes a second on `/ws` and `/chat` (a flooding
//! client is warned with `rate_limited`, then closed with 1008, while the others go on),
//! and new connections a second per address (429 with `Retry-After: 1`, then back after a
//! second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchboard_proto::{Event, Message};
use switchboard_server::{Limits, ServerConfig};
use switchboard_testkit::server::{
    metrics, next_json, next_of, raw_handshake, send_json, start, ws,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn limited(set: impl FnOnce(&mut Limits)) -> ServerConfig {
    let mut limits = Limits::default();
    set(&mut limits);
    ServerConfig::default().limits(limits)
}

/// What a flooding client saw.
struct Flood {
    /// Every text message it got, as JSON, in order.
    got: Vec<Value>,
    /// The close code the server sent.
    close: Option<u16>,
    /// From the `rate_limited` warning to the close frame.
    warned_for: Duration,
}

impl Flood {
    fn errors(&self) -> Vec<&Value> {
        self.got.iter().filter(|v| v["type"] == "error").collect()
    }
}

/// Connects to `path` and sends `msg(0)`, `msg(1)`, …: the first `burst` at once, then
/// one every 2 ms (far over any limit the tests set), until the server closes.
async fn flood(
    addr: std::net::SocketAddr,
    path: &str,
    burst: usize,
    msg: impl Fn(usize) -> Message + Send + 'static,
) -> Flood {
    let (mut rd, wr) = ws(addr, path).await.split();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let writer = tokio::spawn(async move {
        for i in 0..burst {
            if wr.feed(&msg(i)).is_err() {
                return;
            }
        }
        let mut i = burst;
        while !stopped.load(Ordering::Relaxed) && i < 5_000 {
            if wr.send(&msg(i)).await.is_err() {
                return;
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut got = Vec::new();
    let mut warned = None;
    let close = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), rd.next_event())
            .await
            .expect("the flooding client is closed in time");
        match event {
            Ok(Some(Event::Message(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                if v["code"] == "rate_limited" {
                    warned.get_or_insert_with(Instant::now);
                }
                got.push(v);
            }
            Ok(Some(Event::Close(f))) => break f.map(|f| f.code.0),
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break None,
        }
    };
    let warned_for = warned.expect("a rate_limited warning").elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    Flood {
        got,
        close,
        warned_for,
    }
}

fn publish(topic: &str, i: usize, pad: usize) -> Message {
    let data = "x".repeat(pad);
    Message::text(
        serde_json::json!({"type":"publish","topic":topic,"data":data,"id":i}).to_string(),
    )
}

/// Publishes ten times on `/ws`, ten a second, and gets each ack and delivery: a calm
/// client, which must not notice the flood on another connection.
async fn calm_ws_client(addr: std::net::SocketAddr) {
    let mut b = ws(addr, "/ws").await;
    send_json(
        &mut b,
        serde_json::json!({"type":"subscribe","topic":"news","id":"s"}),
    )
    .await;
    assert_eq!(next_json(&mut b).await["type"], "ack");
    for i in 0..10 {
        b.send(&publish("news", i, 0)).await.unwrap();
        let (x, y) = (next_json(&mut b).await, next_json(&mut b).await);
        let (ack, msg) = if x["type"] == "ack" { (x, y) } else { (y, x) };
        assert_eq!(
            (ack["type"].as_str(), &ack["id"]),
            (Some("ack"), &Value::from(i))
        );
        assert_eq!(msg["type"], "message", "{msg}");
        assert_eq!(msg["offset"], i + 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The flood's warning is the one error it gets, says the limit, and is followed by the
/// close (1008) a second later; nothing more than the limit's worth got through.
fn check_flood(f: &Flood, says: &str) {
    let errors = f.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["code"], "rate_limited");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains(says), "{message}");
    assert_eq!(f.close, Some(1008));
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&f.warned_for),
        "closed {:?} after the warning",
        f.warned_for
    );
}

#[tokio::test]
async fn a_flooding_ws_client_is_warned_then_closed_while_others_go_on() {
    let srv = start(limited(|l| l.max_messages_per_second = 20)).await;
    let flooding = tokio::spawn(flood(srv.addr, "/ws", 30, |i| publish("flood", i, 0)));
    calm_ws_client(srv.addr).await;
    let f = flooding.await.unwrap();
    check_flood(&f, "20 messages a second");
    // The burst (a second's worth) got through, in order, then the warning; the rest at
    // about the rate until the close.
    let warning = f.got.iter().position(|v| v["type"] == "error").unwrap();
    assert!((20..=21).contains(&warning), "warned after {warning}");
    for (i, ack) in f.got[..warning].iter().enumerate() {
        assert_eq!(
            (ack["type"].as_str(), &ack["id"]),
            (Some("ack"), &Value::from(i))
        );
    }
    let acks = f.got.iter().filter(|v| v["type"] == "ack").count();
    assert!(acks <= warning + 20 * 4, "{acks} acks");
    let m = metrics(srv.addr).await;
    for line in [
        "switchboard_rate_limit_disconnects_total 1\n",
        "switchboard_close_codes_total{code=\"1008\",direction=\"sent\"} 1\n",
        "switchboard_rate_limited_total{limit=\"bytes\"} 0\n",
        "switchboard_rate_limited_total{limit=\"connections\"} 0\n",
    ] {
        assert!(m.contains(line), "{line} missing in\n{m}");
    }
    let dropped = metric(&m, "switchboard_rate_limited_total{limit=\"messages\"}");
    assert!(dropped >= 30 - 21, "{dropped} dropped");
    srv.stop().await;
}

#[tokio::test]
async fn a_flooding_chat_client_is_warned_then_closed_while_others_go_on() {
    let srv = start(limited(|l| l.max_messages_per_second = 20)).await;
    let said = |i: usize| {
        Message::text(serde_json::json!({"type":"message","text":format!("m{i}")}).to_string())
    };
    let flooding = tokio::spawn(flood(srv.addr, "/chat?room=loud&name=Flo", 30, said));
    // Another room's member chats on, ten a second.
    let mut calm = ws(srv.addr, "/chat?room=quiet&name=Cal").await;
    next_of(&mut calm, "welcome").await;
    for i in 0..10 {
        send_json(
            &mut calm,
            serde_json::json!({"type":"message","text":format!("c{i}")}),
        )
        .await;
        let m = loop {
            let v = next_json(&mut calm).await;
            assert_ne!(v["type"], "error", "{v}");
            if v["type"] == "message" {
                break v;
            }
        };
        assert_eq!(m["text"], format!("c{i}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(calm);
    let f = flooding.await.unwrap();
    check_flood(&f, "20 messages a second");
    let texts: Vec<&str> = f
        .got
        .iter()
        .filter(|v| v["type"] == "message")
        .filter_map(|v| v["text"].as_str())
        .collect();
    let burst: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(texts[..20], burst[..], "the burst went through in order");
    assert!(texts.len() <= 21 + 20 * 4, "{} got through", texts.len());
    srv.stop().await;
}

#[tokio::test]
async fn bytes_a_second_are_limited_too() {
    let srv = start(limited(|l| l.max_bytes_per_second = 2_000)).await;
    // 200-byte messages: ten a second.
    let sized = |i: usize| {
        let m = publish("bytes", i, 0);
        let pad = 200 - m.payload().len();
        publish("bytes", i, pad)
    };
    assert_eq!(sized(7).payload().len(), 200);
    let flooding = tokio::spawn(flood(srv.addr, "/ws", 15, sized));
    calm_ws_client(srv.addr).await;
    let f = flooding.await.unwrap();
    check_flood(&f, "2000 bytes a second");
    let warning = f.got.iter().position(|v| v["type"] == "error").unwrap();
    assert!((10..=11).contains(&warning), "warned after {warning}");
    let m = metrics(srv.addr).await;
    assert!(metric(&m, "switchboard_rate_limited_total{limit=\"bytes\"}") >= 4);
    assert!(m.contains("switchboard_rate_limited_total{limit=\"messages\"} 0\n"));
    srv.stop().await;
}

/// Without limits (the default) a client may send as fast as it likes.
#[tokio::test]
async fn no_limit_by_default() {
    let srv = start(ServerConfig::default()).await;
    let mut a = ws(srv.addr, "/ws").await;
    for i in 0..2_000 {
        a.send(&publish("fast", i, 100)).await.unwrap();
    }
    for i in 0..2_000 {
        let ack = next_json(&mut a).await;
        assert_eq!(
            (ack["type"].as_str(), &ack["id"]),
            (Some("ack"), &Value::from(i))
        );
    }
    drop(a);
    let m = metrics(srv.addr).await;
    assert!(m.contains("switchboard_rate_limited_total{limit=\"messages\"} 0\n"));
    srv.stop().await;
}

/// A plain HTTP request on a new connection from `from`; the whole response.
async fn get_from(from: &str, addr: std::net::SocketAddr, path: &str) -> String {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = s.connect(addr).await.unwrap();
    // One request, then the end of the connection (read to the end below).
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn new_connections_a_second_per_address_get_429_then_recover() {
    let srv = start(limited(|l| l.max_new_connections_per_second_per_ip = 2)).await;
    let started = Instant::now();
    for _ in 0..2 {
        let r = get_from("127.0.0.1", srv.addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    }
    // The third connection within the second: plain HTTP and WebSocket alike.
    let r = get_from("127.0.0.1", srv.addr, "/healthz").await;
    assert!(r.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{r}");
    assert!(r.contains("\r\nRetry-After: 1\r\n"), "{r}");
    assert!(r.ends_with("(limit 2 a second); try again in a second (operators: raise --max-new-connections-per-second-per-ip)\n"), "{r}");
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let head = raw_handshake(&mut s, "/ws", "").await.unwrap();
    assert!(
        head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nRetry-After: 1\r\n"), "{head}");
    // All within the burst's second (else the bucket refilled and the test proves less).
    assert!(started.elapsed() < Duration::from_millis(450));
    // Another address is not affected.
    let r = get_from("127.0.0.2", srv.addr, "/healthz").await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    // A second later, back in.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let mut back = ws(srv.addr, "/echo").await;
    back.send(&Message::text("again")).await.unwrap();
    assert_eq!(back.recv().await.unwrap(), Some(Message::text("again")));
    drop(back);
    let m = metrics(srv.addr).await;
    for line in [
        "switchboard_rate_limited_total{limit=\"connections\"} 2\n",
        "switchboard_handshakes_total{outcome=\"rejected\",reason=\"rate_limit\",http=\"1.1\"} 1\n",
        "switchboard_http_requests_total{method=\"GET\",status=\"429\"} 1\n",
    ] {
        assert!(m.contains(line), "{line} missing in\n{m}");
    }
    srv.stop().await;
}

/// The value of the metric line that starts with `name `.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
}

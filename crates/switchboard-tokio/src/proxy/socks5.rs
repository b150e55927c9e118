//! The SOCKS5 handshake (RFC 1928), with user name and password (RFC 1929) when the proxy
//! URL has them. The host name goes to the proxy as it is, and the proxy resolves it (remote
//! DNS, what `socks5h://` means elsewhere); an IP address goes as an address. Every read has
//! an exact length, so nothing past the proxy's reply is read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::ProxyError;
use super::tunnel::{io_error, TunnelInfo};
use super::url::{host_port, Proxy};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 1;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// Greeting, authentication if asked for, then `CONNECT host:port`.
pub(super) async fn handshake(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
    info: &mut TunnelInfo,
) -> Result<(), ProxyError> {
    // Check what we will send before sending anything.
    let request = connect_request(proxy, host, port)?;
    let auth = proxy
        .credentials()
        .map(|c| auth_request(proxy, c))
        .transpose()?;
    let (greeting, offered): (&[u8], _) = if auth.is_some() {
        (
            &[VERSION, 2, NO_AUTH, USER_PASSWORD],
            "no authentication, user/password",
        )
    } else {
        (&[VERSION, 1, NO_AUTH], "no authentication")
    };
    send(tcp, proxy, greeting).await?;
    info.sent(format!("SOCKS5 hello, methods: {offered}"), vec![]);
    let [version, method] = read_array(tcp, proxy).await?;
    check_version(proxy, version)?;
    match (method, &auth) {
        (NO_AUTH, _) => info.received("SOCKS5 method: no authentication", vec![]),
        (USER_PASSWORD, Some((bytes, user))) => {
            info.received("SOCKS5 method: user/password", vec![]);
            send(tcp, proxy, bytes).await?;
            info.sent(
                format!("SOCKS5 user/password: user {user}, password ***"),
                vec![],
            );
            let [_, status] = read_array(tcp, proxy).await?;
            if status != 0 {
                info.received(
                    format!("SOCKS5 user/password refused (status {status})"),
                    vec![],
                );
                return Err(ProxyError::SocksAuthFailed {
                    proxy: proxy.to_string(),
                    status,
                });
            }
            info.received("SOCKS5 user/password accepted", vec![]);
        }
        (NO_ACCEPTABLE, _) => {
            info.received("SOCKS5 method: none acceptable", vec![]);
            return Err(ProxyError::SocksNoAcceptableMethod {
                proxy: proxy.to_string(),
                offered,
                sent_credentials: auth.is_some(),
            });
        }
        (other, _) => {
            return Err(bad(
                proxy,
                format!("it chose authentication method {other:#04x}, which we did not offer"),
            ))
        }
    }
    send(tcp, proxy, &request).await?;
    let how = if host.parse::<IpAddr>().is_ok() {
        "address"
    } else {
        "host name, resolved by the proxy"
    };
    info.sent(
        format!("SOCKS5 CONNECT {} ({how})", host_port(host, port)),
        vec![],
    );
    let bound = read_reply(tcp, proxy, host, port, info).await?;
    info.received(format!("SOCKS5 succeeded, bound to {bound}"), vec![]);
    Ok(())
}

/// `VER CMD RSV ATYP DST.ADDR DST.PORT`.
fn connect_request(proxy: &Proxy, host: &str, port: u16) -> Result<Vec<u8>, ProxyError> {
    let mut req = vec![VERSION, CMD_CONNECT, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => {
            req.push(ATYP_V4);
            req.extend_from_slice(&a.octets());
        }
        Ok(IpAddr::V6(a)) => {
            req.push(ATYP_V6);
            req.extend_from_slice(&a.octets());
        }
        Err(_) => {
            let len = u8::try_from(host.len()).map_err(|_| ProxyError::Unsupported {
                proxy: proxy.to_string(),
                reason: "SOCKS5 carries host names of at most 255 bytes".into(),
            })?;
            req.push(ATYP_DOMAIN);
            req.push(len);
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    Ok(req)
}

/// RFC 1929: `VER ULEN UNAME PLEN PASSWD`, and the user name for the trace.
fn auth_request(
    proxy: &Proxy,
    (user, password): (&str, &str),
) -> Result<(Vec<u8>, String), ProxyError> {
    let too_long = || ProxyError::Unsupported {
        proxy: proxy.to_string(),
        reason: "SOCKS5 user names and passwords are 1 to 255 bytes".into(),
    };
    let ulen = u8::try_from(user.len()).map_err(|_| too_long())?;
    let plen = u8::try_from(password.len()).map_err(|_| too_long())?;
    if ulen == 0 {
        return Err(too_long());
    }
    let mut req = vec![1, ulen];
    req.extend_from_slice(user.as_bytes());
    req.push(plen);
    req.extend_from_slice(password.as_bytes());
    Ok((req, user.to_string()))
}

/// `VER REP RSV ATYP BND.ADDR BND.PORT`: the bound address on success.
async fn read_reply(
    tcp: &mut TcpStream,
    proxy: &Proxy,
    host: &str,
    port: u16,
    info: &mut TunnelInfo,
) -> Result<String, ProxyError> {
    let [version, code, _, atyp] = read_array(tcp, proxy).await?;
    check_version(proxy, version)?;
    if code != 0 {
        let meaning = super::error::socks_reply_meaning(code);
        info.received(format!("SOCKS5 reply {code}: {meaning}"), vec![]);
        return Err(ProxyError::SocksReply {
            proxy: proxy.to_string(),
            target: host_port(host, port),
            code,
        });
    }
    let addr = match atyp {
        ATYP_V4 => Ipv4Addr::from(read_array::<4>(tcp, proxy).await?).to_string(),
        ATYP_V6 => Ipv6Addr::from(read_array::<16>(tcp, proxy).await?).to_string(),
        ATYP_DOMAIN => {
            let [len] = read_array(tcp, proxy).await?;
            let mut name = vec![0; usize::from(len)];
            tcp.read_exact(&mut name)
                .await
                .map_err(|e| io_error(proxy, e))?;
            super::tunnel::printable(&name, 255)
        }
        other => {
            return Err(bad(
                proxy,
                format!("its reply has address type {other}, which SOCKS5 does not define"),
            ))
        }
    };
    let bound_port = u16::from_be_bytes(read_array(tcp, proxy).await?);
    Ok(host_port(&addr, bound_port))
}

fn check_version(proxy: &Proxy, version: u8) -> Result<(), ProxyError> {
    match version {
        VERSION => Ok(()),
        b'H' => Err(bad(
            proxy,
            "it answered in HTTP, not SOCKS5: use http:// for this proxy".into(),
        )),
        v => Err(bad(
            proxy,
            format!("its answer is not SOCKS5 (version byte {v:#04x})"),
        )),
    }
}

fn bad(proxy: &Proxy, reason: String) -> ProxyError {
    ProxyError::BadAnswer {
        proxy: proxy.to_string(),
        reason,
    }
}

async fn send(tcp: &mut TcpStream, proxy: &Proxy, bytes: &[u8]) -> Result<(), ProxyError> {
    tcp.write_all(bytes).await.map_err(|e| io_error(proxy, e))
}

async fn read_array<const N: usize>(
    tcp: &mut TcpStream,
    proxy: &Proxy,
) -> Result<[u8; N], ProxyError> {
    let mut buf = [0u8; N];
    tcp.read_exact(&mut buf)
        .await
        .map_err(|e| io_error(proxy, e))?;
    Ok(buf)
}

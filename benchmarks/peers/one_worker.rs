//! What the Rust peers share, included by each with `#[path]` (they are separate binaries):
//! `--listen ADDR`, a tokio multi-thread runtime with exactly ONE worker thread (like
//! `switchboard serve --workers 1`), and an accept loop that turns TCP_NODELAY on (like
//! Switchboard) and serves every socket on its own task.

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};

/// Parses `--listen ADDR` (default `default_listen`), then accepts on it for ever, running
/// `serve(socket)` as a task per connection.
pub fn run<F, Fut>(name: &str, default_listen: &str, serve: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listen = listen_arg(name, default_listen)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&listen).await?;
        eprintln!("{name} listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve(stream));
        }
    })
}

fn listen_arg(name: &str, default_listen: &str) -> anyhow::Result<String> {
    let mut args = std::env::args().skip(1);
    let mut listen = default_listen.to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs ADDR"))?
            }
            "-h" | "--help" => {
                println!("{name} [--listen ADDR]");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?} (usage: --listen ADDR)"),
        }
    }
    Ok(listen)
}

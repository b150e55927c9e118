//! The Autobahn TestSuite client driver: runs every case of a `wstest -m fuzzingserver`.
//!
//! ```sh
//! cargo run --release --example autobahn_client -- ws://127.0.0.1:9001 [AGENT]
//! ```
//!
//! It asks the fuzzing server for the number of cases, echoes every message of each case
//! until the server closes, then asks the server to write its reports.

use switchboard_tokio::proto::extension::DeflateConfig;
use switchboard_tokio::{ClientBuilder, Config, Error};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().ok_or(
        "usage: autobahn_client URL [AGENT]   (URL: the fuzzing server, e.g. ws://127.0.0.1:9001)",
    )?;
    let base = base.trim_end_matches('/').to_string();
    let agent = args.next().unwrap_or_else(|| "switchboard".to_string());
    // 9.x sends 16 MiB messages and 4 MiB messages in 65,536 fragments.
    // Offer permessage-deflate (12.x/13.x). `client_no_context_takeover` in the offer lets the
    // suite's servers that require it (13.2, 13.5-13.7) accept; we then never keep context.
    let deflate = DeflateConfig::default()
        .client_no_context_takeover(true)
        .threshold(0);
    let config = Config::default()
        .max_message_size(64 << 20)
        .max_frame_size(64 << 20)
        .max_write_buffer(128 << 20)
        .deflate(Some(deflate));

    let count: u32 = {
        let (mut ws, _) = ClientBuilder::new(format!("{base}/getCaseCount"))
            .config(config)
            .connect()
            .await?;
        let msg = ws.recv().await?.ok_or("no case count received")?;
        let text = String::from_utf8_lossy(msg.payload()).to_string();
        let _ = ws.recv().await;
        text.trim().parse()?
    };
    eprintln!("autobahn_client: {count} cases against {base} as {agent}");

    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match run_case(&url, config).await {
            Ok(()) => {}
            Err(e) => eprintln!("case {case}: {e}"),
        }
        if case % 50 == 0 || case == count {
            eprintln!("autobahn_client: {case}/{count} cases run");
        }
    }

    let (mut ws, _) = ClientBuilder::new(format!("{base}/updateReports?agent={agent}"))
        .config(config)
        .connect()
        .await?;
    while ws.recv().await?.is_some() {}
    Ok(())
}

async fn run_case(url: &str, config: Config) -> Result<(), Error> {
    let (mut ws, _) = ClientBuilder::new(url).config(config).connect().await?;
    while let Some(msg) = ws.recv().await? {
        ws.feed(&msg)?;
    }
    Ok(())
}

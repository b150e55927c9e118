//! The io_uring echo path (`poll_next_event` on a `UringStream`, as `serve`'s `/echo` uses
//! it) allocates nothing per message once warm: received buffers are lent and reclaimed,
//! large replies are sent by reference with reused send states, small ones copied into
//! reused buffers.
#![cfg(all(feature = "io-uring", target_os = "linux"))]
#![allow(unsafe_code)] // a counting global allocator needs it; test-only

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use switchboard_tokio::uring::{before_park, UringStream};
use switchboard_tokio::{accept, connect, CloseCode, Config, Event, Message};

thread_local! {
    /// Whether this thread's allocations are counted, and how many there were.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// The sizes of the first few counted, for the failure message.
    static SIZES: Cell<[usize; 8]> = const { Cell::new([0; 8]) };
}

struct Counting;

fn count(size: usize) {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let n = ALLOCS.try_with(|a| {
            a.set(a.get() + 1);
            a.get()
        });
        if let Ok(n @ 1..=8) = n {
            let _ = SIZES.try_with(|s| {
                let mut v = s.get();
                v[n as usize - 1] = size;
                s.set(v);
            });
        }
    }
}

// SAFETY: forwards to the system allocator; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const WARM_UP: u64 = 400;
const MEASURED: u64 = 4000;

#[test]
fn taking_echo_does_not_allocate_per_message() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // The server runs on its own thread, whose allocations alone are counted.
    let server = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(before_park)
            .build()
            .unwrap()
            .block_on(async move {
                let (tcp, _) = listener.accept().unwrap();
                tcp.set_nodelay(true).unwrap();
                let mut ws = accept(UringStream::new(tcp).unwrap(), Config::default())
                    .await
                    .unwrap();
                let mut seen = 0;
                let mut allocs = None;
                loop {
                    match std::future::poll_fn(|cx| ws.poll_next_event(cx)).await {
                        Ok(Some(Event::Message(m))) => {
                            seen += 1;
                            if seen == WARM_UP {
                                COUNTING.with(|c| c.set(true));
                            } else if seen == WARM_UP + MEASURED {
                                COUNTING.with(|c| c.set(false));
                                allocs = Some((ALLOCS.with(Cell::get), SIZES.with(Cell::get)));
                            }
                            ws.feed(&m).unwrap();
                        }
                        Ok(Some(Event::Close(_))) => {
                            let _ = ws.finish().await;
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
                allocs
            })
    });
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let (mut ws, _) = connect(&format!("ws://{addr}/")).await.unwrap();
            // Large (sent by reference), mid-sized and small (copied) messages in turn.
            let msgs = [
                Message::binary(vec![7u8; 16 * 1024]),
                Message::binary(vec![8u8; 1024]),
                Message::text("twenty bytes of text"),
            ];
            for i in 0..WARM_UP + MEASURED {
                let m = &msgs[(i % 3) as usize];
                ws.send(m).await.unwrap();
                assert_eq!(ws.recv().await.unwrap().as_ref(), Some(m));
            }
            ws.close(CloseCode::NORMAL, "done").await.unwrap();
        });
    let (allocs, sizes) = server
        .join()
        .unwrap()
        .expect("the server saw every message");
    assert_eq!(
        allocs, 0,
        "{allocs} allocations on the server's thread in {MEASURED} echoes (the first sizes: \
         {sizes:?})"
    );
}

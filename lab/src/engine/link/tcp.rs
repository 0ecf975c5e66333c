//! The TCP link proxy: one listening socket per directed link `from -> to`.
//!
//! Each accepted connection is forwarded to `to`'s current address. Bytes from the caller obey
//! link `from -> to`; bytes coming back obey link `to -> from`:
//! - `delay`: each chunk is delivered `delay ± jitter` after it was read, in order (TCP never
//!   reorders, so a chunk never overtakes the one before it);
//! - `rate`: chunks leave no faster than the rate, and the reader stops reading when the queue
//!   is full, so the sender feels back-pressure as it would on a slow link;
//! - `loss P%`: a chunk is held one retransmission timeout (200 ms) with probability P, which is
//!   what loss does to TCP;
//! - a partition on either direction cuts the connections that cross it, because TCP needs both
//!   directions (data one way, ACKs the other): open connections are reset when it is applied;
//!   new ones are reset at once (`reject`) or held, with nothing forwarded, until it heals
//!   (`partition`/`blackhole`: a pulled cable).

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::faults::{Cut, LinkFaults, TCP_RETRANSMIT_STALL};
use super::{Dice, LinkId, LinkProxy, Links, ProxyHandle};

/// Bytes read per chunk.
const CHUNK: usize = 64 * 1024;
/// Chunks queued per direction before the reader stops reading (back-pressure).
const QUEUE: usize = 32;

/// Counters of one proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub bytes_forward: AtomicU64,
    pub bytes_back: AtomicU64,
    pub resets: AtomicU64,
}

/// A TCP proxy for one directed link. Dropping it closes its listener and every connection.
/// A proxy for one directed link; dropping it stops it.
pub type TcpLinkProxy = LinkProxy<ProxyStats>;

impl TcpLinkProxy {
    pub async fn bind(link: LinkId, links: Arc<Links>, seed: u64) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (handle, target_rx, stop) = ProxyHandle::new(link.clone(), addr);
        let stats = Arc::new(ProxyStats::default());
        tokio::spawn(accept_loop(
            listener,
            link.clone(),
            links,
            target_rx,
            stats.clone(),
            stop,
            seed,
        ));
        Ok(Self { handle, stats })
    }
}

async fn accept_loop(
    listener: TcpListener,
    link: LinkId,
    links: Arc<Links>,
    target: watch::Receiver<Option<SocketAddr>>,
    stats: Arc<ProxyStats>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut serial = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let Ok((inbound, _)) = accepted else { continue };
        serial += 1;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(
            inbound,
            link.clone(),
            links.clone(),
            target.clone(),
            stats.clone(),
            stop.child_token(),
            seed.wrapping_add(serial.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        ));
    }
}

/// Whether either direction is cut, and how.
fn cut_of(
    forward: &watch::Receiver<LinkFaults>,
    back: &watch::Receiver<LinkFaults>,
) -> Option<Cut> {
    match (forward.borrow().cut, back.borrow().cut) {
        (Some(Cut::Reject), _) | (_, Some(Cut::Reject)) => Some(Cut::Reject),
        (Some(Cut::Blackhole), _) | (_, Some(Cut::Blackhole)) => Some(Cut::Blackhole),
        (None, None) => None,
    }
}

async fn connection(
    inbound: TcpStream,
    link: LinkId,
    links: Arc<Links>,
    mut target: watch::Receiver<Option<SocketAddr>>,
    stats: Arc<ProxyStats>,
    stop: CancellationToken,
    seed: u64,
) {
    let mut forward = links.watch(&link);
    let mut back = links.watch(&link.reverse());
    let _ = inbound.set_nodelay(true);

    // Until the link is whole and the target known, hold the connection (or refuse it).
    let target_addr = loop {
        match cut_of(&forward, &back) {
            Some(Cut::Reject) => return reset(&[&inbound], &stats),
            Some(Cut::Blackhole) => {}
            None => {
                if let Some(addr) = *target.borrow_and_update() {
                    break addr;
                }
            }
        }
        tokio::select! {
            _ = forward.changed() => {}
            _ = back.changed() => {}
            _ = target.changed() => {}
            () = stop.cancelled() => return,
        }
    };
    let upstream = match TcpStream::connect(target_addr).await {
        Ok(upstream) => upstream,
        // What the caller would see connecting to a dead node.
        Err(_) => return reset(&[&inbound], &stats),
    };
    let _ = upstream.set_nodelay(true);
    let inbound = Arc::new(inbound);
    let upstream = Arc::new(upstream);

    let pumps = futures_join(
        pump(
            inbound.clone(),
            upstream.clone(),
            forward.clone(),
            Dice::new(seed, &link),
            &stats.bytes_forward,
        ),
        pump(
            upstream.clone(),
            inbound.clone(),
            back.clone(),
            Dice::new(seed, &link.reverse()),
            &stats.bytes_back,
        ),
    );
    let cut = async {
        loop {
            tokio::select! {
                changed = forward.changed() => if changed.is_err() { return },
                changed = back.changed() => if changed.is_err() { return },
            }
            if cut_of(&forward, &back).is_some() {
                return;
            }
        }
    };
    tokio::select! {
        _ = pumps => {}
        () = cut => reset(&[&inbound, &upstream], &stats),
        () = stop.cancelled() => reset(&[&inbound, &upstream], &stats),
    }
}

/// Runs both directions to completion.
async fn futures_join(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    tokio::join!(a, b);
}

/// Closes sockets with RST rather than FIN: the other side sees "connection reset".
fn reset(sockets: &[&TcpStream], stats: &ProxyStats) {
    stats.resets.fetch_add(1, Ordering::Relaxed);
    for socket in sockets {
        let _ = socket2::SockRef::from(*socket).set_linger(Some(Duration::ZERO));
        let _ = socket2::SockRef::from(*socket).shutdown(Shutdown::Both);
    }
}

/// One direction of a connection: read chunks, schedule them by the link's faults, write them
/// in order when due. Ends after forwarding EOF (as a FIN) or on an I/O error.
async fn pump(
    from: Arc<TcpStream>,
    to: Arc<TcpStream>,
    faults: watch::Receiver<LinkFaults>,
    mut dice: Dice,
    bytes: &AtomicU64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(QUEUE);
    let reader = async move {
        let mut schedule = Schedule::default();
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = match read_some(&from, &mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now(), None)).await;
                    return;
                }
                Ok(n) => n,
            };
            buf.truncate(n);
            let current = *faults.borrow();
            let due = schedule.due(Instant::now(), &current, &mut dice, n);
            if tx.send((due, Some(buf))).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            match chunk {
                Some(data) => {
                    if write_all(&to, &data).await.is_err() {
                        return;
                    }
                    bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                None => {
                    let _ = socket2::SockRef::from(&*to).shutdown(Shutdown::Write);
                    return;
                }
            }
        }
    };
    tokio::join!(reader, writer);
}

/// When each chunk of one direction is due, given the link's faults.
#[derive(Default)]
struct Schedule {
    /// The link is busy sending until then (rate limiting).
    busy_until: Option<Instant>,
    /// The previous chunk's due time: TCP delivers in order.
    last_due: Option<Instant>,
}

impl Schedule {
    fn due(&mut self, now: Instant, faults: &LinkFaults, dice: &mut Dice, len: usize) -> Instant {
        let mut sent = now;
        if let Some(rate) = faults.rate {
            let start = self.busy_until.map_or(now, |busy| busy.max(now));
            sent = start + Duration::from_secs_f64(len as f64 / rate as f64);
            self.busy_until = Some(sent);
        }
        let mut due = sent + dice.delay(faults.delay);
        if dice.lose(faults.loss) {
            due += TCP_RETRANSMIT_STALL;
        }
        if let Some(last) = self.last_due {
            due = due.max(last);
        }
        self.last_due = Some(due);
        due
    }
}

async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::link::LinkFaults;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = socket.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn proxy() -> (TcpLinkProxy, Arc<Links>, LinkId) {
        let links = Arc::new(Links::new());
        let link = LinkId::new("n1", "n2");
        let proxy = TcpLinkProxy::bind(link.clone(), links.clone(), 1)
            .await
            .unwrap();
        proxy.set_target(echo_server().await);
        (proxy, links, link)
    }

    /// Sends `msg` and waits up to `within` for it to come back.
    async fn round_trip(stream: &mut TcpStream, msg: &[u8], within: Duration) -> Option<Duration> {
        let started = std::time::Instant::now();
        stream.write_all(msg).await.ok()?;
        let mut back = vec![0u8; msg.len()];
        match tokio::time::timeout(within, stream.read_exact(&mut back)).await {
            Ok(Ok(_)) if back == msg => Some(started.elapsed()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_healthy_link_forwards_both_ways() {
        let (proxy, _, _) = proxy().await;
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert!(
            round_trip(&mut stream, b"ping", Duration::from_secs(5))
                .await
                .is_some()
        );
        assert_eq!(proxy.stats().bytes_forward.load(Ordering::Relaxed), 4);
        assert_eq!(proxy.stats().bytes_back.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_partition_cuts_open_connections_stalls_new_ones_and_heal_restores() {
        let (proxy, links, link) = proxy().await;
        let mut open = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert!(
            round_trip(&mut open, b"before", Duration::from_secs(5))
                .await
                .is_some()
        );

        links.set(&link, LinkFaults::parse("partition").unwrap());
        let mut buf = [0u8; 8];
        let cut = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(cut, Ok(0) | Err(_)),
            "the open connection was cut: {cut:?}"
        );

        let mut stalled = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert!(
            round_trip(&mut stalled, b"during", Duration::from_millis(300))
                .await
                .is_none(),
            "nothing crosses a partition"
        );

        links.set(&link, LinkFaults::default());
        let mut back = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), stalled.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &back, b"during",
            "the held connection went through after the heal"
        );
    }

    #[tokio::test]
    async fn a_one_way_partition_stops_tcp_in_both_directions() {
        let (proxy, links, link) = proxy().await;
        // Only the replies' direction is cut; TCP still cannot work.
        links.set(&link.reverse(), LinkFaults::parse("partition").unwrap());
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert!(
            round_trip(&mut stream, b"x", Duration::from_millis(300))
                .await
                .is_none()
        );
    }

    #[tokio::test]
    async fn reject_resets_connections() {
        let (proxy, links, link) = proxy().await;
        links.set(&link, LinkFaults::parse("reject").unwrap());
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(proxy.stats().resets.load(Ordering::Relaxed) >= 1);
    }

    #[tokio::test]
    async fn delay_adds_what_it_says_per_direction() {
        let (proxy, links, link) = proxy().await;
        links.set(&link, LinkFaults::parse("delay 60ms").unwrap());
        links.set(&link.reverse(), LinkFaults::parse("delay 40ms").unwrap());
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let rtt = round_trip(&mut stream, b"ping", Duration::from_secs(5))
            .await
            .unwrap();
        assert!(rtt >= Duration::from_millis(100), "{rtt:?}");
        assert!(rtt < Duration::from_millis(600), "{rtt:?}");
    }

    #[tokio::test]
    async fn rate_limits_throughput() {
        let (proxy, links, link) = proxy().await;
        links.set(&link, LinkFaults::parse("rate 400kbps").unwrap());
        let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
        // 200 KB at 400 KB/s takes at least half a second.
        let payload = vec![7u8; 200_000];
        let took = round_trip(&mut stream, &payload, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(took >= Duration::from_millis(450), "{took:?}");
    }
}

//! Links between a worker and each broker that the harness controls: a TCP proxy per broker
//! on loopback, which the broker advertises on a listener of its own (`PROXIED`). A client
//! that bootstraps through a proxy gets the proxies' addresses in metadata, so every one of
//! its connections passes through them; the harness's own clients and the brokers' traffic
//! among themselves do not. A link can be cut (bytes stop flowing both ways, connections stay
//! open and new ones are accepted but carry nothing — a partition, as TCP sees one: the
//! client's requests time out) or slowed (each chunk forwarded after a delay), and healed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::{ClusterError, ClusterResult};

/// What a link does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Forwarded at once.
    Open,
    /// Held: nothing flows until the link is healed.
    Cut,
    /// Each chunk forwarded after this delay.
    Slow(Duration),
}

/// One broker's link: its state, shared by every connection through it.
struct Link {
    state: Mutex<LinkState>,
    changed: Condvar,
    /// Open connections (both ends), shut down when the proxy closes.
    conns: Mutex<Vec<TcpStream>>,
    closed: AtomicBool,
}

impl Link {
    /// Wait until bytes may flow, then return the delay to apply; `None` once closed.
    fn wait_open(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return None;
            }
            match *state {
                LinkState::Open => return Some(Duration::ZERO),
                LinkState::Slow(d) => return Some(d),
                LinkState::Cut => {
                    state = self
                        .changed
                        .wait_timeout(state, Duration::from_millis(200))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// A proxy per broker; the ports are bound when the proxy is made, before the brokers start,
/// so that they can advertise them.
pub(crate) struct LinkProxy {
    ports: Vec<u16>,
    links: Vec<Arc<Link>>,
    listeners: Mutex<Vec<TcpListener>>,
}

impl LinkProxy {
    /// Bind one loopback port per broker. Nothing is forwarded until [`LinkProxy::start`].
    pub(crate) fn bind(brokers: usize) -> ClusterResult<LinkProxy> {
        let mut listeners = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..brokers {
            let l = TcpListener::bind("127.0.0.1:0").map_err(|e| ClusterError::Process {
                during: "binding a link proxy port".into(),
                source: e,
            })?;
            let port = l
                .local_addr()
                .map(|a| a.port())
                .map_err(|e| ClusterError::Process {
                    during: "reading a link proxy port".into(),
                    source: e,
                })?;
            ports.push(port);
            listeners.push(l);
        }
        let links = (0..brokers)
            .map(|_| {
                Arc::new(Link {
                    state: Mutex::new(LinkState::Open),
                    changed: Condvar::new(),
                    conns: Mutex::new(Vec::new()),
                    closed: AtomicBool::new(false),
                })
            })
            .collect();
        Ok(LinkProxy {
            ports,
            links,
            listeners: Mutex::new(listeners),
        })
    }

    /// The port broker `i` must advertise on its proxied listener.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Forward broker `i`'s proxy port to `upstreams[i]` (the broker's proxied listener).
    pub(crate) fn start(&self, upstreams: &[SocketAddr]) -> ClusterResult<()> {
        let listeners =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|p| p.into_inner()));
        for ((listener, link), upstream) in listeners.into_iter().zip(&self.links).zip(upstreams) {
            let link = link.clone();
            let upstream = *upstream;
            std::thread::Builder::new()
                .name("kafka-harness-link".into())
                .spawn(move || accept_loop(listener, link, upstream))
                .map_err(|e| ClusterError::Process {
                    during: "starting a link proxy thread".into(),
                    source: e,
                })?;
        }
        Ok(())
    }

    /// Loopback bootstrap through the proxies.
    pub(crate) fn bootstrap(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Set broker `i`'s link (every broker's with `None`).
    pub(crate) fn set(&self, broker: Option<usize>, state: LinkState) {
        for (i, link) in self.links.iter().enumerate() {
            if broker.is_none_or(|b| b == i) {
                *link.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
                link.changed.notify_all();
            }
        }
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        for (link, port) in self.links.iter().zip(&self.ports) {
            link.closed.store(true, Ordering::SeqCst);
            link.changed.notify_all();
            for c in link
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                let _ = c.shutdown(Shutdown::Both);
            }
            // Wake the accept loop so that it sees `closed`.
            let _ = TcpStream::connect(("127.0.0.1", *port));
        }
    }
}

fn accept_loop(listener: TcpListener, link: Arc<Link>, upstream: SocketAddr) {
    for client in listener.incoming() {
        if link.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            // Out of descriptors, say: do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let link = link.clone();
        let _ = std::thread::Builder::new()
            .name("kafka-harness-link".into())
            .spawn(move || connect(client, link, upstream));
    }
}

/// Join an accepted client to its broker: once the link lets bytes through (a connection
/// made during a cut waits, carrying nothing), connect upstream and pump both ways.
fn connect(client: TcpStream, link: Arc<Link>, upstream: SocketAddr) {
    if link.wait_open().is_none() {
        return;
    }
    // A broker that is down refuses; so does its proxy (the client's connection closes).
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else {
        return;
    };
    {
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut conns = link.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.peer_addr().is_ok());
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            conns.push(a);
            conns.push(b);
        }
    }
    for (from, to) in [(client, s2), (server, c2)] {
        let link = link.clone();
        let _ = std::thread::Builder::new()
            .name("kafka-harness-pump".into())
            .spawn(move || pump(from, to, &link));
    }
}

/// Copy `from` to `to` while the link lets bytes through; close both ways at the end. A
/// close is news too: during a cut it waits, like the bytes.
fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                link.wait_open();
                break;
            }
            Ok(n) => n,
        };
        let Some(delay) = link.wait_open() else { break };
        if !delay.is_zero() {
            std::thread::sleep(delay);
            // Cut while this chunk waited: it waits for the heal too.
            if link.wait_open().is_none() {
                break;
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on loopback: what it reads, it writes back.
    fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let mut w = s;
                    let _ = std::io::copy(&mut r, &mut w);
                });
            }
        });
        addr
    }

    fn roundtrip(s: &mut TcpStream) -> std::io::Result<Duration> {
        let t = Instant::now();
        s.write_all(b"ping")?;
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        assert_eq!(&b, b"ping");
        Ok(t.elapsed())
    }

    #[test]
    fn a_link_forwards_is_cut_then_healed_and_slows() {
        let proxy = LinkProxy::bind(1).unwrap();
        proxy.start(&[echo()]).unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", proxy.ports()[0])).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        roundtrip(&mut s).unwrap();
        proxy.set(None, LinkState::Cut);
        // Nothing comes back while it is cut, on this connection or a new one.
        assert!(roundtrip(&mut s).is_err());
        let mut fresh = TcpStream::connect(("127.0.0.1", proxy.ports()[0])).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(roundtrip(&mut fresh).is_err());
        // Healed: what was held arrives, and the connection works again.
        proxy.set(Some(0), LinkState::Open);
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        roundtrip(&mut s).unwrap();
        // Slow: each direction waits the delay.
        proxy.set(Some(0), LinkState::Slow(Duration::from_millis(150)));
        assert!(roundtrip(&mut s).unwrap() >= Duration::from_millis(300));
    }
}

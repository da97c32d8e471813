//! MQTT 3.1.1 packets written by hand over a raw TCP socket: what an attacker sends (bad
//! lengths, wildcards in topics, huge strings, resets) is exactly what no client library
//! will produce.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Appends MQTT's variable-length "remaining length".
pub fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    remaining_length(&mut p, body.len());
    p.extend_from_slice(body);
    p
}

/// CONNECT with client id, username and password (clean session).
pub fn connect(client_id: &str, username: &[u8], password: &[u8], keep_alive: u16) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, b"MQTT");
    body.push(4);
    body.push(0b1100_0010);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    string(&mut body, client_id.as_bytes());
    string(&mut body, username);
    string(&mut body, password);
    packet(0x10, &body)
}

/// PUBLISH; `pkid` is written for QoS 1 and 2.
pub fn publish(topic: &[u8], payload: &[u8], qos: u8, pkid: u16, retain: bool) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

/// SUBSCRIBE to one filter.
pub fn subscribe(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut body = pkid.to_be_bytes().to_vec();
    string(&mut body, filter.as_bytes());
    body.push(qos);
    packet(0x82, &body)
}

pub fn pubrel(pkid: u16) -> Vec<u8> {
    packet(0x62, &pkid.to_be_bytes())
}

pub const DISCONNECT: [u8; 2] = [0xe0, 0x00];

/// A packet as read: first byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Packet {
    pub fn kind(&self) -> u8 {
        self.first >> 4
    }
}

/// What reading the next packet gave.
#[derive(Debug)]
pub enum Read_ {
    Packet(Packet),
    /// The server closed the connection (EOF or reset).
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

pub struct Raw {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Raw {
    pub fn open(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Writes `bytes`; false if the server has closed the connection.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Reads the next whole packet, waiting at most `limit`.
    pub fn read(&mut self, limit: Duration) -> Read_ {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(p) = self.take_packet() {
                return Read_::Packet(p);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read_::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Read_::Closed,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Read_::Timeout;
                }
                Err(_) => return Read_::Closed,
            }
        }
    }

    fn take_packet(&mut self) -> Option<Packet> {
        let mut len = 0usize;
        let mut shift = 0;
        let mut i = 1;
        loop {
            let byte = *self.buffer.get(i)?;
            len |= usize::from(byte & 0x7f) << shift;
            i += 1;
            if byte & 0x80 == 0 {
                break;
            }
            shift += 7;
            assert!(shift < 28, "bad remaining length from the server");
        }
        if self.buffer.len() < i + len {
            return None;
        }
        let first = self.buffer[0];
        let body = self.buffer[i..i + len].to_vec();
        self.buffer.drain(..i + len);
        Some(Packet { first, body })
    }

    /// Reads until the server closes the connection (true) or `limit` passes (false),
    /// dropping packets.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.read(left) {
                Read_::Closed => return true,
                Read_::Timeout => return false,
                Read_::Packet(_) => {}
            }
        }
    }

    /// Connects and returns the CONNACK return code, or `None` if the server closed the
    /// connection (or said nothing for 10 s) instead.
    pub fn connect(
        port: u16,
        client_id: &str,
        username: &[u8],
        password: &[u8],
    ) -> (Raw, Option<u8>) {
        let mut raw = Raw::open(port);
        raw.send(&connect(client_id, username, password, 30));
        let code = match raw.read(Duration::from_secs(10)) {
            Read_::Packet(p) if p.kind() == 2 && p.body.len() == 2 => Some(p.body[1]),
            _ => None,
        };
        (raw, code)
    }
}

/// Sends `bytes` and then resets the connection (RST, not FIN): SO_LINGER 0 and close.
pub fn send_and_reset(port: u16, bytes: &[u8]) {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    (&stream).write_all(bytes).unwrap();
    // At once: the server still reads what arrived before the reset, but its answer (a
    // CONNACK, after the authentication lookup) finds the connection gone.
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(stream);
}

//! A deliberately plain SMTP client for tests: it sends exactly the bytes it is given, so
//! tests can also send what a well-behaved client never would (bare LF, pipelined bursts).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// One SMTP connection.
#[derive(Debug)]
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The greeting line(s).
    pub greeting: String,
}

impl SmtpClient {
    /// Connects to 127.0.0.1:`port` and reads the greeting.
    pub fn connect(port: u16) -> SmtpClient {
        Self::connect_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Connects from a chosen loopback source address (e.g. 127.0.0.2, to be outside
    /// mynetworks) to 127.0.0.1:`port`.
    pub fn connect_from(source: Ipv4Addr, port: u16) -> SmtpClient {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
        use std::os::fd::AsRawFd;
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).expect("socket");
        bind(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(source, 0))).expect("bind source");
        connect(fd.as_raw_fd(), &SockaddrIn::from(std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))
            .expect("connect");
        Self::from_stream(TcpStream::from(fd))
    }

    /// Connects to any address (e.g. a suite listening on 127.0.0.2).
    pub fn connect_to(addr: SocketAddr) -> SmtpClient {
        Self::connect_addr(addr)
    }

    fn connect_addr(addr: SocketAddr) -> SmtpClient {
        Self::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    fn from_stream(stream: TcpStream) -> SmtpClient {
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        let mut c = SmtpClient { reader: BufReader::new(stream), writer, greeting: String::new() };
        c.greeting = c.reply();
        c
    }

    /// Reads one complete (possibly multi-line) reply; "" at end of stream.
    pub fn reply(&mut self) -> String {
        let mut out = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return out,
                Ok(_) => {}
            }
            out.push_str(&line);
            // "250-..." continues, "250 ..." ends.
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return out;
            }
        }
    }

    /// Sends raw bytes. A failed write is not a panic: the server may have gone away (tests
    /// kill it on purpose), and the next [`SmtpClient::reply`] then returns "".
    pub fn send(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    /// Sends one command line (CRLF added) and returns the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends a message body after a 354 (dot-stuffing and the final dot added) and returns
    /// the reply to it.
    pub fn body(&mut self, text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with('.') {
                out.push('.');
            }
            out.push_str(line);
            out.push_str("\r\n");
        }
        out.push_str(".\r\n");
        self.send(out.as_bytes());
        self.reply()
    }

    /// A whole transaction; returns the queue ID from `250 2.0.0 Ok: queued as ID`.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Result<String, String> {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with("250") {
            return Err(r);
        }
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            if !r.starts_with("250") {
                return Err(r);
            }
        }
        let r = self.cmd("DATA");
        if !r.starts_with("354") {
            return Err(r);
        }
        let r = self.body(body);
        queued_id(&r).ok_or(r)
    }
}

/// The ID in a `250 2.0.0 Ok: queued as ID` reply.
pub fn queued_id(reply: &str) -> Option<String> {
    reply.trim_end().strip_prefix("250 2.0.0 Ok: queued as ").map(str::to_string)
}

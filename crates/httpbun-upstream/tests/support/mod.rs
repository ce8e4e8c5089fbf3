//! Starts the built binary on a free port and talks raw HTTP/1.1 to it, so framing (chunks,
//! Content-Length, keep-alive) is checked as sent rather than through a client's interpretation.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// A server whose streams do not pause, so tests stay fast.
    pub fn start() -> Server {
        Server::start_with(&[("HTTPBUN_STREAM_DELAY_MS", "0")])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_httpbun-upstream"))
            .args(["--bind", "127.0.0.1:0"])
            .env_remove("HTTPBUN_BIND")
            .env_remove("HTTPBUN_STREAM_DELAY_MS")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start httpbun-upstream");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        Server { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end on its own.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }

    pub fn connect(&self) -> Conn {
        Conn::open(&self.addr)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut conn = self.connect();
        conn.send(method, path, headers, body);
        conn.read_response()
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, &[], b"")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test.local\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let chunked = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        if !chunked && (!body.is_empty() || matches!(method, "POST" | "PUT" | "PATCH")) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).expect("write head");
        if chunked {
            for piece in body.chunks(1000) {
                stream
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .unwrap();
                stream.write_all(piece).unwrap();
                stream.write_all(b"\r\n").unwrap();
            }
            stream.write_all(b"0\r\n\r\n").unwrap();
        } else {
            stream.write_all(body).expect("write body");
        }
        stream.flush().unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        assert!(line.ends_with("\r\n"), "line not CRLF-terminated: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// Status and headers of the next response.
    pub fn read_head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        (status, headers)
    }

    /// One chunk of a chunked body; `None` at the terminating chunk.
    pub fn read_chunk(&mut self) -> Option<Vec<u8>> {
        let size_line = self.line();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
            .expect("chunk size");
        if size == 0 {
            assert_eq!(self.line(), "", "no trailers expected");
            return None;
        }
        let mut data = vec![0; size];
        self.reader.read_exact(&mut data).expect("chunk data");
        assert_eq!(self.line(), "", "chunk not followed by CRLF");
        Some(data)
    }

    pub fn read_response(&mut self) -> Response {
        let (mut status, mut headers) = self.read_head();
        // Interim responses (`100 Continue`) have no body; the real one follows.
        while status < 200 {
            (status, headers) = self.read_head();
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        // RFC 9110: 204 and 304 never carry a body, so they need no framing.
        if matches!(status, 204 | 304) {
            assert!(
                find("Content-Length").is_none_or(|v| v == "0"),
                "{status} announcing a body: {headers:?}"
            );
        } else if find("Transfer-Encoding").is_some_and(|v| v.contains("chunked")) {
            while let Some(chunk) = self.read_chunk() {
                body.extend(chunk);
            }
        } else if let Some(length) = find("Content-Length") {
            let length: usize = length.parse().expect("content-length");
            body.resize(length, 0);
            self.reader.read_exact(&mut body).expect("body");
        } else {
            panic!("response without framing: {headers:?}");
        }
        Response {
            status,
            headers,
            body,
        }
    }
}

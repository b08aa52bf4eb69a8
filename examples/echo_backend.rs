//! A tiny HTTP/1.1 echo server for trying attache by hand (`scripts/run-example`): on each
//! port given, it answers every request with the port, method, path and request headers,
//! so `curl` through Envoy shows which backend a route reached and what Envoy sent it.
//!
//! ```sh
//! cargo run --example echo_backend -- 9001 9002 9003
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

fn main() {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .map(|p| {
            p.parse().unwrap_or_else(|_| {
                eprintln!("echo_backend: not a port: {p:?}");
                std::process::exit(2)
            })
        })
        .collect();
    if ports.is_empty() {
        eprintln!("usage: echo_backend PORT...");
        std::process::exit(2);
    }
    let mut threads = Vec::new();
    for port in ports {
        let listener = match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo_backend: cannot listen on 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        };
        eprintln!("echo_backend: listening on 127.0.0.1:{port}");
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    if let Err(e) = answer(stream, port) {
                        eprintln!("echo_backend: {port}: {e}");
                    }
                });
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Answers requests on one connection until the client closes it.
fn answer(stream: TcpStream, port: u16) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut body = format!("backend 127.0.0.1:{port}\n{}", request_line.trim_end());
        body.push('\n');
        let mut content_length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
            body.push_str(line.trim_end());
            body.push('\n');
        }
        // Discard a request body; this server only echoes the head.
        std::io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut std::io::sink(),
        )?;
        write!(
            writer,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-backend-port: {port}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        writer.flush()?;
    }
}
